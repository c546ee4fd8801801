import type { Cluster, Redis, RedisOptions } from "ioredis";

/*
 * The listener of waitForTasks: ONE subscriber connection per backend instance, subscribed to the
 * store's channel `{P:wake}`, where the scripts that file a task into a ready or timer set publish
 * its queue (lua.ts, `wake`). A message calls notify(queue, claimable now?); every (re)connection after the first
 * calls notify(null), since messages published while it was down are lost.
 *
 * The connection is always one of our own, never the backend's client (which may be the user's:
 * a client in subscriber mode refuses every other command). Standalone: a duplicate of the client.
 * Cluster: a duplicate of one master of the cluster client (PUBLISH reaches every node), chosen
 * again from the cluster's current masters whenever the connection gives up, so the subscriber
 * follows failovers and resharding. ioredis retries a dropped connection a few times with backoff
 * (re-subscribing by itself); after that the connection ends and a new one is opened, with a
 * growing delay, until stop().
 */

/** Attempts of ioredis on one connection before it is dropped for a new one (maybe another node). */
const RETRIES_PER_CONNECTION = 3;
/** Delay before opening a new connection: doubled after each that ended, up to the cap. */
const REOPEN_FIRST_MS = 100;
const REOPEN_MAX_MS = 5_000;

export interface WakeListenerOptions {
  /** The backend's client (standalone or Cluster): what the subscriber is duplicated from. */
  client: Redis | Cluster;
  /** The channel, `{P:wake}`. */
  channel: string;
  /** The connection's name on the server (CLIENT LIST), so operators and tests can tell it. */
  connectionName: string;
  /** Bounds the first subscription (and stop's goodbye), in ms. */
  timeoutMs: number;
  notify: (queue: string | null, readyNow?: boolean) => void;
}

const noop = (): void => {};

/** What every subscriber connection overrides of the options it is duplicated from. */
function subscriberOptions(name: string): Partial<RedisOptions> {
  return {
    connectionName: name,
    lazyConnect: false,
    enableOfflineQueue: true,
    autoResubscribe: true,
    // A subscriber never sends ordinary commands; a replica would do, but a master is chosen.
    readOnly: false,
    retryStrategy: (times: number) =>
      times > RETRIES_PER_CONNECTION ? null : Math.min(50 * 2 ** times, 1_000),
  };
}

/** Starts listening; resolves once subscribed. */
export async function listenForWakeUps(options: WakeListenerOptions): Promise<WakeListener> {
  const listener = new WakeListener(options);
  try {
    await listener.start();
  } catch (error) {
    await listener.stop();
    throw error;
  }
  return listener;
}

export class WakeListener {
  readonly #options: WakeListenerOptions;
  #connection: Redis | undefined;
  #subscribed = false;
  #stopped = false;
  #reopenMs = REOPEN_FIRST_MS;
  #reopenTimer: NodeJS.Timeout | undefined;

  constructor(options: WakeListenerOptions) {
    this.#options = options;
  }

  async start(): Promise<void> {
    const connection = this.#open();
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(
            new Error(`no subscription to ${this.#options.channel} within ${this.#options.timeoutMs} ms`),
          ),
        this.#options.timeoutMs,
      );
    });
    try {
      await Promise.race([connection.subscribe(this.#options.channel), timeout]);
      this.#subscribed = true;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Unsubscribes and quits the connection (bounded); no reconnection after this. */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#reopenTimer);
    const connection = this.#connection;
    this.#connection = undefined;
    if (connection === undefined) return;
    const goodbye = (async () => {
      if (connection.status !== "ready") return;
      await connection.unsubscribe(this.#options.channel);
      await connection.quit();
    })().catch(noop);
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      goodbye,
      new Promise((resolve) => (timer = setTimeout(resolve, this.#options.timeoutMs))),
    ]);
    clearTimeout(timer);
    connection.disconnect();
  }

  /** A new subscriber connection, wired: messages, reconnections, its end. */
  #open(): Redis {
    const { client, channel, connectionName, notify } = this.#options;
    const connection = duplicateFor(client, subscriberOptions(connectionName));
    this.#connection = connection;
    // Errors show as reconnections; none may escape as an unhandled 'error' event.
    connection.on("error", noop);
    connection.on("message", (from: string, message: string) => {
      // '+queue': a task of it is claimable now; '~queue': one's due time moved (lua.ts, wake).
      if (from === channel && message.length > 1) notify(message.slice(1), message[0] === "+");
    });
    connection.on("ready", () => {
      if (!this.#subscribed || this.#stopped) return;
      this.#reopenMs = REOPEN_FIRST_MS;
      // Subscribed again (ioredis re-subscribes on its reconnection; a new connection does here),
      // then a look: what was published while it was down never comes.
      connection.subscribe(channel).then(
        () => notify(null),
        () => notify(null),
      );
    });
    connection.once("end", () => {
      if (this.#stopped || this.#connection !== connection) return;
      const delay = this.#reopenMs;
      this.#reopenMs = Math.min(delay * 2, REOPEN_MAX_MS);
      this.#reopenTimer = setTimeout(() => this.#reopen(), delay);
    });
    return connection;
  }

  #reopen(): void {
    if (this.#stopped) return;
    try {
      this.#open();
    } catch {
      // No master known right now (a cluster between topologies): try again later.
      const delay = this.#reopenMs;
      this.#reopenMs = Math.min(delay * 2, REOPEN_MAX_MS);
      this.#reopenTimer = setTimeout(() => this.#reopen(), delay);
    }
  }
}

/** A connection of our own: a duplicate of the standalone client, or of one current cluster master. */
function duplicateFor(client: Redis | Cluster, override: Partial<RedisOptions>): Redis {
  if ((client as { isCluster?: boolean }).isCluster !== true) return (client as Redis).duplicate(override);
  const masters = (client as Cluster).nodes("master");
  const node = masters[Math.floor(Math.random() * masters.length)];
  if (node === undefined) throw new Error("no master of the cluster is known");
  return node.duplicate(override);
}
