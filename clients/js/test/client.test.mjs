// The client against one real hub: subscribe and receive, presence, client events, errors,
// token refresh, cuts while a publisher publishes, a restart that lost history, 4003, and a
// dead link.
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { after, test } from 'node:test';
import WebSocket from 'ws';

import { api, broadcast, cleanup, client, createApp, freePort, next, proxy, startHub, token, within } from './support.mjs';

after(cleanup);

const hub = await startHub();

test('subscribes, receives in order, publishes, follows presence and leaves', async () => {
  const app = await createApp(hub, { app_id: 'basic', client_events: true });
  const alice = client(hub.ws, { getToken: () => token(hub, app, { user_id: 'alice', user_info: { name: 'A' }, can_publish: true }) });
  const states = [];
  alice.on('state', (s) => states.push(s));
  alice.connect();
  const chat = alice.subscribe('chat');
  assert.equal(alice.subscribe('chat'), chat, 'one subscription per room');
  const events = [];
  chat.on('event', (e) => events.push(e));
  await next(chat, 'subscribed');
  assert.deepEqual(states, ['connecting', 'connected']);

  const fifth = next(chat, 'event', (e) => e.data.i === 4, 'the fifth event');
  for (let i = 0; i < 5; i++) await broadcast(hub, app, 'chat', 'msg', { i });
  await fifth;
  assert.deepEqual(events.map((e) => [e.event, e.data.i, e.offset]), [0, 1, 2, 3, 4].map((i) => ['msg', i, i + 1]));
  assert.ok(events.every((e) => typeof e.timestamp === 'number'));

  // Presence: the list on subscribe, then joins and leaves of other users.
  const lobby = alice.subscribe('presence-lobby');
  await next(lobby, 'subscribed');
  assert.deepEqual(lobby.members(), [{ user_id: 'alice', user_info: { name: 'A' } }]);
  const bob = client(hub.ws, { token: await token(hub, app, { user_id: 'bob', can_publish: true }) });
  bob.connect();
  const bobLobby = bob.subscribe('presence-lobby');
  const bobIn = next(bobLobby, 'subscribed');
  await next(lobby, 'event', (e) => e.event === 'user-joined', 'user-joined');
  assert.deepEqual(lobby.members().map((m) => m.user_id).sort(), ['alice', 'bob']);
  assert.equal(lobby.memberCount, 2);

  // A client event reaches the others with its offset, never its publisher.
  await bobIn;
  const heard = next(lobby, 'event', (e) => e.event === 'typing');
  const own = [];
  bobLobby.on('event', (e) => own.push(e.event));
  const { offset } = await bobLobby.publish('typing', { on: true });
  const [typing] = await heard;
  assert.deepEqual([typing.offset, typing.data], [offset, { on: true }]);

  bobLobby.unsubscribe();
  await next(lobby, 'event', (e) => e.event === 'user-left', 'user-left');
  assert.deepEqual(lobby.members().map((m) => m.user_id), ['alice']);
  assert.equal(lobby.memberCount, 1);
  assert.deepEqual(own, [], 'bob never heard its own event');
  await assert.rejects(bobLobby.publish('typing'), { code: 'not_subscribed' });
  bob.close();
  alice.close();
  assert.equal(alice.state, 'closed');
});

test('errors from the hub reach the subscription with their code', async () => {
  const app = await createApp(hub, { app_id: 'errors' });
  const rc = client(hub.ws, { token: await token(hub, app, { rooms: ['open-*'] }) });
  rc.connect();
  const closed = rc.subscribe('secret');
  const [refused] = await next(closed, 'error');
  assert.equal(refused.code, 'room_forbidden');
  assert.equal(closed.state, 'subscribing');
  const open = rc.subscribe('open-1');
  await next(open, 'subscribed');
  // Client events are off for this app: the promise and the subscription both hear it.
  const heard = next(open, 'error');
  await assert.rejects(open.publish('typing', {}), { code: 'client_events_disabled' });
  assert.equal((await heard)[0].code, 'client_events_disabled');
  rc.close();
});

test('a URL no WebSocket can open is an error and a retry, never a crash', async () => {
  const rc = client('not a url', { token: 't' });
  const [[err]] = await Promise.all([next(rc, 'error'), rc.connect()]);
  assert.equal(err.code, 'connect_failed');
  await next(rc, 'state', (s) => s === 'connecting', 'a retry');
  rc.close();
  assert.equal(rc.state, 'closed');
});

