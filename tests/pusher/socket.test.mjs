// pusher-js (its Node build), Laravel Echo and the `pusher` server SDK against roomcast's Pusher
// WebSocket `/app/{key}` (protocol 7): the libraries are used as an app uses them, unchanged.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import Echo from 'laravel-echo';
import PusherJs from 'pusher-js';
import WebSocket from 'ws';

import { api, broadcast, cleanup, client, createApp, next, startHub, token, within } from '../../clients/js/test/support.mjs';
import { bound, collect, connected, pusherApp, pusherClient, serverSdk, socketOptions, subscribed } from './support.mjs';

after(cleanup);

const hub = await startHub();
const app = await pusherApp(hub, { app_id: 'pusher-ws', client_events: true, rate_limit: 100000 });
const sdk = serverSdk(hub, app);

/** Subscribers of `channel` over the hub, through the Pusher API. */
async function subscriptions(channel) {
  const res = await sdk.get({ path: `/channels/${channel}`, params: { info: 'subscription_count' } });
  return (await res.json()).subscription_count ?? 0;
}

/** Waits until `channel` has `n` subscribers (a closed socket leaves its rooms on its own time). */
async function untilSubscriptions(channel, n) {
  await within(
    (async () => {
      while ((await subscriptions(channel)) !== n) await new Promise((r) => setTimeout(r, 20));
    })(),
    `${n} subscribers in ${channel}`,
  );
}

test('connects with a Pusher socket id; triggers reach one channel and several, data as sent', async () => {
  const p = await connected(pusherClient(hub, app));
  assert.match(p.connection.socket_id, /^\d+\.\d+$/);
  const [news, sport] = [await subscribed(p, 'news'), await subscribed(p, 'sport')];
  const one = bound(news, 'solo');
  await sdk.trigger('news', 'solo', { text: 'hi', n: 1 });
  assert.deepEqual(await one, { text: 'hi', n: 1 });
  const both = [bound(news, 'wide'), bound(sport, 'wide')];
  await sdk.trigger(['news', 'sport'], 'wide', 'plain text');
  assert.deepEqual(await Promise.all(both), ['plain text', 'plain text']);
  // The native API's broadcast reaches the Pusher client too.
  const native = bound(news, 'from-native');
  await broadcast(hub, app, 'news', 'from-native', { list: [1, 2] });
  assert.deepEqual(await native, { list: [1, 2] });
  p.disconnect();
});

test("the SDK's socket_id keeps the event from that connection", async () => {
  const a = await connected(pusherClient(hub, app));
  const b = await connected(pusherClient(hub, app));
  const [ca, cb] = [await subscribed(a, 'excl'), await subscribed(b, 'excl')];
  const heardByA = collect(ca, 'first');
  const bGot = bound(cb, 'first');
  await sdk.trigger('excl', 'first', {}, { socket_id: a.connection.socket_id });
  await bGot;
  const aMarker = bound(ca, 'marker');
  await sdk.trigger('excl', 'marker', {});
  await aMarker;
  assert.deepEqual(heardByA, [], 'the excluded socket got nothing before the next event');
  a.disconnect();
  b.disconnect();
});

test("private channels: the app's authorization is accepted, a wrong signature refused", async () => {
  const p = await connected(pusherClient(hub, app));
  const channel = await subscribed(p, 'private-orders');
  const got = bound(channel, 'paid');
  await sdk.trigger('private-orders', 'paid', { id: 7 });
  assert.deepEqual(await got, { id: 7 });
  const forger = await connected(pusherClient(hub, app, { secret: 'not-the-secret' }));
  const refused = forger.subscribe('private-orders');
  const error = await bound(refused, 'pusher:subscription_error');
  assert.equal(error.status, 401);
  assert.equal(refused.subscribed, false);
  assert.equal(await subscriptions('private-orders'), 1, 'only the authorized one is in');
  // Encrypted channels are relayed as they are: the hub never reads them, pusher-js decrypts.
  const vault = await subscribed(p, 'private-encrypted-vault');
  const opened = bound(vault, 'sealed');
  await sdk.trigger('private-encrypted-vault', 'sealed', { pin: 1234 });
  assert.deepEqual(await opened, { pin: 1234 });
  p.disconnect();
  forger.disconnect();
});

