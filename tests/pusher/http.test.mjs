// Pusher's Node server SDK (npm `pusher`) against roomcast's Pusher HTTP API: triggers reach
// roomcast clients, the queries answer, and requests that are not signed right are refused.
// The hub binary and the client helpers are the JavaScript client's (clients/js/test).
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, createHmac } from 'node:crypto';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, test } from 'node:test';
import Pusher from 'pusher';

import { api, cleanup, client, createApp, next, startHub, token } from '../../clients/js/test/support.mjs';

after(cleanup);

const hub = await startHub();
const app = await createApp(hub, { app_id: 'pusher-app' });
const [host, port] = hub.addr.split(':');
const sdk = (secret = app.app_secret) => new Pusher({ appId: app.app_id, key: app.app_id, secret, host, port, useTLS: false });
const pusher = sdk();

/** A roomcast client in `rooms`; resolves once subscribed to all. */
async function listener(rooms, payload = {}, of = app) {
  const rc = client(hub.ws, { getToken: () => token(hub, of, payload) });
  rc.connect();
  const subs = rooms.map((r) => rc.subscribe(r));
  await Promise.all(subs.map((s) => next(s, 'subscribed')));
  return { rc, subs };
}

test('trigger reaches one channel and several, with the data as JSON', async () => {
  const { rc, subs } = await listener(['news', 'sport', 'weather']);
  const one = next(subs[0], 'event', (e) => e.event === 'solo');
  await pusher.trigger('news', 'solo', { text: 'hi', n: 1 });
  const [solo] = await one;
  assert.deepEqual(solo.data, { text: 'hi', n: 1 });
  const all = subs.map((s) => next(s, 'event', (e) => e.event === 'wide'));
  const res = await pusher.trigger(['news', 'sport', 'weather'], 'wide', 'plain text');
  assert.equal(res.status, 200);
  for (const [e] of await Promise.all(all)) assert.equal(e.data, 'plain text');
  rc.close();
});

test('socket_id keeps the event from that connection', async () => {
  const a = await listener(['room']);
  const b = await listener(['room']);
  const aHeard = [];
  a.subs[0].on('event', (e) => aHeard.push(e.event));
  const bGot = next(b.subs[0], 'event', (e) => e.event === 'second');
  const aGot = next(a.subs[0], 'event', (e) => e.event === 'second');
  // The SDK takes Pusher socket ids only ("123.456"); a native connection's id goes signed by hand.
  const body = JSON.stringify({ name: 'first', channel: 'room', data: '{}', socket_id: a.rc.connectionId });
  const excluded = await fetch(signedUrl('POST', `/apps/${app.app_id}/events`, body), post(body));
  assert.equal(excluded.status, 200);
  await pusher.trigger('room', 'second', {});
  await bGot;
  await aGot;
  assert.deepEqual(aHeard, ['second']);
  a.rc.close();
  b.rc.close();
});

test('triggerBatch publishes each event; info answers the counts', async () => {
  const { rc, subs } = await listener(['b1', 'b2']);
  const got = [next(subs[0], 'event', (e) => e.event === 'x'), next(subs[1], 'event', (e) => e.event === 'y')];
  const res = await pusher.triggerBatch([
    { channel: 'b1', name: 'x', data: { v: 1 } },
    { channel: 'b2', name: 'y', data: { v: 2 }, info: 'subscription_count' },
  ]);
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), { batch: [{}, { subscription_count: 1 }] });
  const [[x], [y]] = await Promise.all(got);
  assert.deepEqual([x.data, y.data], [{ v: 1 }, { v: 2 }]);
  // A batch with one bad event publishes none of them.
  const tooBig = [
    { channel: 'b1', name: 'never', data: { v: 3 } },
    { channel: 'b1', name: 'never', data: { pad: 'x'.repeat(70000) } },
  ];
  await assert.rejects(pusher.triggerBatch(tooBig), (e) => e.status === 413);
  const afterBad = next(subs[0], 'event');
  await pusher.trigger('b1', 'after-bad', {});
  assert.equal((await afterBad)[0].event, 'after-bad');
  const counted = await pusher.trigger(['b1', 'b2'], 'z', {}, { info: 'subscription_count' });
  assert.deepEqual(await counted.json(), { channels: { b1: { subscription_count: 1 }, b2: { subscription_count: 1 } } });
  rc.close();
});

test('channels, a channel and its users, as Pusher answers them', async () => {
  const alice = await listener(['presence-room', 'plain'], { user_id: 'alice' });
  const bob = await listener(['presence-room'], { user_id: 'bob' });
  const list = await (await pusher.get({ path: '/channels', params: { filter_by_prefix: 'presence-', info: 'user_count' } })).json();
  assert.deepEqual(list, { channels: { 'presence-room': { user_count: 2 } } });
  const everything = await (await pusher.get({ path: '/channels' })).json();
  assert.ok(everything.channels.plain && everything.channels['presence-room']);
  const one = await (await pusher.get({ path: '/channels/presence-room', params: { info: 'user_count,subscription_count' } })).json();
  assert.deepEqual(one, { occupied: true, subscription_count: 2, user_count: 2 });
  const empty = await (await pusher.get({ path: '/channels/nobody-here' })).json();
  assert.deepEqual(empty, { occupied: false });
  const users = await (await pusher.get({ path: '/channels/presence-room/users' })).json();
  assert.deepEqual(users, { users: [{ id: 'alice' }, { id: 'bob' }] });
  await assert.rejects(pusher.get({ path: '/channels/plain/users' }), (e) => e.status === 400);
  await assert.rejects(pusher.get({ path: '/channels', params: { info: 'user_count' } }), (e) => e.status === 400);
  alice.rc.close();
  bob.rc.close();
});

