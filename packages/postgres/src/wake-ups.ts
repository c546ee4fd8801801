/**
 * The wake-up listener: one dedicated connection per backend instance (not from the pool: a
 * LISTEN belongs to a session, and a pooled connection goes back to other work), on which the
 * schema's channel is LISTENed. Each notification's payload is a kind and a queue name, handed to the
 * shared WakeHub. A dropped connection is opened again with backoff, then `notify(null)` says
 * that notifications may have been missed (every waiter looks again). Errors never escape: a
 * waiter does not depend on the listener to be correct, only to be quick (wakeBoundMs).
 */
import { backoffDelay } from "@sayiir/persistence-core/adapter";
import pg from "pg";
import { quoteIdentifier, quoteLiteral } from "./layout.js";

/** Appended to the connection's application_name, so that operators (and tests) can tell it apart. */
export const WAKE_APPLICATION_SUFFIX = " sayiir-wake-ups";
/** application_name holds at most 63 bytes. */
const APPLICATION_NAME_BYTES = 63;
/** Reconnects back off with full jitter, from this base doubling up to the cap. */
const RECONNECT_BASE_MS = 100;
const RECONNECT_CAP_MS = 5_000;
/** Stopping does not wait longer than this for UNLISTEN on a connection that may be gone. */
const UNLISTEN_TIMEOUT_MS = 1_000;

export interface WakeListenerOptions {
  /** The connection options of the backend's pool (the listener connects as the pool would). */
  config: pg.ClientConfig;
  /** The schema's channel (unquoted). */
  channel: string;
  /** A queue name, or null after a reconnect. */
  notify: (queue: string | null, readyNow?: boolean) => void;
}

/** Starts the listener; resolves once it is LISTENing. The result stops it and ends its connection. */
export async function listenForWakeUps(options: WakeListenerOptions): Promise<() => Promise<void>> {
  const listener = new WakeListener(options);
  await listener.connect();
  return () => listener.stop();
}

class WakeListener {
  readonly #options: WakeListenerOptions;
  /** The live connection (none while reconnecting or after stop). */
  #client: pg.Client | undefined;
  #stopped = false;
  #retry: NodeJS.Timeout | undefined;
  /** A reconnect in progress, awaited by stop(). */
  #connecting: Promise<void> | undefined;
  #attempt = 0;

  constructor(options: WakeListenerOptions) {
    this.#options = options;
  }

  /** Opens a connection and LISTENs; rejects (with the connection closed) if either fails. */
  async connect(): Promise<void> {
    const { config, channel, notify } = this.#options;
    const client = new pg.Client({ keepAlive: true, ...config });
    // The same handler for an error and an end: either way this connection is done.
    const lost = () => this.#lost(client);
    client.on("error", lost);
    client.on("end", lost);
    client.on("notification", (message) => {
      // '+queue': a task of it is claimable now; '~queue': look first (sql-wake.ts, notifyWake).
      const payload = message.payload ?? "";
      if (message.channel === channel && payload.length > 1) notify(payload.slice(1), payload[0] === "+");
    });
    const suffix = quoteLiteral(WAKE_APPLICATION_SUFFIX);
    const keep = APPLICATION_NAME_BYTES - Buffer.byteLength(WAKE_APPLICATION_SUFFIX);
    try {
      await client.connect();
      // One round trip: the name (set here, whatever the options or the URL said) and the LISTEN.
      await client.query(
        `SELECT set_config('application_name', left(current_setting('application_name'), ${keep}) || ${suffix}, false);
         LISTEN ${quoteIdentifier(channel)}`,
      );
    } catch (error) {
      client.end().catch(() => {});
      throw error;
    }
    if (this.#stopped) {
      await client.end().catch(() => {});
      return;
    }
    this.#client = client;
  }

  /** Stops for good: no more reconnects, UNLISTEN and end the connection. */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#retry);
    await this.#connecting;
    const client = this.#client;
    this.#client = undefined;
    if (client === undefined) return;
    const unlisten: pg.QueryConfig & { query_timeout?: number } = {
      text: "UNLISTEN *",
      query_timeout: UNLISTEN_TIMEOUT_MS,
    };
    await client.query(unlisten).catch(() => {});
    await client.end().catch(() => {});
  }

  /** The connection `client` failed or ended: drop it and, unless stopped, open another. */
  #lost(client: pg.Client): void {
    if (this.#client !== client) return;
    this.#client = undefined;
    client.end().catch(() => {});
    this.#schedule();
  }

  #schedule(): void {
    if (this.#stopped) return;
    const delay = backoffDelay(this.#attempt++, RECONNECT_BASE_MS, RECONNECT_CAP_MS);
    this.#retry = setTimeout(() => {
      this.#connecting = this.connect().then(
        () => {
          this.#attempt = 0;
          // Writes made while no connection listened sent their notifications to nobody.
          if (!this.#stopped) this.#options.notify(null);
        },
        () => this.#schedule(),
      );
    }, delay);
    this.#retry.unref();
  }
}