test('client events reach the others, are never echoed, and are refused where Pusher refuses them', async () => {
  const a = await connected(pusherClient(hub, app));
  const b = await connected(pusherClient(hub, app));
  const [ca, cb] = [await subscribed(a, 'private-chat'), await subscribed(b, 'private-chat')];
  const echoed = collect(ca, 'client-typing');
  const got = bound(cb, 'client-typing');
  assert.equal(ca.trigger('client-typing', { who: 'a' }), true);
  assert.deepEqual(await got, { who: 'a' });
  const marker = bound(ca, 'marker');
  await sdk.trigger('private-chat', 'marker', {});
  await marker;
  assert.deepEqual(echoed, [], 'the sender does not get its own client event');
  // On a public channel, or from an app without client events: a pusher:error, nothing sent.
  const pub = await subscribed(a, 'public-chat');
  const error = bound(a.connection, 'error');
  pub.trigger('client-nope', {});
  assert.match((await error).data.message, /private and presence/);
  const quiet = await pusherApp(hub, { app_id: 'pusher-quiet' });
  const q = await connected(pusherClient(hub, quiet));
  const qc = await subscribed(q, 'private-room');
  const disabled = bound(q.connection, 'error');
  qc.trigger('client-nope', {});
  assert.match((await disabled).data.message, /not enabled/);
  for (const c of [a, b, q]) c.disconnect();
});

test('presence: members with their info, added and removed per user, users over HTTP', async () => {
  const ann = await connected(pusherClient(hub, app, { user: { user_id: 'ann', user_info: { name: 'Ann' } } }));
  const room = await subscribed(ann, 'presence-team');
  assert.equal(room.members.count, 1);
  assert.deepEqual(room.members.me, { id: 'ann', info: { name: 'Ann' } });
  const bob = { user: { user_id: 42, user_info: { name: 'Bob' } } };
  const added = bound(room, 'pusher:member_added');
  const bob1 = await connected(pusherClient(hub, app, bob));
  const bobRoom = await subscribed(bob1, 'presence-team');
  assert.deepEqual(await added, { id: '42', info: { name: 'Bob' } });
  assert.equal(bobRoom.members.count, 2);
  assert.deepEqual(bobRoom.members.get('ann'), { id: 'ann', info: { name: 'Ann' } });
  const users = await (await sdk.get({ path: '/channels/presence-team/users' })).json();
  assert.deepEqual(users, { users: [{ id: '42' }, { id: 'ann' }] });
  // A second connection of Bob is no new member, and its leaving removes no one.
  const changes = [];
  room.bind('pusher:member_added', (m) => changes.push(['added', m.id]));
  room.bind('pusher:member_removed', (m) => changes.push(['removed', m.id]));
  const bob2 = await connected(pusherClient(hub, app, bob));
  await subscribed(bob2, 'presence-team');
  bob2.disconnect();
  await untilSubscriptions('presence-team', 2);
  const marker = bound(room, 'marker');
  await sdk.trigger('presence-team', 'marker', {});
  await marker;
  assert.deepEqual(changes, [], 'one user, however many connections');
  assert.equal(room.members.count, 2);
  const removed = bound(room, 'pusher:member_removed');
  bob1.disconnect();
  assert.equal((await removed).id, '42');
  assert.equal(room.members.count, 1);
  ann.disconnect();
});

test("sign-in, then terminate_connections closes the user's connections for good", async () => {
  const user = { user_id: 'carol', user_info: { name: 'Carol' } };
  const carol = await connected(pusherClient(hub, app, { user }));
  const other = await connected(pusherClient(hub, app, { user: { user_id: 'dave' } }));
  carol.signin();
  await within(carol.user.signinDonePromise, 'sign-in');
  assert.equal(carol.user.user_data.id, 'carol');
  other.signin();
  await within(other.user.signinDonePromise, 'sign-in');
  const error = bound(carol.connection, 'error');
  const gone = bound(carol.connection, 'state_change', (s) => s.current === 'disconnected');
  await sdk.terminateUserConnections('carol');
  assert.equal((await error).data.code, 4009);
  await gone;
  assert.equal(other.connection.state, 'connected', "another user's connection stays");
  // A forged sign-in is refused with 4009 and signs nobody in.
  const forger = await connected(pusherClient(hub, app, { user, secret: 'not-the-secret' }));
  const refused = bound(forger.connection, 'error');
  forger.signin();
  assert.equal((await refused).data.code, 4009);
  assert.equal(carol.connection.state, 'disconnected', 'pusher-js does not reconnect after 4009');
  other.disconnect();
  forger.disconnect();
});

