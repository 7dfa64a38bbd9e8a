// The roomcast dashboard: a single page over the hub's own JSON API. The session is the
// HttpOnly `login_token` cookie; every state-changing call sends the session's CSRF token.
// No library, no request to any other host.
'use strict';

const APP_SCOPES = ['broadcast:write', 'tokens:write', 'tickets:write', 'apps:read', 'apps:write',
  'keys:write', 'webhooks:read', 'webhooks:write', 'analytics:read', 'rooms:read'];
const WEBHOOK_EVENTS = ['*', 'room-occupied', 'room-vacated', 'user-joined', 'user-left'];

const session = { key: null, csrf: null, apps: [] };
let leaving = []; // what the current page must stop (timers, event sources) when it is left

// ---- small helpers -------------------------------------------------------------------

/** Builds an element: h('td', {class: 'num'}, 'text', child). Text is never parsed as HTML. */
function h(tag, attrs, ...children) {
  const el = tag === 'svg' || attrs?.svg ? document.createElementNS('http://www.w3.org/2000/svg', tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false || k === 'svg') continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}
const s = (tag, attrs, ...children) => h(tag, { ...attrs, svg: true }, ...children);
const $ = (sel) => document.querySelector(sel);

class ApiError extends Error {
  constructor(message, status, code) { super(message); this.status = status; this.code = code; }
}

async function api(method, path, body) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && session.csrf) headers['X-CSRF-Token'] = session.csrf;
  const res = await fetch(path, {
    method, headers, credentials: 'same-origin',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = await res.json().catch(() => ({}));
  if (!res.ok) {
    if (res.status === 401 && session.key && path !== '/dashboard/login') {
      signedOut('Your session has ended. Sign in again.');
    }
    throw new ApiError(json.error || res.statusText, res.status, json.code);
  }
  return json;
}

function toast(text, bad) {
  const t = h('div', { class: bad ? 'toast bad' : 'toast' }, text);
  $('#toast').append(t);
  setTimeout(() => t.remove(), 3500);
}

const fmtTime = (iso) => iso ? new Date(iso).toLocaleString() : '—';
const fmtNum = (n) => (n ?? 0).toLocaleString();
const can = (scope) => session.key && (session.key.kind === 'admin' || session.key.scopes.includes(scope) || session.key.scopes.includes('admin:full'));
const isAdmin = () => session.key?.kind === 'admin';

function badge(text, tone) { return h('span', { class: `badge ${tone || ''}` }, text); }
function statusBadge(app) {
  if (app.deleted_at) return badge('deleted', 'bad');
  return app.status === 'enabled' ? badge('enabled', 'ok') : badge('disabled', 'warn');
}

function panel(title, actions, ...body) {
  return h('section', { class: 'panel' },
    h('header', {}, h('h2', {}, title), h('div', { class: 'actions' }, actions)),
    body);
}

/** A one-time secret, with a copy button. */
function secretBox(title, pairs) {
  return h('div', { class: 'callout secret', role: 'alert' },
    h('strong', {}, title),
    pairs.map(([label, value]) => h('div', { class: 'field' },
      h('span', { class: 'label' }, label),
      h('div', { class: 'secret-row' }, h('code', { class: 'secret-value' }, value),
        h('button', { type: 'button', class: 'small', onclick: () => copy(value) }, 'Copy')))));
}

async function copy(text) {
  try { await navigator.clipboard.writeText(text); toast('Copied'); } catch { toast('Select the text and copy it', true); }
}

function field(label, input, hint, wide) {
  return h('div', { class: wide ? 'field wide' : 'field' }, h('label', { for: input.id }, label), input, hint && h('small', {}, hint));
}

let ids = 0;
const input = (attrs) => h('input', { id: `f${++ids}`, type: 'text', ...attrs });

/** Runs a form's submit, showing the API's error under it. */
function onSubmit(form, errorBox, run) {
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    errorBox.textContent = '';
    const button = form.querySelector('button[type="submit"]');
    if (button) button.disabled = true;
    try { await run(); } catch (err) { errorBox.textContent = err.message; } finally { if (button) button.disabled = false; }
  });
}

// ---- sign-in -------------------------------------------------------------------------

function signedOut(message) {
  session.key = null; session.csrf = null;
  stopPage();
  $('#shell').hidden = true;
  $('#login').hidden = false;
  $('#login-error').textContent = message || '';
  $('#login-key').focus();
}

async function signedIn(answer) {
  session.key = answer.key;
  session.csrf = answer.csrf_token;
  $('#login').hidden = true;
  $('#shell').hidden = false;
  $('#who').textContent = `${answer.key.kind === 'admin' ? 'Admin key' : 'App key'} ${answer.key.key_id}`;
  await loadApps();
  if (!location.hash || location.hash === '#/' || location.hash === '#') {
    location.hash = isAdmin() ? '#/apps' : `#/app/${session.apps[0]?.app_id}/overview`;
  } else {
    route();
  }
}

