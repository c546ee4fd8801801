/*
 * How data is laid out: every collection, field, index and meta-document name, and the
 * projections the adapter reads with. Nobody else builds names. Ids are only ever used as values
 * (never as field names, never as operators): an instance id is an instance document's `_id`
 * string, and task, worker ids and event names live in arrays of small subdocuments ({ t, g }
 * results, { t, w, k, c, e, x } claims, { q, n, a, z, b | g } events) or in the wait `w`.
 */
import type { StoredStatus } from "@sayiir/persistence-core/adapter";

/** Collection names under one prefix. */
export interface CollectionNames {
  /** One document per instance: the snapshot (if any) and every claim on the instance's tasks. */
  snapshots: string;
  /** Chunks of task outputs, large initial inputs and large headers. */
  outputs: string;
  /** The global fencing-token counter and the schema version. */
  meta: string;
}

export function collectionNames(prefix: string): CollectionNames {
  return {
    snapshots: `${prefix}snapshots`,
    outputs: `${prefix}outputs`,
    meta: `${prefix}meta`,
  };
}

/**
 * One entry of a snapshot's results: task id and the blob id (`g`) of its output, with the
 * output's size (`z`) and SHA-256 (`x`), so that a saveSnapshot keeps the blob of an output that
 * did not change instead of writing it again (entries of older releases have neither: rewritten).
 */
export interface ResultRef {
  t: string;
  g: string;
  /** The output's size in bytes. */
  z?: number;
  /** The output's SHA-256 (32 bytes). */
  x?: Uint8Array | { buffer: Uint8Array; position: number };
}

/** One claim, inside its instance's document. Released claims are removed from the array. */
export interface ClaimEntry {
  /** Task id. */
  t: string;
  /** Worker id. */
  w: string;
  /** Fencing token. */
  k: number;
  /** claimedAt, epoch ms (the backend's clock). */
  c: number;
  /** expiresAt, epoch ms, or null: no ttl (never expires). */
  e: number | null;
  /**
   * Revoked by cancelWorkflow: the moment of the revocation, epoch ms (the backend's clock); `e`
   * is then the epoch (REVOKED_EXPIRY), so the claim is expired on every clock, whatever the
   * clocks of other processes say. The entry and its token stay; pruning counts from `x`.
   */
  x?: number;
  /**
   * Lapsed: the claim was expired and a call of its holder was refused for it (ClaimLostError) at
   * this moment, epoch ms (the backend's clock). That refusal committed this mark on the version
   * it judged, so a call of the same holder judged live on that version and still in flight (a
   * slow heartbeat, a fenced write) fails its compare-and-set and is refused too, instead of
   * landing after the refusal; and from then on the claim is expired on every clock, as a revoked
   * one is. Unlike a revoked claim it is still listed (with its expiry) until released or taken.
   */
  d?: number;
}

/**
 * One pending event, inside its instance's document, until the write that moves the workflow
 * past its wait consumes it (removed then), or the workflow ends (all removed).
 */
export interface EventEntry {
  /** Sequence: increases with every event sent to the instance (the counter `es`). */
  q: number;
  /** Event name. */
  n: string;
  /** sentAt, epoch ms (the backend's clock). */
  a: number;
  /** Payload size in bytes. */
  z: number;
  /** The payload inline when it fits the events' inline budget (EVENT_INLINE_BYTES) ... */
  b?: Uint8Array | { buffer: Uint8Array; position: number };
  /** ... else the blob id of the payload in the outputs collection (chunked like an output). */
  g?: string;
}

/** An InProgress wait for an event (toStoredSnapshot's `awaiting`). */
export interface WaitEntry {
  /** Event name. */
  n: string;
  /** The task to run next (no result yet). */
  t: string;
  /** timeoutAt, epoch ms, or null: no timeout. */
  o: number | null;
}

/**
 * The failed runs of one task (core's TaskAttempts), inside its instance's document beside the
 * header: failTasks and takeovers update them without rewriting the header.
 */
export interface AttemptEntry {
  /** Task id. */
  t: string;
  /** count: failures and takeovers of expired claims. */
  n: number;
  /** lastError (null after a takeover only). */
  m: string | null;
  /** lastFailedAt, epoch ms (the backend's clock), or null. */
  a: number | null;
  /** retryAt: absent = no constraint; null = held (in no index); a number = not ready before it. */
  y?: number | null;
}

