// What operators load: deploy/prometheus/alerts.yml and deploy/grafana/roomcast.json, checked
// by promtool and against the metrics a real hub (in cluster mode, on a real redis-server)
// exports, so a renamed or new metric cannot drift away from them unnoticed.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';

import { cleanup, client, createApp, next, startHub, startRedis, token } from '../../clients/js/test/support.mjs';

const ROOT = join(import.meta.dirname, '../..');
const ALERTS = join(ROOT, 'deploy/prometheus/alerts.yml');
const GRAFANA = join(ROOT, 'deploy/grafana/roomcast.json');

after(cleanup);

/** promtool's verdict on a rules file: its output, or a thrown error with it. */
function checkRules(path) {
  return execFileSync('promtool', ['check', 'rules', path], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** The metric families a name in PromQL may refer to (histogram series to their family). */
function families(text) {
  return new Set([...text.matchAll(/\broomcast_[a-z_]+/g)].map(([m]) => m.replace(/_(bucket|count|sum)$/, '')));
}

test('the alert rules pass promtool check rules', () => {
  const out = checkRules(ALERTS);
  assert.match(out, /SUCCESS: \d+ rules found/);
  const text = readFileSync(ALERTS, 'utf8');
  for (const alert of ['RoomcastNodeDown', 'RoomcastRedisDown', 'RoomcastMessagesDropped', 'RoomcastWebhookFailures', 'RoomcastFanoutSlow', 'RoomcastHttpSlow']) {
    assert.match(text, new RegExp(`alert: ${alert}\\b`), alert);
  }
});

test('promtool refuses a broken rule (the check is real)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'roomcast-rules-'));
  const bad = join(dir, 'bad.yml');
  writeFileSync(bad, 'groups:\n  - name: x\n    rules:\n      - alert: Broken\n        expr: rate(roomcast_rooms[5m]\n');
  assert.throws(() => checkRules(bad));
});

test('every Grafana query is valid PromQL, and every panel has a place', () => {
  const dash = JSON.parse(readFileSync(GRAFANA, 'utf8'));
  const panels = dash.panels.filter((p) => p.type !== 'row');
  const ids = dash.panels.map((p) => p.id);
  assert.equal(new Set(ids).size, ids.length, 'panel ids are unique');
  const exprs = panels.flatMap((p) => p.targets.map((t) => t.expr));
  assert.ok(exprs.length >= 20);
  for (const p of panels) assert.ok(p.gridPos.w > 0 && p.gridPos.h > 0 && p.datasource.uid === '${datasource}', p.title);
  // promtool parses each query as a recording rule, with Grafana's variables filled in.
  const dir = mkdtempSync(join(tmpdir(), 'roomcast-grafana-'));
  const rules = exprs.map((e, i) => `      - record: grafana_query_${i}\n        expr: ${JSON.stringify(e.replaceAll('$__rate_interval', '5m').replaceAll('$instance', '.*'))}\n`);
  writeFileSync(join(dir, 'queries.yml'), `groups:\n  - name: grafana\n    rules:\n${rules.join('')}`);
  assert.match(checkRules(join(dir, 'queries.yml')), new RegExp(`SUCCESS: ${exprs.length} rules found`));
});

test('the dashboard covers every roomcast_ metric the hub exports, and names no other', async () => {
  const redis = await startRedis();
  const hub = await startHub({ env: { ROOMCAST_CLUSTER__REDIS_URL: redis.url, ROOMCAST_CLUSTER__NODE_ID: 'ops-1' } });
  // Some families appear with their first sample: an API call, a connection.
  const app = await createApp(hub, { app_id: 'ops' });
  const rc = client(hub.ws, { getToken: () => token(hub, app, { user_id: 'op' }) });
  rc.connect();
  await next(rc.subscribe('watch'), 'subscribed');
  const text = await (await fetch(`${hub.http}/metrics`)).text();
  const exported = new Set([...text.matchAll(/^# TYPE (roomcast_[a-z_]+) /gm)].map(([, m]) => m));
  assert.ok(exported.has('roomcast_redis_up'), 'cluster mode exports the Redis link');
  assert.match(text, /^roomcast_redis_up 1$/m);
  const dashboard = families(readFileSync(GRAFANA, 'utf8'));
  const alerts = families(readFileSync(ALERTS, 'utf8'));
  const missing = [...exported].filter((m) => !dashboard.has(m));
  assert.deepEqual(missing, [], 'exported metrics without a panel');
  const unknown = [...dashboard, ...alerts].filter((m) => !exported.has(m));
  assert.deepEqual(unknown, [], 'metrics the hub does not export');
  // Redis going away shows in the metric the RedisDown alert reads.
  rc.close();
  redis.stop();
  let down = false;
  for (let i = 0; i < 100 && !down; i++) {
    down = /^roomcast_redis_up 0$/m.test(await (await fetch(`${hub.http}/metrics`)).text());
    if (!down) await new Promise((r) => setTimeout(r, 100));
  }
  assert.ok(down, 'roomcast_redis_up falls to 0 without Redis');
  await hub.stop('SIGKILL');
});
