// What the client's tests run against: the real roomcast binary (built by `cargo test` or
// `cargo build`; `HUB_BIN` picks another), real redis-server processes, and a TCP proxy
// that the tests use to cut, stall and redirect connections. Loopback addresses only.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import WebSocket from 'ws';

import { Roomcast } from '../src/roomcast.js';

export const BIN = process.env.HUB_BIN ?? join(import.meta.dirname, '../../../target/debug/roomcast');
export const ADMIN = 'rc_admin_ClientTests0_' + 'a'.repeat(32);
/** How long any awaited step may take before the test fails. */
export const WAIT = 15000;

const cleanups = [];
/** Has `fn` run by {@link cleanup} (hubs, proxies, Redis, clients). */
export function atEnd(fn) {
  cleanups.push(fn);
}
/** Ends what the tests started; each test file calls it after its tests, and it runs at exit. */
export function cleanup() {
  for (const fn of cleanups.splice(0).reverse()) {
    try {
      fn();
    } catch {
      // Best effort.
    }
  }
}
process.on('exit', cleanup);

/** A port nobody listens on right now. */
export async function freePort() {
  const server = net.createServer().listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address();
  server.close();
  await once(server, 'close');
  return port;
}

/**
 * Starts a hub process: `port` 0 for any, `dir` to share a store between runs or nodes, `env`
 * for more settings. Resolves once it listens.
 */
