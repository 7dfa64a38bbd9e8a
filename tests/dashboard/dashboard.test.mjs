// The dashboard (DESIGN §14) in Debian's Chromium, driven by playwright-core, against the real
// binary: sign-in and its cookie, CSRF, scopes, the pages, the live debug console, webhook
// retries. Every page is screenshotted into target/dashboard-screenshots/. Every test's browser
// context refuses and records any request to another host.
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { createServer } from 'node:http';
import { once } from 'node:events';
import { join } from 'node:path';
import { after, before, test } from 'node:test';

import { launchBrowser, onlyHost } from '../../clients/js/test/chromium.mjs';
import { ADMIN, api, cleanup, client, createApp, next, startCluster, startHub, token, within } from '../../clients/js/test/support.mjs';

const SHOTS = join(import.meta.dirname, '../../target/dashboard-screenshots');
mkdirSync(SHOTS, { recursive: true });

let browser;
let hub;
let app;
before(async () => {
  browser = await launchBrowser();
  hub = await startHub({
    env: { ROOMCAST_WEBHOOKS__ALLOW_PRIVATE_TARGETS: 'true', ROOMCAST_WEBHOOKS__RETRY_DELAYS_MS: '[]' },
  });
  app = await createApp(hub, { app_id: 'shop', name: 'Shop', client_events: true, rate_limit: 100000 });
  await createApp(hub, { app_id: 'blog', name: 'Blog', rate_limit: 100000 });
});
after(async () => {
  await browser?.close();
  cleanup();
});

/** A fresh browser context (its own cookies) whose requests may only go to the hub. */
async function context() {
  const ctx = await browser.newContext({ viewport: { width: 1360, height: 860 } });
  const elsewhere = await onlyHost(ctx, hub.addr);
  const page = await ctx.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  return {
    ctx,
    page,
    /** Fails when the page asked another host for anything or threw. */
    check() {
      assert.deepEqual(elsewhere, [], 'requests to other hosts');
      assert.deepEqual(errors, [], 'errors in the page');
    },
  };
}

/** Signs in through the form. */
async function signIn(page, key, { remember = false } = {}) {
  await page.goto(`${hub.http}/dashboard`);
  await page.waitForSelector('#login:not([hidden])');
  await page.fill('#login-key', key);
  if (remember) await page.check('#login-remember');
  await page.click('#login-form button[type=submit]');
  await page.waitForSelector('#shell:not([hidden])');
}

/** Reloads the page until `selector` shows (the delivery log is read when the page is drawn). */
function reloadUntil(page, selector, what) {
  return within(
    (async () => {
      for (;;) {
        await page.reload();
        if (await page.waitForSelector(selector, { timeout: 1000 }).catch(() => null)) return;
      }
    })(),
    what,
  );
}

const shot = (page, name) => page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });

