/*
 * Push wake-ups over a MongoDB change stream: ONE `watch()` per backend instance on the snapshots
 * collection (the instance documents carry the ready fields qn/qa/qi/qe and the timer fields
 * tn/tp/ta/ti/te, so every write that makes a task ready or moves a due time is a change of that
 * collection). The server filters the changes and sends only the index fields of each one, never
 * a document body (no `fullDocument` lookup; an insert's own document is cut down to those fields
 * by the projection). Each change becomes `notify(queue, readyNow)` for the shared WakeHub.
 *
 * Change streams need a replica set or a sharded cluster (a standalone server refuses
 * `$changeStream`, code 40573): `detectChangeStreams` asks the server once, and the backend
 * declares "push" or "poll" accordingly (see backend.ts, `wakeUpMode`).
 *
 * A stream the driver can resume (a network error, a killed cursor, a failover) is resumed by the
 * driver itself from its resume token, so nothing is missed. Any other end (an error it cannot
 * resume, an invalidate) closes it: a fresh stream is opened with backoff, then `notify(null)`
 * says that changes may have been missed. Errors never escape: a waiter does not depend on the
 * stream to be correct, only to be quick (the hub re-probes every wakeBoundMs all the same).
 */
import { backoffDelay } from "@sayiir/persistence-core/adapter";
import { type ChangeStream, type Collection, type Document, MongoServerError } from "mongodb";
import type { InstanceDoc } from "./layout.js";

/** An idle getMore waits this long on the server: one request per 2 s per backend while idle. */
export const MAX_AWAIT_MS = 2_000;
/**
 * An empty batch that comes back sooner than EMPTY_FAST_MS (a server that does not wait on
 * getMore, such as the mongo-java-server stand-in) is followed by a pause, so the loop never
 * spins: FIRST_PAUSE_MS after a change, doubling while nothing comes, up to MAX_PAUSE_MS (MongoDB
 * itself waits on the server, and never gets here).
 */
const EMPTY_FAST_MS = 50;
const FIRST_PAUSE_MS = 10;
const MAX_PAUSE_MS = 100;
/** A fresh stream after a lost one backs off with full jitter, from this base up to the cap. */
const REOPEN_BASE_MS = 100;
const REOPEN_CAP_MS = 5_000;

/** The index fields a change may carry: the ready queue and claim expiry, the timer's. */
const WAKE_FIELDS = ["qn", "qe", "tn", "ta", "te"] as const;

/** `{ <prefix>.qn: ..., ... }` for every wake field. */
const under = (prefix: string, value: (field: string) => unknown): Document =>
  Object.fromEntries(WAKE_FIELDS.map((field) => [`${prefix}.${field}`, value(field)]));

const UPDATED = "updateDescription.updatedFields";

/**
 * The server-side filter and projection. Kept: an insert (or replace) whose document is in the
 * ready or the timer index; an update that set a queue (qn, tn: a task entered an index or moved
 * queue), moved a due time (ta), or freed a claimed task (qe or te set to null: a release, a step
 * to the next task of the same queue, a retry). Dropped: heartbeats and claims (qe, te set to a
 * time), deletes, writes that take a task out of the indexes. An update without an update
 * description (the stand-in reports an update's fields in fullDocument instead) is kept and judged
 * by `wakeOf`. The projection keeps `_id` (the resume token) and the index fields only.
 */
export const CHANGE_PIPELINE: Document[] = [
  {
    $match: {
      $or: [
        {
          operationType: { $in: ["insert", "replace"] },
          $or: [{ "fullDocument.qn": { $exists: true } }, { "fullDocument.tn": { $exists: true } }],
        },
        {
          operationType: "update",
          $or: [
            { [`${UPDATED}.qn`]: { $exists: true } },
            { [`${UPDATED}.tn`]: { $exists: true } },
            { [`${UPDATED}.ta`]: { $exists: true } },
            { [`${UPDATED}.qe`]: { $type: "null" } },
            { [`${UPDATED}.te`]: { $type: "null" } },
            { updateDescription: { $exists: false } },
          ],
        },
      ],
    },
  },
  { $project: { operationType: 1, ...under("fullDocument", () => 1), ...under(UPDATED, () => 1) } },
];

/** One change as the pipeline projects it. */
export interface WakeChange {
  operationType?: string;
  fullDocument?: Record<string, unknown>;
  updateDescription?: { updatedFields?: Record<string, unknown> };
}

/** What one change means for the waiters: the queues to wake (null: any), and which are ready now. */
export type Wake = { queue: string | null; readyNow: boolean };