export async function startHub({ port = 0, dir, env = {} } = {}) {
  dir ??= mkdtempSync(join(tmpdir(), 'roomcast-client-'));
  const child = spawn(BIN, [], {
    cwd: dir,
    env: {
      ...process.env,
      ROOMCAST_SERVER__LISTEN: `127.0.0.1:${port}`,
      ROOMCAST_ADMIN_KEY: ADMIN,
      ROOMCAST_STORE__PATH: join(dir, 'roomcast.db'),
      ROOMCAST_LOG__LEVEL: 'warn',
      ROOMCAST_LIMITS__UPGRADE_RATE_LIMIT: '0',
      // The tests mint a token for every connection, all from one address.
      ROOMCAST_LIMITS__IP_RATE_LIMIT: '100000',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const exited = once(child, 'exit');
  const lines = createInterface({ input: child.stdout });
  const addr = await within(
    (async () => {
      for await (const line of lines) {
        const m = line.match(/^roomcast listening on http:\/\/(\S+)$/);
        if (m) return m[1];
      }
      throw new Error('the hub exited before it listened');
    })(),
    'the hub to listen',
  );
  lines.on('line', () => {});
  const hub = {
    addr,
    dir,
    child,
    http: `http://${addr}`,
    ws: `ws://${addr}/ws`,
    /** Stops it with `signal` and waits for it to exit. */
    async stop(signal = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      await exited;
    },
  };
  atEnd(() => child.kill('SIGKILL'));
  return hub;
}

/** Starts redis-server on a free port; `stop()` kills it. */
export async function startRedis() {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'roomcast-redis-'));
  const child = spawn('redis-server', ['--bind', '127.0.0.1', '--port', String(port), '--save', '', '--appendonly', 'no'], {
    cwd: dir,
    stdio: 'ignore',
  });
  atEnd(() => {
    child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });
  await within(
    (async () => {
      for (;;) {
        const ok = await new Promise((resolve) => {
          const s = net.connect(port, '127.0.0.1', () => resolve(s.end() && true)).on('error', () => resolve(false));
        });
        if (ok) return;
        await new Promise((r) => setTimeout(r, 50));
      }
    })(),
    'redis-server to listen',
  );
  return { url: `redis://127.0.0.1:${port}`, stop: () => child.kill('SIGKILL') };
}

/**
 * Starts `ids.length` hubs as one cluster: one Redis (started here), one shared store. Resolves
 * with `{redis, nodes}`, the nodes in the order of `ids`.
 */
export async function startCluster(ids) {
  const redis = await startRedis();
  const shared = mkdtempSync(join(tmpdir(), 'roomcast-cluster-'));
  const nodes = [];
  for (const id of ids) {
    nodes.push(
      await startHub({
        env: {
          ROOMCAST_STORE__PATH: join(shared, 'roomcast.db'),
          ROOMCAST_STORE__RELOAD_INTERVAL_MS: '100',
          ROOMCAST_CLUSTER__REDIS_URL: redis.url,
          ROOMCAST_CLUSTER__NODE_ID: id,
        },
      }),
    );
  }
  return { redis, nodes };
}

/** An HTTP call to `hub`; resolves with the parsed answer, or throws on a non-2xx status. */
export async function api(hub, method, path, { body, admin = false, key } = {}) {
  const headers = { 'content-type': 'application/json' };
  if (admin) headers['x-admin-api-key'] = ADMIN;
  if (key) headers['x-app-api-key'] = key;
  const res = await fetch(hub.http + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

/** Creates an app; resolves with `{app_id, app_secret, api_key, …}`. */
export async function createApp(hub, body) {
  const created = await api(hub, 'POST', '/api/applications', { body, admin: true });
  return { ...created.app, app_secret: created.app_secret, api_key: created.api_key };
}

/** A client token for `app` from the hub's token route. */
export async function token(hub, app, payload = {}, expiresIn) {
  const body = { app_id: app.app_id, app_secret: app.app_secret, payload };
  if (expiresIn) body.expires_in = expiresIn;
  return (await api(hub, 'POST', '/api/token', { body })).token;
}

/** Broadcasts one event; resolves with the hub's result. */
export function broadcast(hub, app, room, event, data) {
  return api(hub, 'POST', '/api/broadcast', { key: app.api_key, body: { room, event, data } });
}

/** A client on `url` with the `ws` package as its WebSocket (Node 20 has no global one). */
export function client(url, options) {
  const rc = new Roomcast(url, { WebSocket, minDelayMs: 50, ...options });
  atEnd(() => rc.close());
  return rc;
}

/** Resolves with the arguments of the next `name` event of `emitter` that `accept` takes. */
export function next(emitter, name, accept = () => true, what = name) {
  return within(
    new Promise((resolve) => {
      const stop = emitter.on(name, (...args) => {
        if (accept(...args)) {
          stop();
          resolve(args);
        }
      });
    }),
    what,
  );
}

/** `promise`, or a failure naming `what` after WAIT. */
export function within(promise, what, ms = WAIT) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * A TCP proxy on 127.0.0.1 in front of `targets` (tried in order on each new connection):
 * `cut()` ends every connection through it at once, `stall()` stops forwarding without closing
 * anything, `targets` may be changed, and `connections` counts what it accepted.
 */
export async function proxy(targets) {
  const open = new Set();
  const state = { targets, connections: 0 };
  const server = net.createServer((inbound) => {
    state.connections++;
    const pair = { inbound, outbound: null };
    open.add(pair);
    inbound.on('error', () => {});
    inbound.on('close', () => {
      pair.outbound?.destroy();
      open.delete(pair);
    });
    inbound.pause();
    const dial = (i) => {
      if (i >= state.targets.length) return inbound.destroy();
      const [host, port] = state.targets[i].split(':');
      const outbound = net.connect(Number(port), host);
      outbound.once('error', () => (pair.outbound ? inbound.destroy() : dial(i + 1)));
      outbound.once('connect', () => {
        pair.outbound = outbound;
        outbound.on('error', () => inbound.destroy());
        outbound.on('close', () => inbound.destroy());
        for (const [from, to] of [[inbound, outbound], [outbound, inbound]]) {
          from.on('data', (chunk) => pair.stalled || to.write(chunk));
        }
        inbound.resume();
      });
    };
    dial(0);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const relay = Object.assign(state, {
    addr: `127.0.0.1:${server.address().port}`,
    /** Ends every connection through the proxy at once, as a network change would. */
    cut() {
      for (const pair of open) {
        pair.inbound.destroy();
        pair.outbound?.destroy();
      }
      open.clear();
    },
    /** Stops forwarding on every open connection, closing nothing (a dead link). */
    stall() {
      for (const pair of open) pair.stalled = true;
    },
    close() {
      this.cut();
      server.close();
    },
  });
  atEnd(() => relay.close());
  return relay;
}