/** The schedule of the ready or awaited task (toStoredSnapshot's `schedule`); absent: the defaults. */
export interface ScheduleEntry {
  /** runAt, epoch ms, or null: at once. */
  r: number | null;
  /** Priority, 1 first .. 5 last. */
  p: number;
  /** Queue name. */
  n: string;
}

/**
 * The instance document: the single document every claim, release, extend and fenced write of
 * an instance commits to (a compare-and-set on `v`). A document without `d` is a claims-only
 * placeholder (tasks were claimed, no snapshot was saved): it is "no snapshot" to every reader.
 */
export interface InstanceDoc {
  _id: string;
  /** Version: a fresh random string on every write (compare-and-set). */
  v: string;
  /** Claims on this instance's tasks (also on a placeholder). */
  c?: ClaimEntry[];
  /** Definition hash: present exactly when a snapshot is stored. */
  d?: string;
  /**
   * The snapshot header (toStoredSnapshot's `header`: no task results, no initial input) inline
   * when it fits the inline budget (INLINE_BYTES) ...
   */
  h?: Uint8Array | { buffer: Uint8Array; position: number };
  /** ... else the blob id of the header in the outputs collection. */
  hg?: string;
  /**
   * The initial input, a value of its own: inline while header and input fit the inline budget
   * together ... Neither `i` nor `ig`: the snapshot has none, or it was written before the
   * initial input was split out and its header still carries it.
   */
  i?: Uint8Array | { buffer: Uint8Array; position: number };
  /** ... else the blob id of the initial input in the outputs collection (chunked like an output). */
  ig?: string;
  /** Finished (Completed, Failed or Cancelled). */
  f?: boolean;
  /**
   * The finish time, epoch ms on the backend's clock: set by the commit that first makes the
   * snapshot finished (kept by later finished writes), absent while it is unfinished. What
   * purgeFinished reads, through the finish index (see retention.ts).
   */
  fa?: number;
  /** Status (toStoredSnapshot's); absent on documents of older releases (then: `f`, or InProgress). */
  s?: StoredStatus;
  /** Task id of an AtTask position, else null. */
  p?: string | null;
  /** An InProgress wait for an event whose next task has no result; absent otherwise. */
  w?: WaitEntry;
  /** Pending events, in the order they were sent. */
  e?: EventEntry[];
  /** The last event sequence given out for this instance (its counter; 0 when absent). */
  es?: number;
  /** Task results. */
  r?: ResultRef[];
  /** lastCompletedTaskId. */
  l?: string | null;
  /** updatedAt, epoch ms. */
  u?: number;
  /** The schedule of the ready or awaited task; absent: runAt null, priority 3, queue "default". */
  sc?: ScheduleEntry;
  /** The attempts per task (absent or empty: none recorded). */
  at?: AttemptEntry[];
  /**
   * Ready index, present only while the position's task is ready now with no due time (no
   * result, not claimed without ttl, no runAt, no retryAt): qn = queue, qa = the effective time
   * effectiveTime(updatedAt, priority, agingMs), qi = instance id, qe = expiresAt of the claim on
   * that task (null: unclaimed). Discovery reads, per queue, `qe: null or qe <= now` by (qa, qi).
   */
  qn?: string;
  qa?: number;
  /** The instance id as `orderKey` (hex of its UTF-8 bytes): sorts in code point order everywhere. */
  qi?: string;
  qe?: number | null;
  /**
   * Timer ("due") index, present only while the runnable task has a due time: an AtTask runAt,
   * a wait's timeoutAt (no event of its name pending), or a retryAt (the latest of these): tn =
   * queue, tp = priority, ta = the due time, ti = instance id as `orderKey`, te = expiresAt of the
   * claim on the task (null: unclaimed). Discovery reads, per queue and priority, `ta <= now` and
   * `te: null or te <= now` by (ta, ti); its key is effectiveTime(ta, tp, agingMs).
   */
  tn?: string;
  tp?: number;
  ta?: number;
  ti?: string;
  te?: number | null;
}

/** Is this instance document a stored snapshot (not a claims-only placeholder)? */
export const isSnapshot = (doc: InstanceDoc | null | undefined): doc is InstanceDoc & { d: string } =>
  typeof doc?.d === "string";

