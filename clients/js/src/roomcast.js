// roomcast-client: the client of the roomcast hub for browsers and Node 20+ (docs/PROTOCOL.md).
// It reconnects with backoff, resubscribes with `since`, and hands each room event to the app
// once and in order, or says `gap` when the hub no longer has what was missed.

/** @typedef {'connecting' | 'connected' | 'disconnected' | 'closed'} State */
/** @typedef {{event: string, data: any, offset: number, timestamp: number}} RoomEvent */
/** @typedef {{user_id: string, user_info: any}} Member */
/** @typedef {Error & {code: string}} RoomcastError */
/** @typedef {{code: number, reason: string}} CloseInfo */
/** @typedef {{offset: number, epoch: string}} Position */
/**
 * A client credential: a JWT, a one-time ticket (`tk_…`, from `POST /api/tickets`), or either
 * named explicitly.
 * @typedef {string | {token: string} | {ticket: string}} Credential
 */
/**
 * @typedef {object} Options
 * @property {string} [token] a fixed credential, used for every connection
 * @property {() => Credential | Promise<Credential>} [getToken] called before each (re)connection
 * @property {any} [WebSocket] a WebSocket class, where there is no global one (Node 20: `ws`)
 * @property {number} [minDelayMs] the first reconnect waits up to this (500)
 * @property {number} [maxDelayMs] no reconnect waits longer than this (20000)
 */

const AT_ONCE = [1012, 4008];
const OPEN = 1;

/** @param {string} code @param {string} message @returns {RoomcastError} */
function fail(code, message) {
  return Object.assign(new Error(message), { code });
}

/**
 * Named events with typed arguments; a throwing handler neither stops the others nor the client.
 * @template {Record<string, any[]>} E
 */
class Emitter {
  constructor() {
    /** @internal @type {{[K in keyof E]?: Set<(...args: E[K]) => void>}} */
    this._on = {};
  }

  /**
   * Calls `fn` on each `name` event; returns a function that stops it.
   * @template {keyof E & string} K
   * @param {K} name
   * @param {(...args: E[K]) => void} fn
   * @returns {() => void}
   */
  on(name, fn) {
    (this._on[name] ??= new Set()).add(fn);
    return () => this.off(name, fn);
  }

  /**
   * @template {keyof E & string} K
   * @param {K} name
   * @param {(...args: E[K]) => void} fn
   */
  off(name, fn) {
    this._on[name]?.delete(fn);
  }

  /**
   * @internal
   * @template {keyof E & string} K
   * @param {K} name
   * @param {E[K]} args
   */
  _emit(name, ...args) {
    for (const fn of this._on[name] ?? []) {
      try {
        fn(...args);
      } catch (e) {
        queueMicrotask(() => {
          throw e;
        });
      }
    }
  }
}

/**
 * One room of a {@link Roomcast} client, kept subscribed across reconnects.
 * @extends {Emitter<{event: [RoomEvent], subscribed: [], recovered: [], gap: [string], error: [RoomcastError]}>}
 */
export class Subscription extends Emitter {
  /**
   * @param {Roomcast} client
   * @param {string} room
   * @param {Position} [since]
   */
  constructor(client, room, since) {
    super();
    this.room = room;
    /** @type {'subscribing' | 'subscribed' | 'unsubscribed'} */
    this.state = 'subscribing';
    /** The offset of the last event handed to the app (or of the last `subscribed`). */
    this.offset = since?.offset ?? -1;
    /** The epoch `offset` belongs to; `null` until first subscribed. */
    this.epoch = since?.epoch ?? null;
    /** Presence rooms: how many members the room has. */
    this.memberCount = 0;
    /** @internal */
    this._client = client;
    /** @internal @type {Map<string, Member>} */
    this._members = new Map();
    // Offsets of this client's own events: never handed back, not even in a replay.
    /** @internal @type {Set<number>} */
    this._own = new Set();
    // The `subscribed` offset: events up to it were replayed, and the member list has them.
    /** @internal */
    this._mark = 0;
    // While recovering: the offset that completes the replay.
    /** @internal */
    this._until = 0;
  }

  /** Presence rooms: the members, kept current. @returns {Member[]} */
  members() {
    return [...this._members.values()];
  }

  /**
   * Sends a client event to the room's other subscribers (the app must allow client events
   * and the token grant `can_publish`); resolves with the offset it took.
   * @param {string} event
   * @param {any} [data]
   * @returns {Promise<{offset: number}>}
   */
  publish(event, data = null) {
    return new Promise((resolve, reject) => {
      if (this.state !== 'subscribed') {
        reject(fail('not_subscribed', `not subscribed to ${this.room} now`));
        return;
      }
      this._client._request({ type: 'publish', room: this.room, event, data }, (f) => {
        if (!f) reject(fail('disconnected', 'the connection closed before the hub answered'));
        else if (f.type === 'error') {
          const error = fail(f.code, f.message);
          this._emit('error', error);
          reject(error);
        } else {
          this._own.add(f.offset);
          resolve({ offset: f.offset });
        }
      });
    });
  }

