// k6 load test for roomcast: LT_CONNECTIONS WebSocket subscribers in LT_ROOMS rooms, and an HTTP
// publisher broadcasting LT_RATE events per second for LT_DURATION seconds. Each event carries its
// send time; subscribers record publish->deliver latency, with thresholds on it.
//
//   k6 run --no-usage-report -e LT_ADMIN_KEY=rc_admin_… loadtest/k6/fanout.js
//
// Reads the same variables as the Rust generator: LT_URL (http://127.0.0.1:8080), LT_ADMIN_KEY
// (creates an app) or LT_APP_ID + LT_APP_SECRET + LT_APP_KEY, LT_CONNECTIONS (100), LT_ROOMS (1),
// LT_RATE (10), LT_DURATION (20), LT_PAYLOAD_BYTES (64). LT_P99_MS (100) sets the threshold.
import http from 'k6/http';
import ws from 'k6/ws';
import { check } from 'k6';
import { Counter, Trend } from 'k6/metrics';

const URL = __ENV.LT_URL || 'http://127.0.0.1:8080';
const CONNECTIONS = parseInt(__ENV.LT_CONNECTIONS || '100');
const ROOMS = parseInt(__ENV.LT_ROOMS || '1');
const RATE = parseInt(__ENV.LT_RATE || '10');
const DURATION = parseInt(__ENV.LT_DURATION || '20');
const PAD = 'x'.repeat(parseInt(__ENV.LT_PAYLOAD_BYTES || '64'));
const WARMUP = 5; // seconds for subscribers to connect before publishing starts

if (!URL.startsWith('http://127.') && !URL.startsWith('http://localhost')) {
  throw new Error('LT_URL must be a loopback address');
}

const latency = new Trend('delivery_latency', true);
const delivered = new Counter('events_delivered');
const published = new Counter('events_published');

export const options = {
  scenarios: {
    subscribers: {
      executor: 'per-vu-iterations',
      exec: 'subscriber',
      vus: CONNECTIONS,
      iterations: 1,
      maxDuration: `${WARMUP + DURATION + 30}s`,
    },
    publisher: {
      executor: 'constant-arrival-rate',
      exec: 'publisher',
      rate: RATE,
      timeUnit: '1s',
      duration: `${DURATION}s`,
      startTime: `${WARMUP}s`,
      preAllocatedVUs: 4,
      maxVUs: 32,
    },
  },
  thresholds: {
    delivery_latency: [`p(99)<${__ENV.LT_P99_MS || '100'}`],
    checks: ['rate>0.99'],
    'http_req_failed{scenario:publisher}': ['rate<0.01'],
  },
};

export function setup() {
  let app = { id: __ENV.LT_APP_ID, secret: __ENV.LT_APP_SECRET, key: __ENV.LT_APP_KEY };
  if (__ENV.LT_ADMIN_KEY) {
    const id = `k6-${Date.now()}`;
    const res = http.post(`${URL}/api/applications`,
      JSON.stringify({ app_id: id, max_connections: CONNECTIONS + 1000, rate_limit: 1000000 }),
      { headers: { 'Content-Type': 'application/json', 'X-ADMIN-API-KEY': __ENV.LT_ADMIN_KEY } });
    if (res.status !== 201) throw new Error(`creating the app: ${res.status} ${res.body}`);
    app = { id, secret: res.json('app_secret'), key: res.json('api_key') };
  }
  const res = http.post(`${URL}/api/token`,
    JSON.stringify({ app_id: app.id, app_secret: app.secret, payload: { user_id: 'k6' } }),
    { headers: { 'Content-Type': 'application/json' } });
  if (res.status !== 200) throw new Error(`minting a token: ${res.status} ${res.body}`);
  return { key: app.key, token: res.json('token') };
}

export function subscriber(data) {
  const room = `k6-room-${(__VU - 1) % ROOMS}`;
  const wsUrl = `${URL.replace('http://', 'ws://')}/ws?token=${data.token}`;
  const res = ws.connect(wsUrl, {}, (socket) => {
    socket.on('open', () => socket.send(JSON.stringify({ type: 'subscribe', room, id: 1 })));
    socket.on('message', (text) => {
      const frame = JSON.parse(text);
      if (frame.type === 'subscribed') check(frame, { subscribed: (f) => f.room === room });
      if (frame.type === 'event' && frame.data && frame.data.t) {
        latency.add(Date.now() - frame.data.t / 1000);
        delivered.add(1);
      }
    });
    socket.setTimeout(() => socket.close(), (WARMUP + DURATION + 3) * 1000);
  });
  check(res, { 'upgraded (101)': (r) => r && r.status === 101 });
}

let sequence = 0;
export function publisher(data) {
  sequence += 1;
  const room = `k6-room-${sequence % ROOMS}`;
  const body = JSON.stringify({
    room, event: 'lt', data: { p: __VU, s: sequence, t: Date.now() * 1000, pad: PAD },
  });
  const res = http.post(`${URL}/api/broadcast`, body,
    { headers: { 'Content-Type': 'application/json', 'X-APP-API-KEY': data.key } });
  check(res, { 'broadcast accepted': (r) => r.status === 200 });
  published.add(1);
}