test('Laravel Echo listens, whispers on private channels and joins presence channels', async () => {
  const echo = (user) =>
    new Echo({
      broadcaster: 'pusher',
      key: app.app_id,
      Pusher: PusherJs,
      ...socketOptions(hub),
      channelAuthorization: {
        customHandler: ({ socketId, channelName }, callback) =>
          callback(null, sdk.authorizeChannel(socketId, channelName, channelName.startsWith('presence-') ? user : undefined)),
      },
    });
  const one = echo({ user_id: 'e1', user_info: { name: 'One' } });
  const two = echo({ user_id: 'e2', user_info: { name: 'Two' } });
  const shipped = new Promise((resolve) => one.channel('orders').listen('OrderShipped', resolve));
  await bound(one.connector.pusher.channel('orders'), 'pusher:subscription_succeeded');
  // Laravel's broadcaster names events by their class.
  await sdk.trigger('orders', 'App\\Events\\OrderShipped', { order: { id: 12 } });
  assert.deepEqual(await within(shipped, 'OrderShipped'), { order: { id: 12 } });
  const whispered = new Promise((resolve) => two.private('chat').listenForWhisper('typing', resolve));
  await bound(two.connector.pusher.channel('private-chat'), 'pusher:subscription_succeeded');
  const mine = one.private('chat');
  await bound(one.connector.pusher.channel('private-chat'), 'pusher:subscription_succeeded');
  mine.whisper('typing', { name: 'One' });
  assert.deepEqual(await within(whispered, 'whisper'), { name: 'One' });
  const here = new Promise((resolve) => one.join('lobby').here(resolve));
  assert.deepEqual(await within(here, 'here'), [{ name: 'One' }]);
  const joining = new Promise((resolve) => one.join('lobby').joining(resolve));
  two.join('lobby');
  assert.deepEqual(await within(joining, 'joining'), { name: 'Two' });
  const leaving = new Promise((resolve) => one.join('lobby').leaving(resolve));
  two.leave('lobby');
  assert.deepEqual(await within(leaving, 'leaving'), { name: 'Two' });
  one.disconnect();
  two.disconnect();
});

test('native and Pusher clients in one room: the same events, presence and offsets, both ways', async () => {
  const rc = client(hub.ws, { getToken: () => token(hub, app, { user_id: 'native-nick', user_info: { name: 'Nick' }, rooms: ['presence-mixed'], can_publish: true }) });
  rc.connect();
  const native = rc.subscribe('presence-mixed');
  await next(native, 'subscribed');
  const p = await connected(pusherClient(hub, app, { user: { user_id: 'pusher-pat', user_info: { name: 'Pat' } } }));
  const joined = next(native, 'event', (e) => e.event === 'user-joined');
  const channel = await subscribed(p, 'presence-mixed');
  assert.deepEqual((await joined)[0].data, { user_id: 'pusher-pat', user_info: { name: 'Pat' } });
  assert.deepEqual(channel.members.get('native-nick'), { id: 'native-nick', info: { name: 'Nick' } });
  // A broadcast over the Pusher API, and one over the native API: both reach both.
  const nativeGot = next(native, 'event', (e) => e.event === 'via-pusher');
  const pusherGot = bound(channel, 'via-pusher');
  await sdk.trigger('presence-mixed', 'via-pusher', { n: 1 });
  assert.deepEqual([(await nativeGot)[0].data, await pusherGot], [{ n: 1 }, { n: 1 }]);
  const nativeGot2 = next(native, 'event', (e) => e.event === 'via-native');
  const pusherGot2 = bound(channel, 'via-native');
  await broadcast(hub, app, 'presence-mixed', 'via-native', { n: 2 });
  assert.deepEqual([(await nativeGot2)[0].data, await pusherGot2], [{ n: 2 }, { n: 2 }]);
  // Client events both ways.
  const fromPusher = next(native, 'event', (e) => e.event === 'client-hello');
  channel.trigger('client-hello', { from: 'pat' });
  assert.deepEqual((await fromPusher)[0].data, { from: 'pat' });
  const fromNative = bound(channel, 'client-back');
  await native.publish('client-back', { from: 'nick' });
  assert.deepEqual(await fromNative, { from: 'nick' });
  // One stream: every event above holds its place in the room's history.
  const history = await api(hub, 'GET', `/api/rooms/presence-mixed/history?since=0`, { key: app.api_key });
  const names = history.events.map((e) => e.event);
  for (const name of ['via-pusher', 'via-native', 'client-hello', 'client-back']) assert.ok(names.includes(name), name);
  const offsets = history.events.map((e) => e.offset);
  assert.deepEqual(offsets, [...offsets].sort((x, y) => x - y));
  // A Pusher member leaving is a native leave.
  const left = next(native, 'event', (e) => e.event === 'user-left');
  p.disconnect();
  assert.equal((await left)[0].data.user_id, 'pusher-pat');
  rc.close();
});