/** An HTTP call with a dashboard cookie (and CSRF token), as another program would make it. */
function withCookie(method, path, cookie, { csrf, body } = {}) {
  const headers = { cookie: `login_token=${cookie}` };
  if (csrf) headers['x-csrf-token'] = csrf;
  if (body !== undefined) headers['content-type'] = 'application/json';
  return fetch(hub.http + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
}

async function loginOverHttp(key, remember = false) {
  const res = await fetch(`${hub.http}/dashboard/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ key, remember }),
  });
  const body = await res.json();
  const cookie = (res.headers.get('set-cookie') || '').match(/login_token=([^;]*)/)?.[1];
  return { res, body, cookie, setCookie: res.headers.get('set-cookie') };
}

test('an admin signs in; the cookie is an HttpOnly, SameSite=Strict JWT valid 6 hours, or 30 days', async () => {
  const { ctx, page, check } = await context();
  await page.goto(`${hub.http}/dashboard`);
  await page.waitForSelector('#login:not([hidden])');
  await shot(page, '01-sign-in');
  const before = Date.now() / 1000;
  await signIn(page, ADMIN);
  await page.waitForSelector('tr[data-app="shop"]');
  assert.ok(await page.isVisible('tr[data-app="blog"]'), 'an admin sees every app');
  await shot(page, '02-apps');
  const [cookie] = (await ctx.cookies()).filter((c) => c.name === 'login_token');
  assert.equal(cookie.httpOnly, true);
  assert.equal(cookie.sameSite, 'Strict');
  assert.equal(cookie.secure, false, 'plain HTTP here');
  assert.equal(cookie.path, '/');
  assert.ok(Math.abs(cookie.expires - (before + 6 * 3600)) < 60, `6 h, got ${cookie.expires - before} s`);
  assert.equal(cookie.value.split('.').length, 3, 'a JWT');
  assert.ok(!cookie.value.includes(ADMIN.split('_')[3]), 'never the key');
  const header = JSON.parse(Buffer.from(cookie.value.split('.')[0], 'base64url'));
  assert.equal(header.alg, 'HS256');
  // The page script cannot read it.
  assert.equal(await page.evaluate(() => document.cookie), '');
  check();
  await ctx.close();

  const long = await context();
  const start = Date.now() / 1000;
  await signIn(long.page, ADMIN, { remember: true });
  const [kept] = (await long.ctx.cookies()).filter((c) => c.name === 'login_token');
  assert.ok(Math.abs(kept.expires - (start + 30 * 86400)) < 60, `30 days, got ${kept.expires - start} s`);
  long.check();
  await long.ctx.close();
});

test('a wrong key is 401 and repeated attempts are rate-limited per IP', async () => {
  const { page, ctx, check } = await context();
  await page.goto(`${hub.http}/dashboard`);
  await page.waitForSelector('#login:not([hidden])');
  await page.fill('#login-key', 'rc_admin_NotAKey00000_' + 'b'.repeat(32));
  await page.click('#login-form button[type=submit]');
  await page.waitForFunction(() => document.querySelector('#login-error').textContent.length > 0);
  assert.ok(await page.isHidden('#shell'));
  assert.equal((await ctx.cookies()).length, 0, 'no cookie for a wrong key');
  check();
  await ctx.close();
  const wrong = await loginOverHttp('rc_app_nope_' + 'c'.repeat(32));
  assert.equal(wrong.res.status, 401);
  assert.equal(wrong.body.code, 'invalid_key');
  assert.equal(wrong.cookie, undefined);
  // Another site's page cannot sign this browser in, even with a right key.
  const crossSite = await fetch(`${hub.http}/dashboard/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', origin: 'https://evil.example' },
    body: JSON.stringify({ key: ADMIN }),
  });
  assert.equal(crossSite.status, 403);
  assert.equal(crossSite.headers.get('set-cookie'), null);
  // A hub with a small per-IP budget: the attempts after it are 429 with Retry-After.
  const strict = await startHub({ env: { ROOMCAST_LIMITS__IP_RATE_LIMIT: '3' } });
  const statuses = [];
  for (let i = 0; i < 5; i++) {
    const res = await fetch(`${strict.http}/dashboard/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: `key=rc_admin_Guess0000000_${'d'.repeat(32)}`,
    });
    statuses.push(res.status);
    if (res.status === 429) assert.ok(Number(res.headers.get('retry-after')) > 0);
  }
  assert.deepEqual(statuses.slice(0, 3), [401, 401, 401]);
  assert.equal(statuses[4], 429);
  await strict.stop();
});

test('an app key sees only its app, and only what its scopes allow', async () => {
  const { key } = await api(hub, 'POST', '/api/applications/shop/keys', {
    admin: true,
    body: { name: 'support desk', scopes: ['rooms:read', 'broadcast:write', 'apps:read'] },
  }).then((r) => ({ key: r.api_key }));
  const { ctx, page, check } = await context();
  await signIn(page, key);
  await page.waitForURL(/#\/app\/shop\/overview$/);
  const nav = await page.$$eval('#nav a', (links) => links.map((a) => a.textContent));
  assert.deepEqual(nav, ['Overview', 'Settings', 'Rooms', 'Debug console']);
  // The API behind the page answers the same: one app, and 403 past the scopes.
  const seen = await page.evaluate(async () => (await (await fetch('/api/applications')).json()).applications.map((a) => a.app_id));
  assert.deepEqual(seen, ['shop']);
  assert.equal(await page.evaluate(async () => (await fetch('/api/webhooks?app_id=shop')).status), 403);
  assert.equal(await page.evaluate(async () => (await fetch('/api/applications/blog')).status), 403);
  // Settings are shown read-only without apps:write.
  await page.goto(`${hub.http}/dashboard#/app/shop/settings`);
  await page.waitForSelector('#app-settings');
  assert.ok(await page.isDisabled('#app-settings input[name="name"]'));
  assert.equal(await page.$('#app-settings button[type=submit]'), null);
  // Another app's page shows the refusal, not its data.
  await page.goto(`${hub.http}/dashboard#/app/blog/settings`);
  await page.waitForSelector('.callout.error');
  check();
  await ctx.close();
});

test('state-changing requests need the CSRF token; reads do not', async () => {
  const { body, cookie } = await loginOverHttp(ADMIN);
  assert.equal(body.success, true);
  assert.match(body.csrf_token, /^[A-Za-z0-9]{32}$/);
  assert.equal((await withCookie('GET', '/api/applications', cookie)).status, 200);
  const refused = await withCookie('POST', '/api/applications', cookie, { body: { name: 'No token' } });
  assert.equal(refused.status, 403);
  assert.equal((await refused.json()).code, 'forbidden');
  const wrong = await withCookie('POST', '/api/applications', cookie, { csrf: 'x'.repeat(32), body: { name: 'Wrong token' } });
  assert.equal(wrong.status, 403);
  assert.equal((await withCookie('POST', '/dashboard/logout', cookie)).status, 403, 'logout too');
  const ok = await withCookie('POST', '/api/applications', cookie, { csrf: body.csrf_token, body: { name: 'With token' } });
  assert.equal(ok.status, 201);
  // Nothing was made by the refused calls.
  const names = (await api(hub, 'GET', '/api/applications?limit=100', { admin: true })).applications.map((a) => a.name);
  assert.ok(names.includes('With token'));
  assert.ok(!names.includes('No token') && !names.includes('Wrong token'));
  // The page sends it: a change through the UI works.
  const { ctx, page, check } = await context();
  await signIn(page, ADMIN);
  await page.goto(`${hub.http}/dashboard#/app/blog/settings`);
  await page.waitForSelector('#app-settings');
  await shot(page, '04-settings');
  await page.fill('#app-settings input[name="max_connections"]', '777');
  await page.fill('#app-settings input[name="history_size"]', '42');
  await page.click('#app-settings button[type=submit]');
  await page.waitForSelector('.toast');
  const blog = (await api(hub, 'GET', '/api/applications/blog', { admin: true })).app;
  assert.equal(blog.max_connections, 777);
  assert.equal(blog.history.size, 42);
  check();
  await ctx.close();
});

test('signing out ends the session everywhere, and a revoked key ends its sessions', async () => {
  const { ctx, page, check } = await context();
  await signIn(page, ADMIN);
  const [cookie] = (await ctx.cookies()).filter((c) => c.name === 'login_token');
  await page.click('#logout');
  await page.waitForSelector('#login:not([hidden])');
  assert.equal((await ctx.cookies()).filter((c) => c.name === 'login_token').length, 0, 'the cookie is cleared');
  // The old cookie, replayed by anyone, is refused.
  const replay = await withCookie('GET', '/api/applications', cookie.value);
  assert.equal(replay.status, 401);
  assert.equal((await replay.json()).code, 'invalid_token');
  check();
  await ctx.close();

  const made = await api(hub, 'POST', '/api/applications/shop/keys', { admin: true, body: { name: 'temp', scopes: ['apps:read'] } });
  const session = await loginOverHttp(made.api_key);
  assert.equal(session.res.status, 200);
  assert.equal((await withCookie('GET', '/api/applications/shop', session.cookie)).status, 200);
  await api(hub, 'DELETE', `/api/applications/shop/keys/${made.key.key_id}`, { admin: true });
  const after = await withCookie('GET', '/api/applications/shop', session.cookie);
  assert.equal(after.status, 401);
  assert.equal((await withCookie('GET', '/dashboard/session', session.cookie)).status, 401);
  // A forged cookie (signed with another secret) is refused.
  const [h, p] = session.cookie.split('.');
  assert.equal((await withCookie('GET', '/api/applications', `${h}.${p}.AAAA`)).status, 401);
});

test('the session and its signing secret survive a restart of the hub', async () => {
  const first = await startHub();
  const res = await fetch(`${first.http}/dashboard/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ key: ADMIN }),
  });
  const cookie = res.headers.get('set-cookie').match(/login_token=([^;]*)/)[1];
  await first.stop();
  const again = await startHub({ dir: first.dir });
  const seen = await fetch(`${again.http}/api/applications`, { headers: { cookie: `login_token=${cookie}` } });
  assert.equal(seen.status, 200);
  await again.stop();
});

test('in a cluster, a session made on one node works on the other, and signing out ends it on both', async () => {
  const { nodes: [a, b] } = await startCluster(['dash-a', 'dash-b']);
  const login = await fetch(`${a.http}/dashboard/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ key: ADMIN }),
  });
  const { csrf_token: csrf } = await login.json();
  const cookie = { cookie: `login_token=${login.headers.get('set-cookie').match(/login_token=([^;]*)/)[1]}` };
  assert.equal((await fetch(`${b.http}/api/applications`, { headers: cookie })).status, 200);
  const out = await fetch(`${b.http}/dashboard/logout`, { method: 'POST', headers: { ...cookie, 'x-csrf-token': csrf } });
  assert.equal(out.status, 200);
  assert.equal((await fetch(`${a.http}/api/applications`, { headers: cookie })).status, 401);
  assert.equal((await fetch(`${b.http}/api/applications`, { headers: cookie })).status, 401);
  await Promise.all([a.stop(), b.stop()]);
});