async function loadApps() {
  const list = await api('GET', '/api/applications?limit=100&include_deleted=true');
  session.apps = list.applications;
}

$('#login-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  $('#login-error').textContent = '';
  try {
    const answer = await api('POST', '/dashboard/login', { key: $('#login-key').value.trim(), remember: $('#login-remember').checked });
    $('#login-key').value = '';
    await signedIn(answer);
  } catch (err) {
    $('#login-error').textContent = err.status === 429 ? 'Too many attempts; wait a minute.' : err.message;
  }
});

$('#logout').addEventListener('click', async () => {
  try { await api('POST', '/dashboard/logout'); } catch { /* signed out either way */ }
  signedOut('You are signed out.');
});

// ---- routing -------------------------------------------------------------------------

function stopPage() { leaving.forEach((stop) => stop()); leaving = []; }

const PAGES = {
  overview: { title: 'Overview', scope: null, render: overviewPage },
  settings: { title: 'Settings', scope: 'apps:read', render: settingsPage },
  keys: { title: 'API keys', scope: 'keys:write', render: keysPage },
  webhooks: { title: 'Webhooks', scope: 'webhooks:read', render: webhooksPage },
  rooms: { title: 'Rooms', scope: 'rooms:read', render: roomsPage },
  analytics: { title: 'Analytics', scope: 'analytics:read', render: analyticsPage },
  debug: { title: 'Debug console', scope: 'rooms:read', render: debugPage },
};

function nav(appId, page) {
  const links = [];
  if (isAdmin()) {
    links.push(h('a', { href: '#/apps', 'aria-current': page === 'apps' ? 'page' : null }, h('span', { class: 'dot' }), 'All apps'));
    if (!appId && session.apps.length) {
      links.push(h('div', { class: 'section' }, 'Apps'));
      for (const a of session.apps.filter((x) => !x.deleted_at).slice(0, 20)) {
        links.push(h('a', { href: `#/app/${a.app_id}/overview` }, h('span', { class: 'dot' }), a.name));
      }
    }
  }
  if (appId) {
    links.push(h('div', { class: 'section' }, appId));
    for (const [name, p] of Object.entries(PAGES)) {
      if (p.scope && !can(p.scope)) continue;
      links.push(h('a', { href: `#/app/${appId}/${name}`, 'aria-current': page === name ? 'page' : null }, h('span', { class: 'dot' }), p.title));
    }
  }
  $('#nav').replaceChildren(...links);
}

let routing = 0; // the newest navigation; a slower, older one must not draw over it

