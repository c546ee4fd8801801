/**
 * Push wake-ups for SQLite: there is no server to push, so two channels stand in for one.
 *
 * - Within this process: a module-level channel per database file (by its real path; an
 *   in-memory database by its connection). Every SqliteBackend over that file subscribes its
 *   waiters to it and, after each write transaction that may have made a task ready or moved its
 *   due time commits, tells it the queues concerned: the backends of this process hear each
 *   other's writes at once.
 * - Across processes: `PRAGMA data_version` on the backend's own connection changes when
 *   ANOTHER connection committed. While someone waits, the listener reads it every
 *   DATA_VERSION_POLL_MS (a read of the shared WAL index, no query of the tables) and on a change
 *   says "any queue may have work" (notify(null)): the waiters probe, the probe decides.
 */
import { realpathSync } from "node:fs";
import type { DatabaseSync, StatementSync } from "node:sqlite";
import type { WakeProbe } from "@sayiir/persistence-core";
import type { Queries } from "./queries.js";
import type { ProbeRow } from "./sql-wake-ups.js";
import { prepare } from "./transaction.js";

/** How often a waiting backend looks for commits by other processes. */
export const DATA_VERSION_POLL_MS = 25;

type Listener = (queue: string | null) => void;

/** The listeners of each database in this process: a file by its real path, else its connection. */
const channels = new Map<string | DatabaseSync, Set<Listener>>();

/** The channel key of a connection: the real path of its main database file, or the connection. */
function channelKey(db: DatabaseSync): string | DatabaseSync {
  const location = (db as { location?: () => string | null }).location?.call(db) ?? null;
  if (location === null || location === "") return db;
  try {
    return realpathSync(location);
  } catch {
    return location;
  }
}

/**
 * One backend's side of the wake-ups: what its writes tell the channel, and its listener (the
 * channel subscription plus the data_version watch).
 */
export class SqliteWakeUps {
  readonly #db: DatabaseSync;
  readonly #key: string | DatabaseSync;
  /** Queues named by the write transaction in progress; told once it commits. */
  readonly #pending = new Set<string>();
  /** Waits in progress on this backend: the data_version watch runs only while there are some. */
  #waiting = 0;
  #watch: { notify: Listener; version: StatementSync; last: number; timer?: NodeJS.Timeout } | undefined;

  constructor(db: DatabaseSync) {
    this.#db = db;
    this.#key = channelKey(db);
  }

  /** Does any backend of this process listen on this database? (Writes skip the queue reads if not.) */
  get heard(): boolean {
    return (channels.get(this.#key)?.size ?? 0) > 0;
  }

  /** Inside a write transaction: its commit may make a task of `queue` ready or move its due time. */
  touched(queue: string | null | undefined): void {
    if (typeof queue === "string") this.#pending.add(queue);
  }

  /** After the commit: tells every listener of this database the queues touched. */
  flush(): void {
    if (this.#pending.size === 0) return;
    const listeners = channels.get(this.#key);
    if (listeners !== undefined) {
      for (const queue of this.#pending) for (const listener of listeners) listener(queue);
    }
    this.#pending.clear();
  }

  /** After a rollback: nothing was written, nothing to tell. */
  discard(): void {
    this.#pending.clear();
  }

  /** Starts the listener: subscribes `notify` to the channel and arms the data_version watch. */
  listen(notify: Listener): () => Promise<void> {
    let listeners = channels.get(this.#key);
    if (listeners === undefined) {
      listeners = new Set();
      channels.set(this.#key, listeners);
    }
    listeners.add(notify);
    const version = prepare(this.#db, "PRAGMA data_version");
    this.#watch = { notify, version, last: readVersion(version) ?? 0 };
    if (this.#waiting > 0) this.#startWatch();
    return async () => {
      this.#stopWatch();
      this.#watch = undefined;
      listeners.delete(notify);
      if (listeners.size === 0 && channels.get(this.#key) === listeners) channels.delete(this.#key);
    };
  }

  /** A wait starts: the watch runs while at least one is in progress. */
  enter(): void {
    if (++this.#waiting === 1) this.#startWatch();
  }

  leave(): void {
    if (--this.#waiting === 0) this.#stopWatch();
  }

  #startWatch(): void {
    const watch = this.#watch;
    if (watch === undefined || watch.timer !== undefined) return;
    // A commit between two waits is not news to the next one (it probes first): start afresh.
    watch.last = readVersion(watch.version) ?? watch.last;
    watch.timer = setInterval(() => {
      const now = readVersion(watch.version);
      if (now === undefined || now === watch.last) return;
      watch.last = now;
      watch.notify(null);
    }, DATA_VERSION_POLL_MS);
    // Waiting is no reason to keep the process alive: the wait's own timer is.
    watch.timer.unref();
  }

  #stopWatch(): void {
    if (this.#watch?.timer === undefined) return;
    clearInterval(this.#watch.timer);
    this.#watch.timer = undefined;
  }
}

/** The connection's data_version; undefined when it cannot be read (closed, busy): next tick. */
function readVersion(statement: StatementSync): number | undefined {
  try {
    return (statement.get() as { data_version: number }).data_version;
  } catch {
    return undefined;
  }
}

/**
 * One look for waitForTasks: probeWakeUp per queue (one statement each, through the ready and
 * timer indexes, no payload read). Ready if any queue has a claimable task; else the earliest
 * future claim expiry or due time among them (null: none).
 */
export function probeWakeUp(q: Queries, queues: readonly string[], now: number, agingMs: number): WakeProbe {
  let nextDueAt: number | null = null;
  for (const queue of queues) {
    const row = q.getNamed<ProbeRow>("probeWakeUp", {
      queue,
      now,
      horizon: now + 2 * agingMs,
      spread: 2 * agingMs,
    }) as ProbeRow;
    if (row.ready === 1) return { ready: true, nextDueAt: null };
    for (const at of [row.ready_lease, row.due_lease, row.next_due]) {
      if (at !== null && (nextDueAt === null || at < nextDueAt)) nextDueAt = at;
    }
  }
  return { ready: false, nextDueAt };
}
