// pusher-js's browser build in Debian's Chromium (playwright-core): the page connects to the
// hub's /app/{key}, is authorized for a private channel by the app (here Node, as the app's auth
// endpoint would), receives what the server SDK triggers, and whispers to a Node client.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { join } from 'node:path';

import { launch, onlyHost } from '../../clients/js/test/chromium.mjs';
import { cleanup, startHub } from '../../clients/js/test/support.mjs';
import { bound, connected, pusherApp, pusherClient, serverSdk, socketOptions, subscribed } from './support.mjs';

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
  cleanup();
});

test('pusher-js in Chromium: connect, private channel, trigger, client events', async () => {
  const hub = await startHub();
  const app = await pusherApp(hub, { app_id: 'pusher-browser', client_events: true, rate_limit: 100000 });
  const sdk = serverSdk(hub, app);
  const page = await browser.newPage();
  // Nothing but the hub: a request to any other host fails the test.
  const elsewhere = await onlyHost(page, hub.addr);
  await page.exposeFunction('authorize', (socketId, channel) => sdk.authorizeChannel(socketId, channel));
  await page.addScriptTag({ path: join(import.meta.dirname, 'node_modules/pusher-js/dist/web/pusher.min.js') });
  const socketId = await page.evaluate(async (options) => {
    window.got = [];
    const pusher = new Pusher(options.key, {
      ...options.socket,
      channelAuthorization: {
        customHandler: ({ socketId, channelName }, callback) =>
          window.authorize(socketId, channelName).then((auth) => callback(null, auth)),
      },
    });
    window.pusher = pusher;
    await new Promise((resolve) => pusher.connection.bind('connected', resolve));
    const channel = pusher.subscribe('private-browser');
    channel.bind('news', (data) => window.got.push(data));
    await new Promise((resolve) => channel.bind('pusher:subscription_succeeded', resolve));
    return pusher.connection.socket_id;
  }, { key: app.app_id, socket: socketOptions(hub) });
  assert.match(socketId, /^\d+\.\d+$/);
  await sdk.trigger('private-browser', 'news', { headline: 'hello browser' });
  await page.waitForFunction(() => window.got.length === 1);
  assert.deepEqual(await page.evaluate(() => window.got), [{ headline: 'hello browser' }]);
  // The page whispers; a Node pusher-js client on the same channel hears it.
  const node = await connected(pusherClient(hub, app));
  const heard = bound(await subscribed(node, 'private-browser'), 'client-typing');
  await page.evaluate(() => window.pusher.channel('private-browser').trigger('client-typing', { from: 'page' }));
  assert.deepEqual(await heard, { from: 'page' });
  await page.evaluate(() => window.pusher.disconnect());
  node.disconnect();
  assert.deepEqual(elsewhere, []);
});
