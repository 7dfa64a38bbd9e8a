export type State = 'connecting' | 'connected' | 'disconnected' | 'closed';
export type RoomEvent = {
    event: string;
    data: any;
    offset: number;
    timestamp: number;
};
export type Member = {
    user_id: string;
    user_info: any;
};
export type RoomcastError = Error & {
    code: string;
};
export type CloseInfo = {
    code: number;
    reason: string;
};
export type Position = {
    offset: number;
    epoch: string;
};
export type Credential = string | {
    token: string;
} | {
    ticket: string;
};
export type Options = {
    /**
     * a fixed credential, used for every connection
     */
    token?: string;
    /**
     * called before each (re)connection
     */
    getToken?: () => Credential | Promise<Credential>;
    /**
     * a WebSocket class, where there is no global one (Node 20: `ws`)
     */
    WebSocket?: any;
    /**
     * the first reconnect waits up to this (500)
     */
    minDelayMs?: number;
    /**
     * no reconnect waits longer than this (20000)
     */
    maxDelayMs?: number;
};
/**
 * Named events with typed arguments; a throwing handler neither stops the others nor the client.
 * @template {Record<string, any[]>} E
 */
declare class Emitter<E extends Record<string, any[]>> {
    constructor();
    /**
     * Calls `fn` on each `name` event; returns a function that stops it.
     * @template {keyof E & string} K
     * @param {K} name
     * @param {(...args: E[K]) => void} fn
     * @returns {() => void}
     */
    on<K extends keyof E & string>(name: K, fn: (...args: E[K]) => void): () => void;
    /**
     * @template {keyof E & string} K
     * @param {K} name
     * @param {(...args: E[K]) => void} fn
     */
    off<K extends keyof E & string>(name: K, fn: (...args: E[K]) => void): void;
}
/**
 * One room of a {@link Roomcast} client, kept subscribed across reconnects.
 * @extends {Emitter<{event: [RoomEvent], subscribed: [], recovered: [], gap: [string], error: [RoomcastError]}>}
 */
export declare class Subscription extends Emitter<{
    event: [RoomEvent];
    subscribed: [];
    recovered: [];
    gap: [string];
    error: [RoomcastError];
}> {
    room: string;
    /** @type {'subscribing' | 'subscribed' | 'unsubscribed'} */
    state: 'subscribing' | 'subscribed' | 'unsubscribed';
    /** The offset of the last event handed to the app (or of the last `subscribed`). */
    offset: number;
    /** The epoch `offset` belongs to; `null` until first subscribed. */
    epoch: string | null;
    /** Presence rooms: how many members the room has. */
    memberCount: number;
    /**
     * @param {Roomcast} client
     * @param {string} room
     * @param {Position} [since]
     */
    constructor(client: Roomcast, room: string, since?: Position);
    /** Presence rooms: the members, kept current. @returns {Member[]} */
    members(): Member[];
    /**
     * Sends a client event to the room's other subscribers (the app must allow client events
     * and the token grant `can_publish`); resolves with the offset it took.
     * @param {string} event
     * @param {any} [data]
     * @returns {Promise<{offset: number}>}
     */
    publish(event: string, data?: any): Promise<{
        offset: number;
    }>;
    /** Leaves the room. */
    unsubscribe(): void;
}
/**
 * A connection to a roomcast hub that stays up: it reconnects, resubscribes and recovers.
 * @extends {Emitter<{state: [State, CloseInfo?], error: [RoomcastError]}>}
 */
export declare class Roomcast extends Emitter<{
    state: [State, CloseInfo?];
    error: [RoomcastError];
}> {
    url: string;
    options: Options;
    /** @type {State} */
    state: State;
    /** The current connection's id (what a backend passes as `exclude_connection_id`). */
    connectionId: string;
    /**
     * @param {string} url the hub's WebSocket URL (`wss://hub.example.com/ws`)
     * @param {Options} [options]
     */
    constructor(url: string, options?: Options);
    /** Connects, and keeps connecting until {@link Roomcast.close} or a 4003 close. */
    connect(): void;
    /**
     * The subscription to `room`: made now or as soon as connected; the same object while it lasts.
     * @param {string} room
     * @param {{since?: Position}} [options] resume from a position kept earlier (a page reload)
     * @returns {Subscription}
     */
    subscribe(room: string, options?: {
        since?: Position;
    }): Subscription;
    /** Closes for good (until {@link Roomcast.connect} is called again). */
    close(): void;
}
export {};