  /** Leaves the room. */
  unsubscribe() {
    const client = this._client;
    if (client._subs.get(this.room) !== this) return;
    client._subs.delete(this.room);
    this.state = 'unsubscribed';
    if (client.state === 'connected') client._request({ type: 'unsubscribe', room: this.room }, () => {});
  }

  /** @internal Subscribes on the current connection, with `since` once there is a position. */
  _send() {
    this.state = 'subscribing';
    const since = this.epoch === null ? undefined : { offset: this.offset, epoch: this.epoch };
    this._client._request({ type: 'subscribe', room: this.room, since }, (f) => this._answer(f, since));
  }

  /**
   * @internal
   * @param {any} f
   * @param {Position} [since]
   */
  _answer(f, since) {
    const client = this._client;
    if (!f || client._subs.get(this.room) !== this) return;
    if (f.type === 'error') {
      this._emit('error', fail(f.code, f.message));
      // Passing refusals are asked again; the others when the client next connects.
      if (f.code === 'unavailable' || f.code === 'rate_limited') {
        setTimeout(() => client.state === 'connected' && this.state === 'subscribing' && this._send(), 1000);
      }
      return;
    }
    this.state = 'subscribed';
    this.epoch = f.epoch;
    this._mark = f.offset;
    if (f.presence) {
      this._members = new Map(f.presence.map((/** @type {Member} */ m) => [m.user_id, m]));
      this.memberCount = f.member_count ?? f.presence.length;
    }
    const replay = since && f.recovered;
    if (!replay) this.offset = f.offset;
    this._emit('subscribed');
    if (!since) return;
    if (!f.recovered) this._emit('gap', f.reason);
    else if (this.offset >= f.offset) this._emit('recovered');
    else this._until = f.offset;
  }

  /** @internal @param {any} f an event frame */
  _event(f) {
    const offset = f.offset;
    if (this.state !== 'subscribed' || offset <= this.offset) return;
    this.offset = offset;
    if (this._own.size) {
      for (const o of this._own) if (o < offset) this._own.delete(o);
      if (this._own.delete(offset)) return this._caughtUp(offset);
    }
    if (offset > this._mark && this.room.startsWith('presence-')) {
      const m = f.data ?? {};
      const known = this._members.has(m.user_id);
      if (f.event === 'user-joined') {
        if (!known) this.memberCount++;
        this._members.set(m.user_id, m);
      } else if (f.event === 'user-left') {
        if (known || this.memberCount > this._members.size) this.memberCount--;
        this._members.delete(m.user_id);
      }
    }
    this._emit('event', { event: f.event, data: f.data, offset, timestamp: f.timestamp });
    this._caughtUp(offset);
  }

  /** @internal @param {number} offset */
  _caughtUp(offset) {
    if (this._until && offset >= this._until) {
      this._until = 0;
      this._emit('recovered');
    }
  }
}

/**
 * A connection to a roomcast hub that stays up: it reconnects, resubscribes and recovers.
 * @extends {Emitter<{state: [State, CloseInfo?], error: [RoomcastError]}>}
 */
export class Roomcast extends Emitter {
  /**
   * @param {string} url the hub's WebSocket URL (`wss://hub.example.com/ws`)
   * @param {Options} [options]
   */
  constructor(url, options = {}) {
    super();
    this.url = url;
    this.options = options;
    /** @type {State} */
    this.state = 'disconnected';
    /** The current connection's id (what a backend passes as `exclude_connection_id`). */
    this.connectionId = '';
    /** @internal @type {Map<string, Subscription>} */
    this._subs = new Map();
    /** @internal @type {any} */
    this._ws = null;
    /** @internal @type {Map<number, (frame: any) => void>} */
    this._waiting = new Map();
    /** @internal */
    this._want = false;
    /** @internal */
    this._gen = 0;
    /** @internal */
    this._id = 0;
    /** @internal */
    this._attempt = 0;
    /** @internal */
    this._heartbeat = 25000;
    /** @internal */
    this._seen = 0;
    /** @internal */
    this._pinged = false;
    /** @internal @type {any} */
    this._retry = undefined;
    /** @internal @type {any} */
    this._watchdog = undefined;
  }

  /** Connects, and keeps connecting until {@link Roomcast.close} or a 4003 close. */
  connect() {
    if (this._want) return;
    this._want = true;
    this._open();
  }

  /**
   * The subscription to `room`: made now or as soon as connected; the same object while it lasts.
   * @param {string} room
   * @param {{since?: Position}} [options] resume from a position kept earlier (a page reload)
   * @returns {Subscription}
   */
  subscribe(room, options = {}) {
    let sub = this._subs.get(room);
    if (!sub) {
      sub = new Subscription(this, room, options.since);
      this._subs.set(room, sub);
      if (this.state === 'connected') sub._send();
    }
    return sub;
  }

  /** Closes for good (until {@link Roomcast.connect} is called again). */
  close() {
    this._want = false;
    this._gen++;
    clearTimeout(this._retry);
    this._drop(1000, 'closed by the client');
    this._set('closed');
  }

