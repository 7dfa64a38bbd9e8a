// A two-node cluster (one Redis, one shared store) with a pusher-js client on each node: presence,
// triggers through either node, client events and the SDK's socket_id exclusion work across nodes,
// and terminate_connections reaches the user's connection on the other node.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';

import { cleanup, startCluster } from '../../clients/js/test/support.mjs';
import { bound, collect, connected, pusherApp, pusherClient, serverSdk, subscribed } from './support.mjs';

after(cleanup);

test('a Pusher client on each node of a two-node cluster', async () => {
  const {
    nodes: [a, b],
  } = await startCluster(['node-a', 'node-b']);
  const app = await pusherApp(a, { app_id: 'pusher-cluster', client_events: true, rate_limit: 100000 });
  const [sdkA, sdkB] = [serverSdk(a, app), serverSdk(b, app)];
  const onA = await connected(pusherClient(a, app, { user: { user_id: 'ua', user_info: { on: 'a' } } }));
  const onB = await connected(pusherClient(b, app, { user: { user_id: 'ub', user_info: { on: 'b' } } }));

  // Presence over the cluster: each sees the other, whichever joined first.
  const roomA = await subscribed(onA, 'presence-span');
  const added = bound(roomA, 'pusher:member_added');
  const roomB = await subscribed(onB, 'presence-span');
  assert.deepEqual(await added, { id: 'ub', info: { on: 'b' } });
  assert.deepEqual(roomB.members.get('ua'), { id: 'ua', info: { on: 'a' } });
  assert.equal(roomB.members.count, 2);
  const users = await (await sdkB.get({ path: '/channels/presence-span/users' })).json();
  assert.deepEqual(users, { users: [{ id: 'ua' }, { id: 'ub' }] });

  // A trigger through either node reaches both clients.
  for (const [sdk, name] of [[sdkA, 'via-a'], [sdkB, 'via-b']]) {
    const got = [bound(roomA, name), bound(roomB, name)];
    await sdk.trigger('presence-span', name, { name });
    assert.deepEqual(await Promise.all(got), [{ name }, { name }]);
  }

  // A client event from B reaches A with its sender's user id, and not B.
  const echoed = collect(roomB, 'client-wave');
  const waved = new Promise((resolve) => roomA.bind('client-wave', (data, meta) => resolve([data, meta?.user_id])));
  roomB.trigger('client-wave', { hi: 1 });
  assert.deepEqual(await waved, [{ hi: 1 }, 'ub']);

  // The SDK's socket_id, sent to node A, keeps the event from the connection on node B.
  const heardByB = collect(roomB, 'not-you');
  const aGot = bound(roomA, 'not-you');
  await sdkA.trigger('presence-span', 'not-you', {}, { socket_id: onB.connection.socket_id });
  await aGot;
  const marker = bound(roomB, 'marker');
  await sdkA.trigger('presence-span', 'marker', {});
  await marker;
  assert.deepEqual([heardByB, echoed], [[], []], 'B got neither the excluded event nor its own client event');

  // terminate_connections through node A closes the user's connection on node B.
  onB.signin();
  await onB.user.signinDonePromise;
  const error = bound(onB.connection, 'error');
  const removed = bound(roomA, 'pusher:member_removed');
  await sdkA.terminateUserConnections('ub');
  assert.equal((await error).data.code, 4009);
  assert.equal((await removed).id, 'ub');
  assert.equal(onA.connection.state, 'connected');
  onA.disconnect();
});