test('refusals say why in Pusher codes: unknown app, disabled app, over quota, Origin, protocol', async () => {
  // pusher-js reports a refusal during its handshake wrapped in a WebSocketError.
  const codeOf = (e) => e.data?.code ?? e.error?.data?.code;
  const refusal = async (key) => {
    const p = new PusherJs(key, socketOptions(hub));
    const error = await bound(p.connection, 'error', (e) => codeOf(e) !== undefined);
    p.disconnect();
    return codeOf(error);
  };
  assert.equal(await refusal('no-such-app'), 4001);
  // An app takes Pusher clients only once it says so: their public channels need no credential.
  const native = await createApp(hub, { app_id: 'native-only' });
  assert.equal(native.pusher_clients, false);
  assert.equal(await refusal(native.app_id), 4009);
  await api(hub, 'PUT', '/api/applications/native-only', { admin: true, body: { pusher_clients: true } });
  (await connected(pusherClient(hub, native))).disconnect();
  const full = await pusherApp(hub, { app_id: 'pusher-full', max_connections: 1 });
  const first = await connected(pusherClient(hub, full));
  assert.equal(await refusal(full.app_id), 4004);
  first.disconnect();
  // A browser Origin the app does not list, and a protocol this server does not speak: raw sockets.
  const picky = await pusherApp(hub, { app_id: 'pusher-picky', allowed_domains: ['example.com'] });
  const raw = async (path, headers = {}) => {
    const ws = new WebSocket(`ws://${hub.addr}${path}`, { headers });
    const [first] = await within(new Promise((resolve) => ws.once('message', (m) => resolve([JSON.parse(m)]))), path);
    const [code] = await within(new Promise((resolve) => ws.once('close', (c) => resolve([c]))), `${path} closed`);
    return [first.event, JSON.parse(typeof first.data === 'string' ? first.data : JSON.stringify(first.data)).code, code];
  };
  assert.deepEqual(await raw(`/app/${picky.app_id}?protocol=7`, { origin: 'https://evil.test' }), ['pusher:error', 4009, 4009]);
  const ok = new WebSocket(`ws://${hub.addr}/app/${picky.app_id}?protocol=7`, { headers: { origin: 'https://example.com' } });
  const hello = await within(new Promise((resolve) => ok.once('message', (m) => resolve(JSON.parse(m)))), 'hello');
  assert.equal(hello.event, 'pusher:connection_established');
  ok.close();
  assert.deepEqual(await raw(`/app/${app.app_id}?protocol=4`), ['pusher:error', 4007, 4007]);
  assert.deepEqual(await raw(`/app/${app.app_id}`), ['pusher:error', 4008, 4008]);
  // Disabling the app closes its open Pusher connections with 4003, and pusher-js stays away.
  const doomed = await pusherApp(hub, { app_id: 'pusher-doomed' });
  const d = await connected(pusherClient(hub, doomed));
  const closed = bound(d.connection, 'error', (e) => codeOf(e) !== undefined);
  const gone = bound(d.connection, 'state_change', (s) => s.current === 'disconnected');
  await api(hub, 'PUT', '/api/applications/pusher-doomed', { admin: true, body: { status: false } });
  assert.equal(codeOf(await closed), 4003);
  await gone;
  assert.equal(await refusal(doomed.app_id), 4003);
});