test('a wrong secret, a stale timestamp or a body that is not the signed one is refused', async () => {
  await assert.rejects(sdk('not-the-secret').trigger('x', 'e', {}), (e) => e.status === 401);
  const body = JSON.stringify({ name: 'e', channel: 'x', data: '{}' });
  const path = `/apps/${app.app_id}/events`;
  const send = (url, sent = body) => fetch(url, post(sent));
  const now = Math.floor(Date.now() / 1000);
  assert.equal((await send(signedUrl('POST', path, body, now))).status, 200, 'signed by hand like the SDK: accepted');
  assert.equal((await send(signedUrl('POST', path, body, now - 700))).status, 401, 'older than 600 s');
  assert.equal((await send(signedUrl('POST', path, body, now + 700))).status, 401, 'more than 600 s ahead');
  assert.equal((await send(signedUrl('POST', path, body), body.replace('"x"', '"y"'))).status, 401, 'another body than the signed one');
  assert.equal((await send(signedUrl('GET', path, body))).status, 401, 'signed for another method');
  assert.equal((await send(`${hub.http}${path}`)).status, 401, 'no signature at all');
  const mangled = signedUrl('POST', path, body);
  assert.equal((await send(mangled.replace(/auth_signature=\w+/, 'auth_signature=zz'))).status, 401, 'not hex');
  assert.equal((await send(mangled.replace('auth_version=1.0', 'auth_version=2.0'))).status, 400, 'unknown auth_version');
  assert.equal((await send(signedUrl('POST', path, '{"name":'), '{"name":')).status, 400, 'signed, but not JSON');
  const tooMany = JSON.stringify({ name: 'e', channels: Array.from({ length: 101 }, (_, i) => `c${i}`), data: '{}' });
  assert.equal((await send(signedUrl('POST', path, tooMany), tooMany)).status, 400, '101 channels');
  // Another app's id in the path with this app's signature.
  await api(hub, 'POST', '/api/applications', { admin: true, body: { app_id: 'pusher-other' } });
  const elsewhere = signedUrl('POST', path, body).replace(`/apps/${app.app_id}/`, '/apps/pusher-other/');
  assert.equal((await send(elsewhere)).status, 401);
});

test("Pusher's Python SDK triggers, batches and queries; a wrong secret is PusherBadAuth", async () => {
  // Pusher's Python SDK takes numeric app ids only; a roomcast app id may be one.
  const numeric = await createApp(hub, { app_id: '100001' });
  const room = await listener(['py-room'], {}, numeric);
  const member = await listener(['presence-py'], { user_id: 'pyuser' }, numeric);
  const got = [next(room.subs[0], 'event', (e) => e.event === 'from-python'), next(room.subs[0], 'event', (e) => e.event === 'batched')];
  const script = join(import.meta.dirname, 'python_sdk.py');
  const { stdout } = await promisify(execFile)('python3', [script, host, port, numeric.app_id, numeric.app_secret]);
  const out = JSON.parse(stdout);
  assert.deepEqual(out.trigger, {});
  assert.deepEqual(out.trigger_batch, {});
  assert.deepEqual(out.channels_info, { channels: { 'presence-py': { user_count: 1 } } });
  assert.deepEqual(out.channel_info, { occupied: true, subscription_count: 1 });
  assert.deepEqual(out.users_info, { users: [{ id: 'pyuser' }] });
  assert.equal(out.forged, 'PusherBadAuth');
  const [[first], [second]] = await Promise.all(got);
  assert.deepEqual([first.data, second.data], [{ n: 1 }, { n: 2 }]);
  room.rc.close();
  member.rc.close();
});

test('a disabled app is refused with 403', async () => {
  const off = await createApp(hub, { app_id: 'pusher-off' });
  const offSdk = new Pusher({ appId: off.app_id, key: off.app_id, secret: off.app_secret, host, port, useTLS: false });
  await offSdk.trigger('x', 'e', {});
  await api(hub, 'PUT', '/api/applications/pusher-off', { admin: true, body: { status: false } });
  await assert.rejects(offSdk.trigger('x', 'e', {}), (e) => e.status === 403);
});

/** A URL for `method` on `path` signed as Pusher's SDKs sign it, for `body`, at `timestamp`. */
function signedUrl(method, path, body, timestamp = Math.floor(Date.now() / 1000)) {
  const md5 = createHash('md5').update(body).digest('hex');
  const params = `auth_key=${app.app_id}&auth_timestamp=${timestamp}&auth_version=1.0&body_md5=${md5}`;
  const signature = createHmac('sha256', app.app_secret).update(`${method}\n${path}\n${params}`).digest('hex');
  return `${hub.http}${path}?${params}&auth_signature=${signature}`;
}

/** fetch options for a JSON POST of `body`. */
function post(body) {
  return { method: 'POST', headers: { 'content-type': 'application/json' }, body };
}