test('getToken runs on every connection: a fresh token replaces one that expired', async () => {
  const app = await createApp(hub, { app_id: 'refresh' });
  const relay = await proxy([hub.addr]);
  // The first token expires a second after it is used (the hub allows 30 s of leeway).
  const now = Math.floor(Date.now() / 1000);
  const stale = jwt(app, { user_id: 'u', iat: now - 60, exp: now - 29 });
  const tokens = [stale];
  const rc = client(`ws://${relay.addr}/ws`, {
    getToken: async () => tokens.shift() ?? token(hub, app, { user_id: 'u' }),
  });
  rc.connect();
  const sub = rc.subscribe('r');
  await next(sub, 'subscribed');
  // An event the room keeps (a room with nobody in it and nothing kept is forgotten, and a
  // client back in it would get gap with epoch_changed).
  const first = next(sub, 'event');
  await broadcast(hub, app, 'r', 'before', {});
  await first;
  await waitUntil(async () => (await refused(hub, stale)) === 401, 'the first token to expire');
  relay.cut();
  await next(sub, 'recovered');
  assert.equal(rc.state, 'connected');
  assert.equal(relay.connections, 2);
  const after = next(sub, 'event', (e) => e.event === 'after');
  await broadcast(hub, app, 'r', 'after', {});
  await after;
  rc.close();
});

test('getToken may return one-time tickets: each connection buys a new one', async () => {
  const app = await createApp(hub, { app_id: 'tickets' });
  const relay = await proxy([hub.addr]);
  const bought = [];
  const rc = client(`ws://${relay.addr}/ws`, {
    getToken: async () => {
      const { ticket } = await api(hub, 'POST', '/api/tickets', { key: app.api_key, body: { user_id: 'tu' } });
      bought.push(ticket);
      return ticket;
    },
  });
  rc.connect();
  const sub = rc.subscribe('presence-t');
  await next(sub, 'subscribed');
  assert.deepEqual(sub.members().map((m) => m.user_id), ['tu'], 'the ticket carried the user');
  relay.cut();
  await next(sub, 'subscribed');
  assert.equal(bought.length, 2);
  assert.ok(bought.every((t) => t.startsWith('tk_')) && bought[0] !== bought[1]);
  // A used ticket is refused, so the client could not have reused the first one.
  assert.equal(await refused(hub, bought[0], 'ticket'), 401);
  rc.close();
});

test('4029 (the client kept sending over its limit) backs off longer than other closes', async () => {
  const strict = await startHub({
    env: {
      ROOMCAST_LIMITS__CLIENT_MESSAGES_PER_SECOND: '1',
      ROOMCAST_LIMITS__CLIENT_MESSAGES_BURST: '1',
      ROOMCAST_LIMITS__CLIENT_ABUSE_CLOSE_AFTER: '3',
    },
  });
  const app = await createApp(strict, { app_id: 'abuse', client_events: true });
  const rc = client(strict.ws, { getToken: () => token(strict, app, { can_publish: true }), minDelayMs: 50, maxDelayMs: 1000 });
  rc.connect();
  const sub = rc.subscribe('r');
  await next(sub, 'subscribed');
  const closed = next(rc, 'state', (s) => s === 'disconnected');
  const again = next(rc, 'state', (s) => s === 'connecting');
  for (let i = 0; i < 6; i++) sub.publish('spam', { i }).catch(() => {});
  const [, info] = await closed;
  const at = Date.now();
  assert.equal(info.code, 4029);
  await again;
  const waited = Date.now() - at;
  // Half of maxDelayMs at least; any other close would wait at most minDelayMs × 2ⁿ here.
  assert.ok(waited >= 500 - 5 && waited <= 1000 + 100, `waited ${waited} ms`);
  await next(sub, 'subscribed');
  rc.close();
  await strict.stop();
});

test('cut at random moments while 2,000 events are published: all arrive once, in order', async () => {
  const app = await createApp(hub, { app_id: 'cuts', history: { size: 2000, ttl_s: 300 }, rate_limit: 100000 });
  const relay = await proxy([hub.addr]);
  const rc = client(`ws://${relay.addr}/ws`, { getToken: () => token(hub, app, {}) });
  rc.connect();
  const sub = rc.subscribe('feed');
  const seen = [];
  let recovered = 0;
  let gaps = 0;
  sub.on('event', (e) => seen.push(e.data.i));
  sub.on('recovered', () => recovered++);
  sub.on('gap', () => gaps++);
  await next(sub, 'subscribed');

  const total = 2000;
  let published = 0;
  const publisher = (async () => {
    for (; published < total; published++) await broadcast(hub, app, 'feed', 'n', { i: published });
  })();
  // A cut every 50–250 ms, each once the client has recovered from the one before.
  let cuts = 0;
  while (published < total) {
    await new Promise((r) => setTimeout(r, 50 + Math.random() * 200));
    if (published >= total) break;
    relay.cut();
    cuts++;
    await next(sub, 'recovered', () => true, `recovery from cut ${cuts}`);
  }
  await publisher;
  await waitUntil(() => seen.length >= total, 'every event');
  assert.equal(gaps, 0);
  assert.ok(cuts >= 5, `only ${cuts} cuts`);
  assert.equal(recovered, cuts, 'each cut was followed by recovered');
  assert.deepEqual(seen, Array.from({ length: total }, (_, i) => i));
  rc.close();
});