async function route() {
  if (!session.key) return;
  const mine = ++routing;
  stopPage();
  const parts = location.hash.replace(/^#\/?/, '').split('/');
  const view = $('#view');
  view.replaceChildren();
  try {
    if (parts[0] === 'app' && parts[1]) {
      const app = session.apps.find((a) => a.app_id === parts[1]);
      const page = PAGES[parts[2]] ? parts[2] : 'overview';
      nav(parts[1], page);
      $('#crumbs').textContent = app ? app.name : parts[1];
      $('#title').textContent = PAGES[page].title;
      document.title = `${PAGES[page].title} · ${parts[1]} · roomcast`;
      const shown = [await PAGES[page].render(parts[1], app)].flat();
      if (mine === routing) view.append(...shown);
    } else {
      nav(null, 'apps');
      $('#crumbs').textContent = 'roomcast';
      $('#title').textContent = 'Apps';
      document.title = 'Apps · roomcast';
      const shown = [await appsPage()].flat();
      if (mine === routing) view.append(...shown);
    }
  } catch (err) {
    if (mine === routing) view.replaceChildren(h('div', { class: 'callout error' }, err.message));
  }
}
window.addEventListener('hashchange', route);

// ---- apps ----------------------------------------------------------------------------

async function appsPage() {
  await loadApps();
  const errorBox = h('div', { class: 'form-error' });
  const created = h('div', { class: 'slot' });
  const appId = input({ name: 'app_id', placeholder: 'generated when empty', pattern: '[a-z0-9][a-z0-9-]{2,63}' });
  const name = input({ name: 'name', placeholder: 'My app', required: true });
  const form = h('form', { class: 'grid', id: 'create-app' },
    field('Name', name), field('App id', appId, 'a-z, 0-9 and -, 3 to 64 characters'),
    h('div', { class: 'form-actions' }, h('button', { class: 'primary', type: 'submit' }, 'Create app'), errorBox));
  onSubmit(form, errorBox, async () => {
    const body = { name: name.value.trim() };
    if (appId.value.trim()) body.app_id = appId.value.trim();
    const answer = await api('POST', '/api/applications', body);
    form.reset();
    await loadApps();
    created.replaceChildren(secretBox(`App ${answer.app.app_id} created. Copy its secret and key now: they are not shown again.`,
      [['App secret', answer.app_secret], ['API key', answer.api_key]]));
    rows.replaceChildren(...appRows());
  });
  const rows = h('tbody');
  function appRows() {
    if (!session.apps.length) return [h('tr', {}, h('td', { colspan: 6, class: 'empty' }, 'No apps yet: create the first one above.'))];
    return session.apps.map((a) => h('tr', { class: 'link', dataset: { app: a.app_id }, onclick: () => { location.hash = `#/app/${a.app_id}/overview`; } },
      h('td', {}, h('strong', {}, a.name), h('div', { class: 'muted mono' }, a.app_id)),
      h('td', {}, statusBadge(a)),
      h('td', { class: 'num' }, fmtNum(a.max_connections)),
      h('td', { class: 'num' }, `${fmtNum(a.rate_limit)}/min`),
      h('td', {}, h('div', { class: 'chips' }, a.client_events && h('span', { class: 'chip' }, 'client events'), a.pusher_clients && h('span', { class: 'chip' }, 'pusher'))),
      h('td', {}, fmtTime(a.created_at))));
  }
  rows.replaceChildren(...appRows());
  const out = [];
  if (can('apps:write') && isAdmin()) out.push(panel('New app', null, h('div', { class: 'body' }, form)), created);
  out.push(panel('Apps', h('span', { class: 'muted' }, `${session.apps.length} total`),
    h('table', {}, h('thead', {}, h('tr', {}, ['App', 'Status', 'Max connections', 'Rate limit', 'Features', 'Created'].map((t, i) => h('th', { class: i === 2 || i === 3 ? 'num' : null }, t)))), rows)));
  return out;
}

async function overviewPage(appId) {
  const shown = await api('GET', `/api/applications/${appId}?include_deleted=true`);
  const app = shown.app;
  const cards = [stat('Status', app.deleted_at ? 'Deleted' : app.status === 'enabled' ? 'Enabled' : 'Disabled', `since ${fmtTime(app.updated_at)}`)];
  if (can('analytics:read')) {
    const a = await api('GET', `/api/analytics?app_id=${appId}&period=24h`);
    cards.push(stat('Connections now', fmtNum(a.metrics.connections.current), `peak ${fmtNum(a.metrics.connections.peak)} in 24 h`),
      stat('Events, 24 h', fmtNum(a.metrics.events.total), `${fmtNum(a.metrics.events.delivered)} delivered`),
      stat('Users online', fmtNum(a.metrics.users.online), `${fmtNum(a.metrics.users.total)} seen in 24 h`));
  }
  const origin = location.origin;
  return [h('div', { class: 'stats' }, cards),
    panel('Connect', null, h('div', { class: 'body' },
      h('p', { class: 'hint' }, 'Browsers load the client from this hub and connect with a token your server makes with the app secret.'),
      h('pre', { class: 'mono' }, `import { Roomcast } from '${origin}/client/roomcast.js';\n\n`
        + `const rc = new Roomcast('${origin.replace(/^http/, 'ws')}/ws', {\n  getToken: async () => (await fetch('/your-backend/roomcast-token')).text(),\n});\n`
        + `rc.connect();\nrc.subscribe('chat').on('event', ({ event, data, offset }) => console.log(event, data, offset));`),
      h('p', { class: 'hint' }, 'Pusher libraries: key and app id ', h('code', {}, app.app_id), `, host ${location.hostname}, port ${location.port || (location.protocol === 'https:' ? 443 : 80)}`,
        app.pusher_clients ? '.' : ' (turn on Pusher clients in Settings for pusher-js).')))];
}

function stat(label, value, sub) {
  return h('div', { class: 'stat' }, h('div', { class: 'label' }, label), h('div', { class: 'value' }, value), sub && h('div', { class: 'sub' }, sub));
}

async function settingsPage(appId) {
  const { app } = await api('GET', `/api/applications/${appId}?include_deleted=true`);
  const editable = can('apps:write');
  const f = {
    name: input({ value: app.name, name: 'name' }),
    status: h('select', { id: `f${++ids}`, name: 'status' }, ['enabled', 'disabled'].map((v) => h('option', { value: v, selected: app.status === v }, v))),
    domains: h('textarea', { id: `f${++ids}`, name: 'allowed_domains', placeholder: 'example.com\n*.example.com' }, app.allowed_domains.join('\n')),
    rate: input({ type: 'number', min: 1, value: app.rate_limit, name: 'rate_limit' }),
    max: input({ type: 'number', min: 1, value: app.max_connections, name: 'max_connections' }),
    client: h('input', { type: 'checkbox', name: 'client_events', checked: app.client_events }),
    pusher: h('input', { type: 'checkbox', name: 'pusher_clients', checked: app.pusher_clients }),
    size: input({ type: 'number', min: 0, value: app.history.size, name: 'history_size' }),
    ttl: input({ type: 'number', min: 0, value: app.history.ttl_s, name: 'history_ttl_s' }),
  };
  const errorBox = h('div', { class: 'form-error' });
  const form = h('form', { class: 'grid', id: 'app-settings' },
    field('Name', f.name), field('Status', f.status),
    field('Max connections', f.max), field('Rate limit (API calls per minute)', f.rate),
    field('History: events kept per room', f.size, '0 keeps none; reconnecting clients then cannot recover'),
    field('History: seconds kept', f.ttl),
    field('Allowed origins', f.domains, 'One host per line; empty allows any origin.', true),
    h('div', { class: 'field wide' }, h('span', { class: 'label' }, 'Features'), h('div', { class: 'checks' },
      h('label', { class: 'check' }, f.client, 'Client events (clients publish to rooms)'),
      h('label', { class: 'check' }, f.pusher, 'Pusher clients on /app/{key}'))),
    editable && h('div', { class: 'form-actions' }, h('button', { class: 'primary', type: 'submit' }, 'Save changes'), errorBox));
  if (!editable) form.querySelectorAll('input, select, textarea').forEach((el) => { el.disabled = true; });
  onSubmit(form, errorBox, async () => {
    await api('PUT', `/api/applications/${appId}`, {
      name: f.name.value.trim(), status: f.status.value, rate_limit: Number(f.rate.value), max_connections: Number(f.max.value),
      allowed_domains: f.domains.value.split(/\s+/).filter(Boolean), client_events: f.client.checked, pusher_clients: f.pusher.checked,
      history: { size: Number(f.size.value), ttl_s: Number(f.ttl.value) },
    });
    await loadApps();
    toast('Settings saved');
  });
  const out = [panel('Settings', statusBadge(app), h('div', { class: 'body' }, form))];
  if (editable && isAdmin()) {
    const secret = h('div');
    const actions = h('div', { class: 'row' },
      app.deleted_at
        ? h('button', { type: 'button', class: 'primary', onclick: () => act('POST', `/api/applications/${appId}/restore`, undefined, 'App restored') }, 'Restore app')
        : [h('button', { type: 'button', onclick: () => regenerate() }, 'Regenerate secret'),
          h('button', { type: 'button', class: 'danger', onclick: () => { if (confirm(`Delete ${appId}? It can be restored for a while.`)) act('DELETE', `/api/applications/${appId}`, undefined, 'App deleted'); } }, 'Delete app')]);
    async function regenerate() {
      if (!confirm('Tokens signed with the old secret stop working. Regenerate?')) return;
      try {
        const answer = await api('POST', `/api/applications/${appId}/regenerate-secret`, {});
        secret.replaceChildren(secretBox('The new app secret: copy it now.', [['App secret', answer.app_secret]]));
      } catch (err) { toast(err.message, true); }
    }
    out.push(panel('Lifecycle', null, h('div', { class: 'body' }, h('p', { class: 'hint' }, 'A deleted app stops at once and can be restored until it is purged.'), actions, secret)));
  }
  return out;
}

async function act(method, path, body, done) {
  try { await api(method, path, body); toast(done); await loadApps(); route(); } catch (err) { toast(err.message, true); }
}

// ---- keys ----------------------------------------------------------------------------

async function keysPage(appId) {
  const { keys } = await api('GET', `/api/applications/${appId}/keys`);
  const errorBox = h('div', { class: 'form-error' });
  const created = h('div', { class: 'slot' });
  const name = input({ name: 'key_name', placeholder: 'CI publisher', required: true });
  const boxes = APP_SCOPES.map((scope) => h('label', { class: 'check' }, h('input', { type: 'checkbox', name: 'scope', value: scope, checked: scope === 'broadcast:write' }), h('code', {}, scope)));
  const expiry = h('select', { id: `f${++ids}`, name: 'expires_in' },
    [['', 'Never'], ['86400', '1 day'], ['2592000', '30 days'], ['7776000', '90 days'], ['31536000', '1 year']].map(([v, t]) => h('option', { value: v }, t)));
  const form = h('form', { class: 'grid', id: 'create-key' }, field('Name', name), field('Expires', expiry),
    h('div', { class: 'field wide' }, h('span', { class: 'label' }, 'Scopes'), h('div', { class: 'checks' }, boxes)),
    h('div', { class: 'form-actions' }, h('button', { class: 'primary', type: 'submit' }, 'Create key'), errorBox));
  onSubmit(form, errorBox, async () => {
    const scopes = boxes.map((b) => b.querySelector('input')).filter((i) => i.checked).map((i) => i.value);
    const body = { name: name.value.trim(), scopes };
    if (expiry.value) body.expires_in = Number(expiry.value);
    const answer = await api('POST', `/api/applications/${appId}/keys`, body);
    route().then(() => $('#view').prepend(secretBox(`Key ${answer.key.key_id} created. Copy it now: it is not shown again.`, [['API key', answer.api_key]])));
  });
  const rows = keys.map((k) => h('tr', { dataset: { key: k.key_id } },
    h('td', {}, h('strong', {}, k.name), ' ', k.primary && badge('primary', 'info'), h('div', { class: 'muted mono' }, k.key_prefix)),
    h('td', {}, h('div', { class: 'chips' }, k.scopes.map((sc) => h('span', { class: 'chip' }, sc)))),
    h('td', {}, fmtTime(k.created_at)),
    h('td', {}, k.expires_at ? fmtTime(k.expires_at) : 'never'),
    h('td', {}, k.last_used_at ? fmtTime(k.last_used_at) : 'never'),
    h('td', { class: 'num' }, !k.primary && h('button', { type: 'button', class: 'small danger', onclick: async () => {
      if (!confirm(`Revoke ${k.name}? Calls with it fail at once.`)) return;
      act('DELETE', `/api/applications/${appId}/keys/${k.key_id}`, undefined, 'Key revoked');
    } }, 'Revoke'))));
  return [panel('New key', null, h('div', { class: 'body' }, form)), created,
    panel('Keys', h('span', { class: 'muted' }, `${keys.length} active`), h('table', {},
      h('thead', {}, h('tr', {}, ['Key', 'Scopes', 'Created', 'Expires', 'Last used', ''].map((t) => h('th', {}, t)))),
      h('tbody', {}, rows.length ? rows : h('tr', {}, h('td', { colspan: 6, class: 'empty' }, 'No keys.')))))];
}

// ---- webhooks ------------------------------------------------------------------------

function webhookForm(appId, hook, done) {
  const url = input({ type: 'url', name: 'url', value: hook?.url || '', placeholder: 'https://example.com/roomcast', required: true });
  const events = input({ name: 'events', value: (hook?.events || ['*']).join(', ') });
  const format = h('select', { id: `f${++ids}`, name: 'format' }, ['roomcast', 'pusher'].map((v) => h('option', { value: v, selected: (hook?.format || 'roomcast') === v }, v)));
  const enabled = h('input', { type: 'checkbox', name: 'enabled', checked: hook ? hook.enabled : true });
  const errorBox = h('div', { class: 'form-error' });
  const form = h('form', { class: 'grid', id: hook ? `edit-webhook-${hook.id}` : 'create-webhook' }, field('URL', url, null, true),
    field('Events', events, `Comma separated: ${WEBHOOK_EVENTS.join(', ')} or your event names`), field('Format', format),
    h('div', { class: 'field' }, h('span', { class: 'label' }, 'State'), h('label', { class: 'check' }, enabled, 'Enabled')),
    h('div', { class: 'form-actions' }, h('button', { class: 'primary', type: 'submit' }, hook ? 'Save webhook' : 'Add webhook'), errorBox));
  onSubmit(form, errorBox, async () => {
    const body = { url: url.value.trim(), events: events.value.split(',').map((e) => e.trim()).filter(Boolean), format: format.value, enabled: enabled.checked };
    const answer = hook ? await api('PATCH', `/api/webhooks/${hook.id}`, body) : await api('POST', '/api/webhooks', { ...body, app_id: appId });
    done(answer);
  });
  return form;
}

async function webhooksPage(appId) {
  const { webhooks } = await api('GET', `/api/webhooks?app_id=${appId}`);
  const writable = can('webhooks:write');
  const out = [];
  if (writable) {
    out.push(panel('New webhook', null, h('div', { class: 'body' }, webhookForm(appId, null, (answer) => {
      route().then(() => $('#view').prepend(secretBox('Webhook added. Its signing secret is shown once.', [['Signing secret', answer.secret]])));
    }))));
  }
  if (!webhooks.length) out.push(panel('Webhooks', null, h('div', { class: 'empty' }, 'No webhooks yet.')));
  for (const w of webhooks) {
    const log = h('div');
    const editBox = h('div');
    const state = w.enabled ? badge('enabled', 'ok') : badge(w.disabled_reason ? `disabled: ${w.disabled_reason}` : 'disabled', 'warn');
    const actions = [
      writable && h('button', { type: 'button', class: 'small', onclick: async () => {
        try { const r = await api('POST', `/api/webhooks/${w.id}/test`, {}); toast(`Test sent: ${r.delivery?.status || 'queued'}`); showLog(); } catch (err) { toast(err.message, true); }
      } }, 'Send test'),
      writable && h('button', { type: 'button', class: 'small', onclick: () => editBox.replaceChildren(webhookForm(appId, w, () => { toast('Webhook saved'); route(); })) }, 'Edit'),
      writable && h('button', { type: 'button', class: 'small danger', onclick: () => { if (confirm('Delete this webhook?')) act('DELETE', `/api/webhooks/${w.id}`, undefined, 'Webhook deleted'); } }, 'Delete'),
    ];
    async function showLog() {
      const { deliveries } = await api('GET', `/api/webhooks/${w.id}/deliveries?limit=50`);
      log.replaceChildren(h('table', { class: 'deliveries' },
        h('thead', {}, h('tr', {}, ['When', 'Event', 'Room', 'Status', 'Attempts', 'Last answer', ''].map((t) => h('th', {}, t)))),
        h('tbody', {}, deliveries.length ? deliveries.map((d) => deliveryRow(w, d, writable, showLog)) : h('tr', {}, h('td', { colspan: 7, class: 'empty' }, 'No deliveries yet.')))));
    }
    out.push(h('section', { class: 'panel webhook', dataset: { webhook: w.id } },
      h('header', {}, h('div', {}, h('h2', { class: 'mono' }, w.url), h('div', { class: 'row muted' }, state, badge(w.format), h('div', { class: 'chips' }, w.events.map((e) => h('span', { class: 'chip' }, e))),
        w.consecutive_failures ? h('span', {}, `${w.consecutive_failures} failed ${w.consecutive_failures === 1 ? 'attempt' : 'attempts'} in a row`) : null)),
      h('div', { class: 'actions' }, actions)),
      h('div', { class: 'body' }, editBox, log)));
    await showLog();
  }
  return out;
}

function deliveryRow(hook, d, writable, refresh) {
  const tone = { succeeded: 'ok', failed: 'bad', retrying: 'warn', pending: 'info' }[d.status] || '';
  const attempts = h('details', {}, h('summary', {}, `${d.attempts}`),
    h('ol', { class: 'attempts' }, d.attempt_log.map((a) => h('li', {},
      h('span', { class: 'mono' }, new Date(a.at).toLocaleTimeString()), ' · ',
      a.response_code != null ? `HTTP ${a.response_code}` : 'no answer',
      a.latency_ms != null ? ` · ${a.latency_ms} ms` : '',
      a.error ? h('span', { class: 'muted' }, ` · ${a.error}`) : null))));
  return h('tr', { dataset: { delivery: d.delivery_id, status: d.status } },
    h('td', {}, fmtTime(d.created_at)), h('td', { class: 'mono' }, d.event), h('td', { class: 'mono' }, d.room || '—'),
    h('td', {}, badge(d.status, tone)), h('td', {}, attempts),
    h('td', {}, d.response_code ? `HTTP ${d.response_code}` : (d.error || '—'), d.latency_ms != null ? h('span', { class: 'muted' }, ` · ${d.latency_ms} ms`) : null),
    h('td', { class: 'num' }, writable && d.status !== 'succeeded' && h('button', { type: 'button', class: 'small', onclick: async () => {
      try { await api('POST', `/api/webhooks/${hook.id}/deliveries/${d.delivery_id}/retry`, {}); toast('Retry queued'); setTimeout(refresh, 400); } catch (err) { toast(err.message, true); }
    } }, 'Retry')));
}

// ---- rooms ---------------------------------------------------------------------------

async function roomsPage(appId) {
  const rows = h('tbody');
  const members = h('div');
  const updated = h('span', { class: 'live on' }, 'Live');
  async function refresh() {
    const { rooms } = await api('GET', `/api/rooms?app_id=${appId}&limit=100`);
    rows.replaceChildren(...(rooms.length ? rooms.map((r) => h('tr', { class: r.room.startsWith('presence-') ? 'link' : null, dataset: { room: r.room },
      onclick: r.room.startsWith('presence-') ? () => showMembers(r.room) : null },
    h('td', { class: 'mono' }, r.room), h('td', { class: 'num' }, fmtNum(r.subscriber_count)),
    h('td', { class: 'num' }, r.user_count == null ? '—' : fmtNum(r.user_count)), h('td', {}, fmtTime(r.occupied_since)))) : [h('tr', {}, h('td', { colspan: 4, class: 'empty' }, 'No occupied rooms right now.'))]));
  }
  async function showMembers(room) {
    const answer = await api('GET', `/api/rooms/${encodeURIComponent(room)}/presence?app_id=${appId}&limit=100`);
    members.replaceChildren(panel(`Members of ${room}`, h('span', { class: 'muted' }, `${answer.members.length} shown`),
      h('table', {}, h('thead', {}, h('tr', {}, h('th', {}, 'User'), h('th', {}, 'Info'))),
        h('tbody', {}, answer.members.map((m) => h('tr', {}, h('td', { class: 'mono' }, m.user_id), h('td', { class: 'mono' }, JSON.stringify(m.user_info ?? null))))))));
  }
  await refresh();
  const timer = setInterval(() => refresh().catch(() => {}), 2000);
  leaving.push(() => clearInterval(timer));
  return [panel('Occupied rooms', updated, h('table', {}, h('thead', {}, h('tr', {}, h('th', {}, 'Room'), h('th', { class: 'num' }, 'Subscribers'), h('th', { class: 'num' }, 'Users'), h('th', {}, 'Occupied since'))), rows)), members];
}

// ---- analytics -----------------------------------------------------------------------

const when = (t) => new Date(t).toLocaleString(undefined, { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });

/** A line chart of `points` ({t, v}) as SVG, drawn here. */
function chart(title, points) {
  const W = 480; const H = 240; const L = 54; const B = 28; const T = 12;
  const max = Math.max(1, ...points.map((p) => p.v));
  const t0 = points[0]?.t ?? 0; const t1 = points[points.length - 1]?.t ?? 1;
  const x = (t) => L + ((t - t0) / Math.max(1, t1 - t0)) * (W - L - 8);
  const y = (v) => T + (1 - v / max) * (H - T - B);
  const line = points.map((p, i) => `${i ? 'L' : 'M'}${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`).join(' ');
  const area = points.length ? `${line} L${x(t1).toFixed(1)},${y(0)} L${x(t0).toFixed(1)},${y(0)} Z` : '';
  const ticks = [0, 0.5, 1].map((f) => Math.round(max * f));
  const svg = s('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': title },
    ticks.map((v) => [s('line', { class: 'axis', x1: L, x2: W, y1: y(v), y2: y(v) }), s('text', { class: 'grid-label', x: L - 8, y: y(v) + 5, 'text-anchor': 'end' }, fmtNum(v))]),
    s('path', { class: 'area', d: area }), s('path', { class: 'line', d: line }),
    points.length ? [s('text', { class: 'grid-label', x: L, y: H - 6 }, when(t0)), s('text', { class: 'grid-label', x: W - 8, y: H - 6, 'text-anchor': 'end' }, when(t1))] : null);
  return h('section', { class: 'panel chart' }, h('header', {}, h('h2', {}, title)), h('div', { class: 'body' }, svg));
}