test('an app and a key made in the UI work over plain HTTP', async () => {
  const { ctx, page, check } = await context();
  await signIn(page, ADMIN);
  await page.waitForSelector('#create-app');
  await page.fill('#create-app input[name="name"]', 'Made in the UI');
  await page.fill('#create-app input[name="app_id"]', 'ui-made');
  await page.click('#create-app button[type=submit]');
  await page.waitForSelector('.callout.secret');
  const [secret, primary] = await page.$$eval('.callout.secret .secret-value', (els) => els.map((e) => e.textContent));
  assert.match(primary, /^rc_app_/);
  await shot(page, '03-app-created');
  // The primary key and the secret, as a server would use them.
  assert.equal((await api(hub, 'GET', '/api/test', { key: primary })).app_id, 'ui-made');
  assert.ok(await token(hub, { app_id: 'ui-made', app_secret: secret }));

  await page.goto(`${hub.http}/dashboard#/app/ui-made/keys`);
  await page.waitForSelector('#create-key');
  await page.fill('#create-key input[name="key_name"]', 'publisher');
  await page.check('#create-key input[value="rooms:read"]');
  await page.click('#create-key button[type=submit]');
  await page.waitForSelector('.callout.secret .secret-value');
  const made = await page.textContent('.callout.secret .secret-value');
  await page.waitForSelector('tr[data-key]');
  await shot(page, '05-keys');
  const published = await fetch(`${hub.http}/api/broadcast`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-app-api-key': made },
    body: JSON.stringify({ room: 'news', event: 'hello', data: { from: 'curl' } }),
  });
  assert.equal(published.status, 200);
  const refused = await fetch(`${hub.http}/api/webhooks?app_id=ui-made`, { headers: { 'x-app-api-key': made } });
  assert.equal(refused.status, 403, 'only the scopes chosen in the UI');
  // Revoked in the UI, refused over HTTP.
  page.on('dialog', (d) => d.accept());
  const keyId = made.split('_')[2];
  await page.click(`tr[data-key="${keyId}"] button`);
  await page.waitForSelector(`tr[data-key="${keyId}"]`, { state: 'detached' });
  const gone = await fetch(`${hub.http}/api/test`, { headers: { 'x-app-api-key': made } });
  assert.equal(gone.status, 401);
  check();
  await ctx.close();
});