const queueName = (value: unknown): string | null =>
  typeof value === "string" && value.length > 0 ? value : null;

/**
 * The notifications of one change. The fields are the update's updated fields (MongoDB), else the
 * change's document (an insert's, cut to the index fields; the stand-in's update, which lists the
 * fields the update set, an unset one as ""). A queue set (qn, tn): its waiters, and qn with no
 * claim (qe null) is claimable at once. No queue but a freed claim or a new due time (a write that
 * leaves the queue as it was, so the update does not list it): every waiter looks.
 */
export function wakeOf(change: WakeChange): Wake[] {
  const fields = change.updateDescription?.updatedFields ?? change.fullDocument ?? {};
  const wakes: Wake[] = [];
  const ready = queueName(fields.qn);
  if (ready !== null) wakes.push({ queue: ready, readyNow: fields.qe === null });
  const timer = queueName(fields.tn);
  if (timer !== null && timer !== ready) wakes.push({ queue: timer, readyNow: false });
  if (wakes.length > 0) return wakes;
  if (fields.qe === null || fields.te === null || typeof fields.ta === "number") {
    return [{ queue: null, readyNow: false }];
  }
  return [];
}

/** Server errors that say "not now" rather than "never": a failover, a shutdown, a timeout. */
const TRANSIENT_CODES = new Set([6, 7, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436]);

/** Does this error say the server will not run a change stream (rather than a passing failure)? */
export function isRefusal(error: unknown): error is MongoServerError {
  return (
    error instanceof MongoServerError &&
    !TRANSIENT_CODES.has(Number(error.code)) &&
    !error.hasErrorLabel("ResumableChangeStreamError") &&
    !error.hasErrorLabel("RetryableWriteError")
  );
}

/**
 * Opens the stream and runs its first command (the aggregate that creates the cursor), so a
 * refusal or a stream the server closes at once shows here. Rejects with the stream closed.
 */
async function openStream(
  collection: Collection<InstanceDoc>,
): Promise<{ stream: ChangeStream; first: WakeChange | null }> {
  const stream = collection.watch(CHANGE_PIPELINE, { maxAwaitTimeMS: MAX_AWAIT_MS }) as ChangeStream;
  // Read as an iterator, whose failures tryNext() throws; an "error" event must not crash the process.
  stream.on("error", () => {});
  try {
    const first = (await stream.tryNext()) as WakeChange | null;
    if (stream.closed) throw new ClosedAtOnce();
    return { stream, first };
  } catch (error) {
    await stream.close().catch(() => {});
    throw error;
  }
}

/** The server answered the aggregate with a cursor that is already closed (no oplog to follow). */
class ClosedAtOnce extends Error {
  constructor() {
    super("the server closed the change stream at once (it keeps no oplog)");
  }
}

/**
 * Asks the server once whether it runs change streams on `collection`: null when it does, else
 * why not (a refusal such as a standalone server's 40573, or a stream closed at once). Errors that
 * are not an answer (the network, a failover) reject.
 */
export async function detectChangeStreams(collection: Collection<InstanceDoc>): Promise<string | null> {
  try {
    const { stream } = await openStream(collection);
    await stream.close().catch(() => {});
    return null;
  } catch (error) {
    if (error instanceof ClosedAtOnce) return error.message;
    if (isRefusal(error))
      return `the server refused $changeStream (code ${String(error.code)}): ${error.message}`;
    throw error;
  }
}

/** Starts the listener; resolves once its stream is open. The result stops it. */
export async function listenForChanges(
  collection: Collection<InstanceDoc>,
  notify: (queue: string | null, readyNow?: boolean) => void,
): Promise<() => Promise<void>> {
  const listener = new ChangeListener(collection, notify);
  const { stream, first } = await openStream(collection);
  listener.start(stream, first);
  return () => listener.stop();
}

class ChangeListener {
  readonly #collection: Collection<InstanceDoc>;
  readonly #notify: (queue: string | null, readyNow?: boolean) => void;
  #stream: ChangeStream | undefined;
  #loop: Promise<void> | undefined;
  #stopped = false;
  /** Ends the current pause early (stop). */
  #wake: (() => void) | undefined;

  constructor(
    collection: Collection<InstanceDoc>,
    notify: (queue: string | null, readyNow?: boolean) => void,
  ) {
    this.#collection = collection;
    this.#notify = notify;
  }