async function analyticsPage(appId) {
  const period = sessionStorage.getItem('period') || '24h';
  const a = await api('GET', `/api/analytics?app_id=${appId}&period=${period}`);
  const pick = h('select', { id: 'period', 'aria-label': 'Period', onchange: (e) => { sessionStorage.setItem('period', e.target.value); route(); } },
    ['1h', '24h', '7d', '30d'].map((p) => h('option', { value: p, selected: p === period }, `Last ${p}`)));
  const m = a.metrics;
  return [h('div', { class: 'spread' }, h('span', { class: 'muted' }, `Updated ${new Date(a.timestamp).toLocaleTimeString()}`), pick),
    h('div', { class: 'stats' },
      stat('Connections now', fmtNum(m.connections.current), `peak ${fmtNum(m.connections.peak)} · ${fmtNum(m.connections.total)} opened`),
      stat('Events', fmtNum(m.events.total), `${fmtNum(m.events.broadcasts)} broadcasts · ${fmtNum(m.events.client_events)} client`),
      stat('Delivered', fmtNum(m.events.delivered), 'frames to subscribers'),
      stat('Users', fmtNum(m.users.online), `online now · ${fmtNum(m.users.total)} in the period`),
      stat('Webhook deliveries', fmtNum(m.webhooks.delivered), `succeeded · ${fmtNum(m.webhooks.failed)} failed for good`)),
    h('div', { class: 'charts' },
      chart('Connections', a.series.map((p) => ({ t: p.t, v: p.connections }))),
      chart('Events published', a.series.map((p) => ({ t: p.t, v: p.events }))),
      chart('Events delivered', a.series.map((p) => ({ t: p.t, v: p.delivered }))))];
}

