// examples/browser.html in Debian's Chromium (playwright-core): it loads the client from the hub,
// connects through the test's proxy, receives, shows presence, and survives a cut with
// `recovered`. Screenshots go to target/browser-screenshots/.
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { pathToFileURL } from 'node:url';

import { launch } from './chromium.mjs';
import { broadcast, cleanup, client, createApp, next, proxy, startHub, token } from './support.mjs';

const repo = join(import.meta.dirname, '../../..');
const shots = join(repo, 'target/browser-screenshots');

let browser;
before(async () => {
  browser = await launch();
  mkdirSync(shots, { recursive: true });
});
after(async () => {
  await browser?.close();
  cleanup();
});

test('the example page connects, receives, shows presence and recovers after a cut', async () => {
  const hub = await startHub();
  const app = await createApp(hub, { app_id: 'example-page' });
  const relay = await proxy([hub.addr]);
  const pageToken = await token(hub, app, { user_id: 'ada', user_info: { name: 'Ada' } });
  const room = 'presence-demo';
  const page = await browser.newPage();
  const url = new URL(pathToFileURL(join(repo, 'examples/browser.html')));
  url.search = new URLSearchParams({ url: `ws://${relay.addr}/ws`, token: pageToken, room }).toString();
  await page.goto(url.href);
  const log = page.locator('#log .entry');
  await log.filter({ hasText: `subscribed to ${room}` }).waitFor();
  assert.equal(await page.locator('#state').textContent(), 'connected');
  assert.deepEqual(await page.locator('#members li').allTextContents(), ['Ada (ada)']);

  // Another member joins from Node; the page lists both.
  const grace = client(hub.ws, { token: await token(hub, app, { user_id: 'grace' }) });
  grace.connect();
  await next(grace.subscribe(room), 'subscribed');
  await page.locator('#members li', { hasText: 'grace' }).waitFor();
  assert.equal(await page.locator('#count').textContent(), '2');

  await broadcast(hub, app, room, 'new-message', { text: 'hello browser' });
  await log.filter({ hasText: 'hello browser' }).waitFor();

  // Cut: what is published meanwhile arrives after the reconnect, once, with `recovered`.
  relay.cut();
  for (let i = 1; i <= 3; i++) await broadcast(hub, app, room, 'missed', { i });
  await log.filter({ hasText: 'recovered' }).waitFor();
  await log.filter({ hasText: '{"i":3}' }).waitFor();
  const lines = await log.allTextContents();
  const missed = lines.filter((l) => l.includes(' missed '));
  assert.deepEqual(missed.map((l) => JSON.parse(l.slice(l.indexOf('{')))), [{ i: 1 }, { i: 2 }, { i: 3 }]);
  assert.ok(relay.connections >= 2, 'the page reconnected through the proxy');
  assert.ok(!lines.some((l) => l.startsWith('gap')), lines.join('\n'));
  await page.screenshot({ path: join(shots, 'example.png') });
  grace.close();
  await page.close();
  await hub.stop();
});