test('a restart that lost history gives gap with epoch_changed, and the subscription goes on', async () => {
  const port = await freePort();
  const first = await startHub({ port });
  const app = await createApp(first, { app_id: 'restart' });
  const rc = client(first.ws, { getToken: () => token(first, app, {}) });
  rc.connect();
  const sub = rc.subscribe('room');
  await next(sub, 'subscribed');
  const before = next(sub, 'event');
  await broadcast(first, app, 'room', 'before', {});
  await before;
  const down = next(rc, 'state', (s) => s === 'disconnected');
  await first.stop('SIGTERM');
  assert.equal((await down)[1].code, 1012);

  const gap = next(sub, 'gap');
  const second = await startHub({ port, dir: first.dir });
  const [reason] = await gap;
  assert.equal(reason, 'epoch_changed');
  const heard = next(sub, 'event');
  await broadcast(second, app, 'room', 'after', { n: 1 });
  const [after] = await heard;
  assert.deepEqual([after.event, after.data], ['after', { n: 1 }]);
  rc.close();
  await second.stop();
});

test('4003 when the app is disabled: closed, and no attempt to reconnect', async () => {
  const app = await createApp(hub, { app_id: 'disabled' });
  let asked = 0;
  const rc = client(hub.ws, { getToken: () => (asked++, token(hub, app, {})) });
  rc.connect();
  await next(rc.subscribe('r'), 'subscribed');
  const closed = next(rc, 'state', (s) => s === 'closed');
  await api(hub, 'PUT', '/api/applications/disabled', { admin: true, body: { status: false } });
  const [, info] = await closed;
  assert.equal(info.code, 4003);
  // A reconnect would start within minDelayMs (50 ms); give it ten times that.
  await new Promise((r) => setTimeout(r, 500));
  assert.equal(asked, 1);
  assert.equal(rc.state, 'closed');
});

test('a dead link (nothing forwarded, nothing closed) is left within 2 × heartbeat_s', async () => {
  const quick = await startHub({ env: { ROOMCAST_WEBSOCKET__HEARTBEAT_S: '1' } });
  const app = await createApp(quick, { app_id: 'dead' });
  const relay = await proxy([quick.addr]);
  const rc = client(`ws://${relay.addr}/ws`, { getToken: () => token(quick, app, {}) });
  rc.connect();
  const sub = rc.subscribe('r');
  await next(sub, 'subscribed');
  // A live idle link stays up past two heartbeats: the client's pings are answered.
  await new Promise((r) => setTimeout(r, 2500));
  assert.equal(relay.connections, 1);
  relay.stall();
  const stalled = Date.now();
  const [, info] = await next(rc, 'state', (s) => s === 'disconnected');
  const took = Date.now() - stalled;
  assert.equal(info.code, 4000);
  assert.ok(took <= 2000 + 100, `left after ${took} ms`);
  await next(sub, 'recovered');
  const alive = next(sub, 'event', (e) => e.event === 'alive');
  await broadcast(quick, app, 'r', 'alive', {});
  await alive;
  rc.close();
  await quick.stop();
});

/** An HS256 client token for `app` with exactly `claims` (and its app_id). */
function jwt(app, claims) {
  const part = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const body = `${part({ alg: 'HS256', typ: 'JWT' })}.${part({ app_id: app.app_id, ...claims })}`;
  return `${body}.${createHmac('sha256', app.app_secret).update(body).digest('base64url')}`;
}

/** The HTTP status the hub answers an upgrade with `credential` (a `kind`), or 101. */
function refused(target, credential, kind = 'token') {
  return new Promise((resolve) => {
    const ws = new WebSocket(`${target.ws}?${kind}=${credential}`);
    ws.on('open', () => resolve(101) || ws.close());
    ws.on('unexpected-response', (_, res) => resolve(res.statusCode));
    ws.on('error', () => {});
  });
}

/** Waits until `check()` holds, looking every 20 ms. */
async function waitUntil(check, what) {
  await within(
    (async () => {
      while (!(await check())) await new Promise((r) => setTimeout(r, 20));
    })(),
    what,
  );
}