test('the debug console shows a broadcast within a second, joins and leaves, and publishes', async () => {
  const { ctx, page, check } = await context();
  await signIn(page, ADMIN);
  await page.goto(`${hub.http}/dashboard#/app/shop/debug`);
  await page.waitForSelector('#debug-status.on');
  const sent = Date.now();
  const result = await api(hub, 'POST', '/api/broadcast', { key: app.api_key, body: { room: 'orders', event: 'order-placed', data: { id: 7 } } });
  await page.waitForSelector('#debug-log tr[data-type="broadcast"]', { timeout: 1000 });
  const shownAfter = Date.now() - sent;
  assert.ok(shownAfter < 1000, `shown after ${shownAfter} ms`);
  const cells = await page.$$eval('#debug-log tr[data-type="broadcast"] td', (tds) => tds.map((td) => td.textContent));
  assert.equal(cells[2], 'orders');
  assert.equal(cells[3], 'order-placed');
  assert.equal(cells[4], String(result.offset || ''));
  assert.equal(cells[5], '{"id":7}');
  // A client joins a presence room, sends a client event and leaves.
  const rc = client(hub.ws, { getToken: () => token(hub, app, { user_id: 'alice', can_publish: true }) });
  rc.connect();
  const support = rc.subscribe('presence-support');
  const ready = next(support, 'subscribed');
  await page.waitForSelector('#debug-log tr[data-type="join"]');
  await page.waitForSelector('#debug-log tr[data-type="member_added"]');
  assert.match(await page.textContent('#debug-log tr[data-type="join"]'), /presence-support.*user alice/);
  await ready;
  support.publish('typing', { by: 'alice' });
  await page.waitForSelector('#debug-log tr[data-type="client_event"]');
  const clientCells = await page.$$eval('#debug-log tr[data-type="client_event"] td', (tds) => tds.map((td) => td.textContent));
  assert.deepEqual(clientCells.slice(2, 4), ['presence-support', 'typing']);
  assert.match(clientCells[4], /^\d+$/, 'with its offset');
  assert.equal(clientCells[5], '{"by":"alice"}');
  rc.close();
  await page.waitForSelector('#debug-log tr[data-type="leave"]');
  await page.waitForSelector('#debug-log tr[data-type="member_removed"]');
  // Paused: nothing new shows until resumed.
  await page.click('#debug-pause');
  await api(hub, 'POST', '/api/broadcast', { key: app.api_key, body: { room: 'orders', event: 'while-paused', data: 1 } });
  await page.waitForTimeout(300);
  assert.equal(await page.$('#debug-log tr td:text("while-paused")'), null);
  await page.click('#debug-pause');
  await page.waitForSelector('#debug-log tr td:text("while-paused")');
  // Published from the page, seen in the page.
  await page.fill('#debug-publish input[name="publish_room"]', 'orders');
  await page.fill('#debug-publish input[name="publish_event"]', 'from-the-console');
  await page.fill('#debug-publish textarea', '{"ok": true}');
  await page.click('#debug-publish button[type=submit]');
  await page.waitForSelector('#debug-log tr td:text("from-the-console")');
  // A filter hides what does not match.
  await page.fill('#debug-watch input[name="debug_filter"]', 'only-this');
  await api(hub, 'POST', '/api/broadcast', { key: app.api_key, body: { room: 'orders', event: 'filtered-out', data: 1 } });
  await api(hub, 'POST', '/api/broadcast', { key: app.api_key, body: { room: 'orders', event: 'only-this', data: 1 } });
  await page.waitForSelector('#debug-log tr td:text("only-this")');
  assert.equal(await page.$('#debug-log tr td:text("filtered-out")'), null);
  await page.fill('#debug-watch input[name="debug_filter"]', '');
  await shot(page, '08-debug-console');
  // Another app's events never reach this console.
  const blog = await api(hub, 'POST', '/api/applications/blog/keys', { admin: true, body: { name: 'b', scopes: ['broadcast:write'] } });
  await api(hub, 'POST', '/api/broadcast', { key: blog.api_key, body: { room: 'orders', event: 'blog-event', data: 1 } });
  await api(hub, 'POST', '/api/broadcast', { key: app.api_key, body: { room: 'orders', event: 'after-blog', data: 1 } });
  await page.waitForSelector('#debug-log tr td:text("after-blog")');
  assert.equal(await page.$('#debug-log tr td:text("blog-event")'), null);
  check();
  await ctx.close();
});

