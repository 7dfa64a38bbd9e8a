// Pusher-format webhooks: what pusher-js clients do reaches the app as Pusher's batched body,
// signed with the app's key and secret, and Pusher's own SDK validators (Node and Python)
// accept it; a tampered body is refused. Delivered by roomcast's durable, retried pipeline.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createServer } from 'node:http';
import { once } from 'node:events';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, test } from 'node:test';

import { api, cleanup, startHub, within } from '../../clients/js/test/support.mjs';
import { bound, connected, pusherApp, pusherClient, serverSdk, subscribed } from './support.mjs';

after(cleanup);

/** An HTTP receiver on 127.0.0.1 answering `status()`; `next(accept)` resolves with a request. */
async function receiver() {
  const got = [];
  const waiting = [];
  const state = { status: () => 200 };
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      const status = state.status();
      res.writeHead(status).end();
      if (status !== 200) return;
      got.push({ headers: req.headers, rawBody: body });
      waiting.splice(0).forEach((w) => w());
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  after(() => server.close());
  state.url = `http://127.0.0.1:${server.address().port}/pusher`;
  /** Resolves once the deliveries received hold every name in `names`; returns them all. */
  state.until = (names) =>
    within(
      (async () => {
        for (;;) {
          const events = got.flatMap((d) => JSON.parse(d.rawBody).events);
          if (names.every((n) => events.some((e) => e.name === n))) return got;
          await new Promise((r) => waiting.push(r));
        }
      })(),
      `webhook events ${names}`,
    );
  return state;
}

test("Pusher-format webhooks: batched, app-signed, and accepted by Pusher's validators", async () => {
  const hub = await startHub({ env: { ROOMCAST_WEBHOOKS__ALLOW_PRIVATE_TARGETS: 'true' } });
  const app = await pusherApp(hub, { app_id: '100002', client_events: true, rate_limit: 100000 });
  const sdk = serverSdk(hub, app);
  const target = await receiver();
  // The first attempt fails: the delivery is retried, not lost.
  let first = true;
  target.status = () => (first ? ((first = false), 503) : 200);
  const created = await api(hub, 'POST', '/api/webhooks', {
    key: app.api_key,
    body: { url: target.url, events: ['*'], format: 'pusher' },
  });
  assert.equal(created.webhook.format, 'pusher');
  const ann = await connected(pusherClient(hub, app, { user: { user_id: 'ann' } }));
  const bob = await connected(pusherClient(hub, app, { user: { user_id: 'bob' } }));
  const room = await subscribed(ann, 'presence-hooks');
  const bobRoom = await subscribed(bob, 'presence-hooks');
  const heard = bound(room, 'client-ping');
  bobRoom.trigger('client-ping', { n: 1 });
  await heard;
  // A broadcast is not something Pusher sends a webhook for.
  await sdk.trigger('presence-hooks', 'server-side', {});
  bob.disconnect();
  ann.disconnect();
  const deliveries = await target.until(['channel_occupied', 'member_added', 'client_event', 'member_removed', 'channel_vacated']);

  const events = deliveries.flatMap((d) => {
    const hook = sdk.webhook(d);
    assert.equal(hook.isValid(), true, 'the Node SDK accepts it');
    assert.equal(d.headers['x-pusher-key'], app.app_id);
    assert.ok(Math.abs(hook.getTime().getTime() - Date.now()) < 60000);
    return hook.getEvents();
  });
  const names = events.map((e) => e.name);
  assert.ok(!events.some((e) => e.event === 'server-side'), 'no broadcasts');
  assert.deepEqual(events.find((e) => e.name === 'channel_occupied'), { name: 'channel_occupied', channel: 'presence-hooks' });
  const members = events.filter((e) => e.name === 'member_added').map((e) => e.user_id).sort();
  assert.deepEqual(members, ['ann', 'bob']);
  const client = events.find((e) => e.name === 'client_event');
  assert.deepEqual(client, {
    name: 'client_event',
    channel: 'presence-hooks',
    event: 'client-ping',
    data: '{"n":1}',
    socket_id: client.socket_id,
    user_id: 'bob',
  });
  assert.match(client.socket_id, /^\d+\.\d+$/);
  assert.equal(names.filter((n) => n === 'channel_vacated').length, 1);

  // The delivery log shows the failed first attempt and its retry.
  // (The hub records an attempt's outcome after the receiver answered: wait for it.)
  await within(
    (async () => {
      for (;;) {
        const list = await api(hub, 'GET', `/api/webhooks/${created.webhook.id}/deliveries`, { key: app.api_key });
        const retried = list.deliveries.find((d) => d.attempts >= 2 && d.status === 'succeeded');
        if (retried) return assert.equal(retried.attempt_log[0].response_code, 503);
        await new Promise((r) => setTimeout(r, 50));
      }
    })(),
    'the retried delivery in the log',
  );

  // Tampered or signed with another secret: refused by the SDK.
  const [one] = deliveries;
  assert.equal(sdk.webhook({ ...one, rawBody: one.rawBody.replace('presence-hooks', 'presence-other') }).isValid(), false);
  assert.equal(serverSdk(hub, app, 'another-secret').webhook(one).isValid(), false);

  // Pusher's Python SDK validates the same deliveries, and refuses the tampered one.
  const batch = deliveries.map((d) => ({ key: d.headers['x-pusher-key'], signature: d.headers['x-pusher-signature'], body: d.rawBody }));
  batch.push({ ...batch[0], body: batch[0].body.replace('presence-hooks', 'presence-other') });
  const script = join(import.meta.dirname, 'python_webhook.py');
  const run = promisify(execFile)('python3', [script, app.app_id, app.app_secret]);
  run.child.stdin.end(JSON.stringify(batch));
  const results = JSON.parse((await run).stdout);
  assert.deepEqual(results.slice(0, -1), deliveries.map((d) => JSON.parse(d.rawBody).events));
  assert.equal(results.at(-1), null);
});

test('a webhook format other than roomcast or pusher is refused', async () => {
  const hub = await startHub({ env: { ROOMCAST_WEBHOOKS__ALLOW_PRIVATE_TARGETS: 'true' } });
  const app = await pusherApp(hub, { app_id: 'hooks-bad' });
  await assert.rejects(
    api(hub, 'POST', '/api/webhooks', { key: app.api_key, body: { url: 'http://127.0.0.1:9/x', events: ['*'], format: 'slack' } }),
    /400.*format/,
  );
});