// ---- debug console -------------------------------------------------------------------

function debugPage(appId) {
  const room = input({ name: 'debug_room', placeholder: 'all rooms' });
  const filter = input({ name: 'debug_filter', placeholder: 'filter: event, room, user…' });
  const status = h('span', { class: 'live', id: 'debug-status' }, 'Connecting…');
  const body = h('tbody');
  const pauseButton = h('button', { type: 'button', id: 'debug-pause' }, 'Pause');
  let source = null; let paused = false; let held = [];
  const MAX_ROWS = 500;

  function matches(ev) {
    const q = filter.value.trim().toLowerCase();
    return !q || JSON.stringify(ev).toLowerCase().includes(q);
  }
  function row(ev) {
    const detail = ev.data !== undefined && ev.data !== null ? JSON.stringify(ev.data) : [ev.user_id && `user ${ev.user_id}`, ev.connection_id].filter(Boolean).join(' · ');
    return h('tr', { class: 'fresh', dataset: { type: ev.type } },
      h('td', { class: 'mono' }, new Date(ev.at).toLocaleTimeString(undefined, { hour12: false }) + '.' + String(ev.at % 1000).padStart(3, '0')),
      h('td', {}, h('span', { class: `badge type-${ev.type}` }, ev.type.replace('_', ' '))),
      h('td', { class: 'mono' }, ev.room), h('td', { class: 'mono' }, ev.event || ''),
      h('td', { class: 'num mono' }, ev.offset ? ev.offset : ''), h('td', { class: 'data', title: detail }, detail));
  }
  function show(ev) {
    if (!matches(ev)) return;
    body.prepend(row(ev));
    while (body.children.length > MAX_ROWS) body.lastChild.remove();
    empty.hidden = true;
  }
  function connect() {
    if (source) source.close();
    const q = new URLSearchParams({ app_id: appId });
    if (room.value.trim()) q.set('room', room.value.trim());
    source = new EventSource(`/dashboard/debug?${q}`);
    status.className = 'live'; status.textContent = 'Connecting…';
    source.addEventListener('hello', () => { status.className = paused ? 'live paused' : 'live on'; status.textContent = paused ? 'Paused' : 'Live'; });
    source.addEventListener('lost', (e) => toast(`The console fell behind: ${JSON.parse(e.data).events} events not shown`, true));
    source.onmessage = (e) => { const ev = JSON.parse(e.data); if (paused) held.push(ev); else show(ev); };
    source.onerror = () => { status.className = 'live'; status.textContent = 'Reconnecting…'; };
  }
  pauseButton.addEventListener('click', () => {
    paused = !paused;
    pauseButton.textContent = paused ? 'Resume' : 'Pause';
    status.className = paused ? 'live paused' : 'live on'; status.textContent = paused ? `Paused` : 'Live';
    if (!paused) { held.forEach(show); held = []; }
  });
  const watchForm = h('form', { class: 'console-bar', id: 'debug-watch' }, field('Room', room), field('Filter', filter),
    h('button', { type: 'submit', class: 'primary' }, 'Watch'), pauseButton,
    h('button', { type: 'button', onclick: () => { body.replaceChildren(); empty.hidden = false; } }, 'Clear'), status);
  watchForm.addEventListener('submit', (e) => { e.preventDefault(); body.replaceChildren(); connect(); });
  const empty = h('div', { class: 'empty', id: 'debug-empty' }, 'Waiting for events… publish one below, or connect a client.');
  connect();
  leaving.push(() => source && source.close());

  const out = [panel('Live events', null, h('div', { class: 'body' }, watchForm),
    h('div', { class: 'log' }, h('table', { id: 'debug-log' }, h('thead', {}, h('tr', {}, ['Time', 'Type', 'Room', 'Event', 'Offset', 'Details'].map((t, i) => h('th', { class: i === 4 ? 'num' : null }, t)))), body), empty))];
  if (can('broadcast:write')) {
    const pRoom = input({ name: 'publish_room', value: 'debug', required: true });
    const pEvent = input({ name: 'publish_event', value: 'test-event', required: true });
    const pData = h('textarea', { id: `f${++ids}`, name: 'publish_data' }, '{"hello": "world"}');
    const errorBox = h('div', { class: 'form-error' });
    const form = h('form', { class: 'grid', id: 'debug-publish' }, field('Room', pRoom), field('Event', pEvent), field('Data (JSON)', pData, null, true),
      h('div', { class: 'form-actions' }, h('button', { class: 'primary', type: 'submit' }, 'Publish'), errorBox));
    onSubmit(form, errorBox, async () => {
      let data;
      try { data = JSON.parse(pData.value || 'null'); } catch (err) { throw new Error(`Data is not JSON: ${err.message}`); }
      const r = await api('POST', '/api/broadcast', { app_id: appId, room: pRoom.value.trim(), event: pEvent.value.trim(), data });
      toast(`Published at offset ${r.offset} to ${r.subscriber_count} subscribers`);
    });
    out.push(panel('Publish a test event', null, h('div', { class: 'body' }, form)));
  }
  return out;
}

// ---- start ---------------------------------------------------------------------------

(async () => {
  try { await signedIn(await api('GET', '/dashboard/session')); } catch { signedOut(); }
})();