test('an app is disabled, deleted and restored from its settings', async () => {
  await createApp(hub, { app_id: 'short-lived', name: 'Short lived' });
  const { ctx, page, check } = await context();
  page.on('dialog', (d) => d.accept());
  await signIn(page, ADMIN);
  await page.goto(`${hub.http}/dashboard#/app/short-lived/settings`);
  await page.waitForSelector('#app-settings');
  await page.selectOption('#app-settings select[name="status"]', 'disabled');
  await page.click('#app-settings button[type=submit]');
  await page.waitForSelector('.toast:text("Settings saved")');
  assert.equal((await api(hub, 'GET', '/api/applications/short-lived', { admin: true })).app.status, 'disabled');
  await page.click('button:text("Delete app")');
  await page.waitForSelector('button:text("Restore app")');
  const deleted = await fetch(`${hub.http}/api/applications/short-lived`, { headers: { 'x-admin-api-key': ADMIN } });
  assert.equal(deleted.status, 404);
  await page.goto(`${hub.http}/dashboard#/apps`);
  await page.waitForSelector('tr[data-app="short-lived"] .badge:text("deleted")');
  await page.goto(`${hub.http}/dashboard#/app/short-lived/settings`);
  await page.click('button:text("Restore app")');
  await page.waitForSelector('button:text("Delete app")');
  assert.equal((await api(hub, 'GET', '/api/applications/short-lived', { admin: true })).app.deleted_at, null);
  check();
  await ctx.close();
});