  /** @internal */
  async _open() {
    const gen = ++this._gen;
    this._set('connecting');
    /** @type {Credential | undefined} */
    let credential;
    try {
      credential = this.options.getToken ? await this.options.getToken() : this.options.token;
    } catch (e) {
      if (gen !== this._gen) return;
      this._emit('error', fail('token_failed', `getToken failed: ${e}`));
      return this._lost(1006, 'getToken failed');
    }
    if (gen !== this._gen) return;
    let ws;
    try {
      const url = new URL(this.url, globalThis.location?.href);
      url.protocol = url.protocol.replace('http', 'ws');
      if (typeof credential === 'string') {
        credential = credential.startsWith('tk_') ? { ticket: credential } : { token: credential };
      }
      for (const [name, value] of Object.entries(credential ?? {})) url.searchParams.set(name, value);
      const Socket = this.options.WebSocket ?? globalThis.WebSocket;
      ws = new Socket(url.href);
    } catch (e) {
      this._emit('error', fail('connect_failed', `cannot open a WebSocket: ${e}`));
      return this._lost(1006, 'cannot open a WebSocket');
    }
    this._ws = ws;
    ws.onmessage = (/** @type {{data: any}} */ m) => this._frame(m.data);
    ws.onclose = (/** @type {CloseInfo} */ e) => ws === this._ws && this._lost(e.code, e.reason);
    ws.onerror = () => {};
    this._seen = Date.now();
    this._watch();
  }

  /** @internal @param {string} text */
  _frame(text) {
    this._seen = Date.now();
    this._pinged = false;
    let f;
    try {
      f = JSON.parse(text);
    } catch {
      return;
    }
    if (f.type === 'event') return this._subs.get(f.room)?._event(f);
    if (f.type === 'connected') {
      this._attempt = 0;
      this._heartbeat = (f.heartbeat_s || 25) * 1000;
      this.connectionId = f.connection_id;
      this._set('connected');
      this._watch();
      for (const sub of this._subs.values()) sub._send();
      return;
    }
    const answer = f.id != null && this._waiting.get(f.id);
    if (answer) {
      this._waiting.delete(f.id);
      answer(f);
    } else if (f.type === 'error') {
      const sub = f.room && this._subs.get(f.room);
      (sub || this)._emit('error', fail(f.code, f.message));
    }
  }

  /**
   * @internal
   * Sends `frame` with a new id; `answer` gets the frame answering it, or `null` when the
   * connection ends first.
   * @param {any} frame
   * @param {(frame: any) => void} answer
   */
  _request(frame, answer) {
    const ws = this._ws;
    if (this.state !== 'connected' || ws?.readyState !== OPEN) return answer(null);
    frame.id = ++this._id;
    this._waiting.set(frame.id, answer);
    ws.send(JSON.stringify(frame));
  }

  /**
   * @internal
   * Browsers cannot see WebSocket pings: after a heartbeat of silence the client pings, and
   * after another one it gives the link up.
   */
  _watch() {
    clearTimeout(this._watchdog);
    const beat = this._heartbeat;
    const idle = Date.now() - this._seen;
    if (idle >= 2 * beat) return this._lost(4000, 'no answer from the hub');
    if (idle >= beat && !this._pinged && this.state === 'connected') {
      this._pinged = true;
      this._ws.send('{"type":"ping"}');
    }
    this._watchdog = setTimeout(() => this._watch(), (idle < beat ? beat : 2 * beat) - idle);
  }

  /**
   * @internal
   * The connection ended: reconnects after a delay the close code decides.
   * @param {number} code
   * @param {string} reason
   */
  _lost(code, reason) {
    this._drop(4000, reason);
    if (!this._want) return this._set('closed', { code, reason });
    if (code === 4003) {
      this._want = false;
      return this._set('closed', { code, reason });
    }
    const min = this.options.minDelayMs ?? 500;
    const max = this.options.maxDelayMs ?? 20000;
    let delay;
    if (AT_ONCE.includes(code)) delay = Math.random() * min;
    else if (code === 4029) delay = max * (0.5 + Math.random() / 2);
    else delay = Math.random() * Math.min(max, min * 2 ** this._attempt++);
    this._set('disconnected', { code, reason });
    clearTimeout(this._retry);
    this._retry = setTimeout(() => this._want && this._open(), delay);
  }

  /**
   * @internal
   * Lets the current socket go: nothing it still says counts, and what waits on it fails.
   * @param {number} code
   * @param {string} reason
   */
  _drop(code, reason) {
    clearTimeout(this._watchdog);
    const ws = this._ws;
    this._ws = null;
    if (ws) {
      ws.onmessage = ws.onclose = null;
      try {
        ws.close(code, reason);
      } catch {
        // Already closing.
      }
    }
    const waiting = [...this._waiting.values()];
    this._waiting.clear();
    for (const answer of waiting) answer(null);
    for (const sub of this._subs.values()) sub.state = 'subscribing';
  }

  /**
   * @internal
   * @param {State} state
   * @param {CloseInfo} [info]
   */
  _set(state, info) {
    if (this.state === state) return;
    this.state = state;
    this._emit('state', state, info);
  }
}
