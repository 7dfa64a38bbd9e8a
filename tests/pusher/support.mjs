// Helpers of the Pusher tests: pusher-js (its Node build) and the `pusher` server SDK pointed at
// a hub started by the JavaScript client's test support.
import PusherJs from 'pusher-js';
import PusherServer from 'pusher';

import { atEnd, createApp, within } from '../../clients/js/test/support.mjs';

/** Creates an app that takes Pusher clients (`pusher_clients`, off by default). */
export function pusherApp(hub, body) {
  return createApp(hub, { pusher_clients: true, ...body });
}

/** The master key of end-to-end encrypted channels: the app's and its clients' secret, never the hub's. */
const ENCRYPTION_KEY = Buffer.alloc(32, 7).toString('base64');

/** The server SDK for `app` on `hub` (the Pusher key is the app id). */
export function serverSdk(hub, app, secret = app.app_secret) {
  const [host, port] = hub.addr.split(':');
  return new PusherServer({
    appId: app.app_id,
    key: app.app_id,
    secret,
    host,
    port,
    useTLS: false,
    encryptionMasterKeyBase64: ENCRYPTION_KEY,
  });
}

/** pusher-js's options for `hub`: plain WebSocket to its address, no fallback transports. */
export function socketOptions(hub) {
  const [host, port] = hub.addr.split(':');
  return { wsHost: host, wsPort: Number(port), forceTLS: false, enabledTransports: ['ws'], cluster: 'mt1' };
}

/**
 * A pusher-js client of `app` on `hub`. Channels are authorized by the server SDK as an app's
 * auth endpoint would (`user` is the presence member and the signed-in user); `secret` signs.
 */
export function pusherClient(hub, app, { user, secret = app.app_secret, key = app.app_id, ...options } = {}) {
  const sdk = serverSdk(hub, app, secret);
  const client = new PusherJs(key, {
    ...socketOptions(hub),
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, callback) =>
        callback(null, sdk.authorizeChannel(socketId, channelName, channelName.startsWith('presence-') ? user : undefined)),
    },
    userAuthentication: {
      customHandler: ({ socketId }, callback) => callback(null, sdk.authenticateUser(socketId, { id: user?.user_id, ...user?.user_info })),
    },
    ...options,
  });
  atEnd(() => client.disconnect());
  return client;
}

/** Resolves with the argument of the next `event` on `target` (a channel, a connection…) that `accept` takes. */
export function bound(target, event, accept = () => true, what = event) {
  return within(
    new Promise((resolve) => {
      const listener = (data, meta) => {
        if (!accept(data, meta)) return;
        target.unbind(event, listener);
        resolve(data);
      };
      target.bind(event, listener);
    }),
    what,
  );
}

/** Resolves once `client` is connected. */
export async function connected(client) {
  if (client.connection.state !== 'connected') await bound(client.connection, 'connected');
  return client;
}

/** Subscribes `client` to `name`; resolves with the channel once the hub confirmed it. */
export async function subscribed(client, name) {
  const channel = client.subscribe(name);
  if (!channel.subscribed) await bound(channel, 'pusher:subscription_succeeded', () => true, `${name} subscribed`);
  return channel;
}

/** Collects every `event` on `target` into an array. */
export function collect(target, event) {
  const got = [];
  target.bind(event, (data) => got.push(data));
  return got;
}