test('the debug feed refuses what the caller may not watch', async () => {
  const noRooms = await api(hub, 'POST', '/api/applications/shop/keys', { admin: true, body: { name: 'n', scopes: ['apps:read'] } });
  const session = await loginOverHttp(noRooms.api_key);
  assert.equal((await withCookie('GET', '/dashboard/debug?app_id=shop', session.cookie)).status, 403);
  const admin = await loginOverHttp(ADMIN);
  assert.equal((await withCookie('GET', '/dashboard/debug', admin.cookie)).status, 400, 'an admin names the app');
  assert.equal((await withCookie('GET', '/dashboard/debug?app_id=nope', admin.cookie)).status, 404);
  assert.equal((await withCookie('GET', '/dashboard/debug?app_id=shop&room=bad%20room', admin.cookie)).status, 400);
  assert.equal((await fetch(`${hub.http}/dashboard/debug?app_id=shop`)).status, 401);
});

test('a webhook: its failed attempt in the delivery log, retried from the UI', async () => {
  let fail = true;
  const received = [];
  const receiver = createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      received.push(body);
      res.writeHead(fail ? 500 : 200).end(fail ? 'down for maintenance' : 'ok');
    });
  }).listen(0, '127.0.0.1');
  await once(receiver, 'listening');
  const url = `http://127.0.0.1:${receiver.address().port}/hook`;
  const { ctx, page, check } = await context();
  page.on('dialog', (d) => d.accept());
  await signIn(page, ADMIN);
  await page.goto(`${hub.http}/dashboard#/app/shop/webhooks`);
  await page.waitForSelector('#create-webhook input[name="url"]');
  await page.fill('#create-webhook input[name="url"]', url);
  await page.fill('#create-webhook input[name="events"]', 'order-placed, user-joined');
  await page.click('#create-webhook button[type=submit]');
  await page.waitForSelector('.callout.secret');
  await page.waitForSelector('section.webhook');
  // An event the webhook takes; its one attempt fails (no retries configured on this hub).
  await api(hub, 'POST', '/api/broadcast', { key: app.api_key, body: { room: 'orders', event: 'order-placed', data: { id: 1 } } });
  await reloadUntil(page, 'tr[data-status="failed"]', 'the failed delivery in the log');
  const row = 'tr[data-status="failed"]';
  assert.match(await page.textContent(row), /HTTP 500/);
  await page.click(`${row} details summary`);
  assert.match(await page.textContent(`${row} details`), /500/);
  await shot(page, '06-webhooks');
  fail = false;
  await page.click(`${row} button`);
  await reloadUntil(page, 'tr[data-status="succeeded"]', 'the retried delivery succeeded');
  assert.equal(received.length, 2, 'one failed attempt, one retry');
  assert.equal(await page.textContent('tr[data-status="succeeded"] details summary'), '2');
  // The test button sends a ping and shows its outcome.
  await page.click('section.webhook button:text("Send test")');
  await page.waitForSelector('.toast:text("Test sent")');
  assert.equal(received.length, 3);
  check();
  await ctx.close();
  receiver.close();
});