  start(stream: ChangeStream, first: WakeChange | null): void {
    this.#stream = stream;
    if (first !== null) this.#deliver(first);
    this.#loop = this.#run(stream).catch(() => {});
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    this.#wake?.();
    // Closing kills the cursor, which ends a getMore waiting on the server.
    await this.#stream?.close().catch(() => {});
    await this.#loop;
  }

  /** Follows `stream` until it ends, then opens fresh ones until stopped. */
  async #run(first: ChangeStream): Promise<void> {
    let stream = first;
    for (;;) {
      await this.#follow(stream);
      await stream.close().catch(() => {});
      const next = await this.#reopen();
      if (next === undefined) return;
      stream = next;
    }
  }

  /** Reads changes until the stream closes or fails (the driver resumes what it can by itself). */
  async #follow(stream: ChangeStream): Promise<void> {
    let pause = FIRST_PAUSE_MS;
    try {
      while (!this.#stopped && !stream.closed) {
        const started = performance.now();
        const change = (await stream.tryNext()) as WakeChange | null;
        if (this.#stopped) return;
        if (change !== null) {
          this.#deliver(change);
          pause = FIRST_PAUSE_MS;
        } else if (performance.now() - started < EMPTY_FAST_MS) {
          await this.#pause(pause);
          pause = Math.min(pause * 2, MAX_PAUSE_MS);
        }
      }
    } catch {
      // A failure the driver could not resume from: the stream is done; a fresh one follows.
    }
  }

  /** A fresh stream after backoff, then notify(null); undefined once stopped. */
  async #reopen(): Promise<ChangeStream | undefined> {
    for (let attempt = 0; ; attempt++) {
      await this.#pause(backoffDelay(attempt, REOPEN_BASE_MS, REOPEN_CAP_MS));
      if (this.#stopped) return undefined;
      try {
        const { stream, first } = await openStream(this.#collection);
        if (this.#stopped) {
          await stream.close().catch(() => {});
          return undefined;
        }
        this.#stream = stream;
        // Writes made while no stream followed the collection were seen by nobody.
        this.#notify(null);
        if (first !== null) this.#deliver(first);
        return stream;
      } catch {
        // Still down or refused: back off and try again (the hub's bound covers the gap).
      }
    }
  }

  #deliver(change: WakeChange): void {
    for (const { queue, readyNow } of wakeOf(change)) this.#notify(queue, readyNow);
  }

  /** Sleeps `ms` (nothing if <= 0), or less if stopped meanwhile. */
  async #pause(ms: number): Promise<void> {
    if (ms <= 0 || this.#stopped) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.#wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
    this.#wake = undefined;
  }
}

/** How waits learn of writes, and why (what `MongoBackend.wakeUpMode()` reports). */
export interface WakeUpMode {
  /** "push": a change stream wakes waiters; "poll": the hub looks on a timer. */
  mode: "push" | "poll";
  /** Why: the option, the server's refusal, or that a change stream was opened. */
  reason: string;
}

/**
 * The backend's choice between the change stream and the poll: "off" polls; "auto" asks the
 * server once (migrate() does, else the first wait before the hub is built) and remembers the
 * answer for the life of the backend. Until it has asked, the mode is "poll" (nothing listens).
 */
export class ChangeStreamWakeUps {
  readonly #collection: Collection<InstanceDoc>;
  #known: WakeUpMode | undefined;
  #detecting: Promise<WakeUpMode> | undefined;

  constructor(collection: Collection<InstanceDoc>, setting: "auto" | "off") {
    this.#collection = collection;
    if (setting === "off") this.#known = { mode: "poll", reason: 'changeStreams: "off"' };
  }

  /** The mode once known, else "poll" (not asked yet). */
  get mode(): "push" | "poll" {
    return this.#known?.mode ?? "poll";
  }

  get known(): boolean {
    return this.#known !== undefined;
  }

  /** Asks the server once (concurrent callers share the question); a failed look asks again next time. */
  async detect(): Promise<WakeUpMode> {
    if (this.#known !== undefined) return this.#known;
    this.#detecting ??= detectChangeStreams(this.#collection)
      .then((refused): WakeUpMode => {
        this.#known =
          refused === null
            ? { mode: "push", reason: "change streams: the server opened one on the snapshots collection" }
            : { mode: "poll", reason: refused };
        return this.#known;
      })
      .finally(() => {
        this.#detecting = undefined;
      });
    return this.#detecting;
  }

  listen(notify: (queue: string | null, readyNow?: boolean) => void): Promise<() => Promise<void>> {
    return listenForChanges(this.#collection, notify);
  }
}