/** A chunk of a blob (task output, large initial input or large header) in the outputs collection. */
export interface ChunkDoc {
  /** Instance id. */
  s: string;
  /** Blob id (random, never reused). */
  g: string;
  /** Chunk index and chunk count. */
  n: number;
  c: number;
  d: unknown;
}

/** Index names created by migrate(). */
export const INDEX = {
  /** The ready index (version 3): queue, effective time, instance id, claim expiry. */
  ready: "sayiir_ready_queue",
  blob: "sayiir_blob",
  blobInstance: "sayiir_blob_instance",
  /** The timer index (version 3): queue, priority, due time, instance id, claim expiry. */
  timers: "sayiir_timers_queue",
  /** The finish index (version 4): finish time, instance id; only finished snapshots have `fa`. */
  finished: "sayiir_finished",
} as const;

/** The ready and timer indexes of versions 1 and 2 (not led by the queue): dropped by version 3. */
export const OLD_INDEXES = ["sayiir_ready", "sayiir_timers"] as const;

/**
 * The inline budget of an instance document: the header, and the initial input after it, are
 * stored inline while together they fit; what does not fit is a blob in the outputs collection.
 */
export const INLINE_BYTES = 4 * 1024 * 1024;
/** An event payload of at most this size is stored inline in the instance document ... */
export const EVENT_INLINE_BYTES = 16 * 1024;
/** ... while the inline payloads of the instance's pending events stay within this total. */
export const EVENTS_INLINE_TOTAL = 1024 * 1024;
/** Chunk size of blobs: well under MongoDB's 16 MB document limit. */
export const CHUNK_BYTES = 8 * 1024 * 1024;

/** A document of the meta collection: the token counter or the schema version, in `n`. */
export interface MetaDoc {
  _id: string;
  n?: number;
}

/** The `_id`s of the meta documents. */
export const META = {
  /** `n`: the last fencing token reserved. */
  token: "token",
  /** `n`: the schema version (the last migration applied). */
  schema: "schema",
} as const;

/** What the adapter reads of an instance document, per purpose. */
export const PROJECTION = {
  /** A mutation: everything but the inline payloads (header, initial input, events). */
  state: { h: 0, i: 0, "e.b": 0 },
  /** A control operation: a mutation that also reads the header. */
  control: { i: 0, "e.b": 0 },
  /**
   * A page of discovery: what readiness is computed from, the index keys, and what tells whether
   * the input is an inline payload (claim-next then reads the claimed document in full at once).
   */
  page: {
    _id: 1,
    v: 1,
    d: 1,
    f: 1,
    s: 1,
    p: 1,
    w: 1,
    "r.t": 1,
    "r.g": 1,
    l: 1,
    hg: 1,
    ig: 1,
    "e.q": 1,
    "e.n": 1,
    u: 1,
    c: 1,
    sc: 1,
    at: 1,
    qn: 1,
    qa: 1,
    qi: 1,
    qe: 1,
    tn: 1,
    tp: 1,
    ta: 1,
    ti: 1,
    te: 1,
  },
  /** loadSnapshot: everything but the claims and the events. */
  load: { c: 0, e: 0 },
  /** loadPendingEvents. */
  events: { _id: 1, v: 1, d: 1, e: 1 },
  /** deleteSnapshot: the blobs to collect after the delete. */
  blobs: { r: 1, hg: 1, ig: 1, "e.g": 1 },
  /** listSnapshotsPage, and purgeFinished's pick. */
  id: { _id: 1 },
  /** loadTaskClaims. */
  claims: { _id: 1, c: 1 },
} as const;

/**
 * The tie-break key of the ready and timer indexes: the instance id's UTF-8 bytes in lower-case hex. Hex is
 * ASCII, so every server orders it the same way, and its order is the byte order of the UTF-8
 * encoding, i.e. code point order (core's `compareIds`). Storing the id itself would be ordered
 * by UTF-8 bytes on MongoDB but by UTF-16 code units on mongo-java-server (Java's
 * String.compareTo), which differ for ids mixing U+E000..U+FFFF with characters above U+FFFF.
 */
export function orderKey(instanceId: string): string {
  return Buffer.from(instanceId, "utf8").toString("hex");
}

/** listSnapshotsPage cursor: the last instance id of the page, base64url (opaque to callers). */
export function encodeCursor(instanceId: string): string {
  return Buffer.from(instanceId, "utf8").toString("base64url");
}

export function decodeCursor(cursor: string): string {
  return Buffer.from(cursor, "base64url").toString("utf8");
}