test('bad frames get a pusher:error and the connection goes on', async () => {
  const ws = new WebSocket(`ws://${hub.addr}/app/${app.app_id}?protocol=7`);
  const frames = [];
  const waiting = [];
  ws.on('message', (m) => {
    frames.push(JSON.parse(m));
    waiting.splice(0).forEach((w) => w());
  });
  const nextFrame = async () => {
    while (!frames.length) await within(new Promise((r) => waiting.push(r)), 'a frame');
    return frames.shift();
  };
  assert.equal((await nextFrame()).event, 'pusher:connection_established');
  for (const bad of ['not json', '{"event":"pusher:subscribe","data":{}}', '{"event":"nope","channel":"a","data":{}}']) {
    ws.send(bad);
    const answer = await nextFrame();
    assert.equal(answer.event, 'pusher:error', bad);
  }
  ws.send(JSON.stringify({ event: 'pusher:subscribe', data: { channel: 'bad name!' } }));
  const refused = await nextFrame();
  assert.deepEqual([refused.event, refused.data.status], ['pusher:subscription_error', 400]);
  ws.send(JSON.stringify({ event: 'pusher:subscribe', data: { channel: 'presence-x', auth: 'x:y' } }));
  assert.equal((await nextFrame()).data.status, 400, 'presence without channel_data');
  ws.send(JSON.stringify({ event: 'pusher:ping', data: {} }));
  assert.equal((await nextFrame()).event, 'pusher:pong');
  // Over the client frame rate (10/s, a burst of 20): refused with 4301, the connection stays.
  for (let i = 0; i < 40; i++) ws.send(JSON.stringify({ event: 'pusher:ping', data: {} }));
  const answers = [];
  for (let i = 0; i < 40; i++) answers.push(await nextFrame());
  const limited = answers.filter((a) => a.event === 'pusher:error');
  assert.ok(limited.length >= 15, `${limited.length} refused`);
  assert.ok(limited.every((a) => a.data.code === 4301));
  assert.equal(ws.readyState, WebSocket.OPEN);
  ws.close();
});

test('a frame over the size limit closes with 1009; a silent client is closed with 4201', async () => {
  const quick = await startHub({ env: { ROOMCAST_WEBSOCKET__HEARTBEAT_S: '1', ROOMCAST_WEBSOCKET__IDLE_TIMEOUT_S: '2' } });
  const quickApp = await pusherApp(quick, { app_id: 'pusher-quick' });
  const url = `ws://${quick.addr}/app/${quickApp.app_id}?protocol=7`;
  const closed = (ws) => within(new Promise((resolve) => ws.once('close', (code) => resolve(code))), 'close');
  const big = new WebSocket(url);
  await within(new Promise((resolve) => big.once('message', resolve)), 'hello');
  const bigClosed = closed(big);
  big.send(JSON.stringify({ event: 'client-big', channel: 'private-x', data: 'x'.repeat(70 * 1024) }));
  assert.equal(await bigClosed, 1009);
  // A client that answers neither the hub's pings nor sends anything: pusher-js reconnects at once on 4201.
  const silent = new WebSocket(url, { autoPong: false });
  const messages = [];
  silent.on('message', (m) => messages.push(JSON.parse(m)));
  assert.equal(await closed(silent), 4201);
  assert.deepEqual(
    messages.map((m) => [m.event, m.data?.code]),
    [['pusher:connection_established', undefined], ['pusher:error', 4201]],
  );
  // pusher-js itself stays connected: it answers the pings.
  const p = await connected(pusherClient(quick, quickApp));
  const marker = bound(await subscribed(p, 'alive'), 'still');
  await new Promise((resolve) => setTimeout(resolve, 3000)); // longer than the idle timeout, on purpose
  await serverSdk(quick, quickApp).trigger('alive', 'still', {});
  await marker;
  assert.equal(p.connection.state, 'connected');
  p.disconnect();
});
