// The client and a two-node cluster behind one address (the test's proxy, as a load balancer):
// the node it is on stops with SIGTERM (1012), and it recovers on the other node.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';

import { broadcast, cleanup, client, createApp, next, proxy, startCluster, token } from './support.mjs';

after(cleanup);

test('1012 on SIGTERM: the client reconnects to the other node and recovers there', async () => {
  const {
    redis,
    nodes: [a, b],
  } = await startCluster(['node-a', 'node-b']);
  const app = await createApp(a, { app_id: 'moving' });
  // New connections go to A, then to B.
  const balancer = await proxy([a.addr, b.addr]);
  const rc = client(`ws://${balancer.addr}/ws`, { getToken: () => token(b, app, {}) });
  rc.connect();
  const sub = rc.subscribe('news');
  const seen = [];
  sub.on('event', (e) => seen.push(e.data.i));
  await next(sub, 'subscribed');
  const first = next(sub, 'event', (e) => e.data.i === 9);
  for (let i = 0; i < 10; i++) await broadcast(b, app, 'news', 'n', { i });
  await first;

  const down = next(rc, 'state', (s) => s === 'disconnected');
  const recovered = next(sub, 'recovered');
  const stopping = a.stop('SIGTERM');
  assert.equal((await down)[1].code, 1012);
  // The balancer takes the draining node out before the client's reconnect timer fires.
  balancer.targets = [b.addr];
  // Published on B while the client is between nodes.
  for (let i = 10; i < 30; i++) await broadcast(b, app, 'news', 'n', { i });
  await stopping;
  await recovered;
  const last = next(sub, 'event', (e) => e.data.i === 39);
  for (let i = 30; i < 40; i++) await broadcast(b, app, 'news', 'n', { i });
  await last;
  assert.deepEqual(seen, Array.from({ length: 40 }, (_, i) => i));
  assert.equal(balancer.connections, 2);
  rc.close();
  await b.stop();
  redis.stop();
});