test('rooms, presence and analytics pages show the live state', async () => {
  const rc = client(hub.ws, { getToken: () => token(hub, app, { user_id: 'bob', user_info: { name: 'Bob' } }) });
  rc.connect();
  const sub = rc.subscribe('presence-lobby');
  await within(new Promise((resolve) => sub.on('subscribed', resolve)), 'bob in the lobby');
  const { ctx, page, check } = await context();
  await signIn(page, ADMIN);
  await page.goto(`${hub.http}/dashboard#/app/shop/rooms`);
  await page.waitForSelector('tr[data-room="presence-lobby"]');
  const cells = await page.$$eval('tr[data-room="presence-lobby"] td', (tds) => tds.map((td) => td.textContent));
  assert.deepEqual(cells.slice(1, 3), ['1', '1']);
  await page.click('tr[data-room="presence-lobby"]');
  await page.waitForSelector('td:text("bob")');
  assert.match(await page.textContent('.panel:has-text("Members of presence-lobby")'), /"name":"Bob"/);
  await shot(page, '07-rooms');
  rc.close();
  // The list follows: the room goes when its last subscriber leaves.
  await page.waitForSelector('tr[data-room="presence-lobby"]', { state: 'detached', timeout: 10000 });
  await api(hub, 'POST', '/api/broadcast', { key: app.api_key, body: { room: 'stats', event: 'counted', data: 1 } });
  await page.goto(`${hub.http}/dashboard#/app/shop/analytics`);
  await page.waitForSelector('.chart svg path.line');
  assert.equal(await page.$$eval('.chart', (c) => c.length), 3);
  const events = await page.textContent('.stat:has-text("Events") .value');
  assert.ok(Number(events.replace(/\D/g, '')) > 0, `events counted: ${events}`);
  await shot(page, '09-analytics');
  await page.goto(`${hub.http}/dashboard#/app/shop/overview`);
  await page.waitForSelector('.stats');
  await shot(page, '10-overview');
  check();
  await ctx.close();
});

test('the assets are served from the binary with a strict content security policy', async () => {
  for (const [path, type] of [['/dashboard', 'text/html'], ['/dashboard/app.js', 'text/javascript'], ['/dashboard/style.css', 'text/css'], ['/dashboard/icon.svg', 'image/svg+xml']]) {
    const res = await fetch(hub.http + path);
    assert.equal(res.status, 200, path);
    assert.ok(res.headers.get('content-type').startsWith(type), path);
    assert.match(res.headers.get('content-security-policy'), /default-src 'none'; script-src 'self'/);
    const text = await res.text();
    assert.ok(!/https?:\/\/(?!www\.w3\.org\/2000\/svg)/.test(text.replace(/https:\/\/example\.com\S*/g, '')), `${path} names no other host`);
  }
});
