/*
 * Key layout. Every key of one backend starts with a hash tag `{<prefix>:<shard>}`, so all keys
 * of one shard live in one Redis Cluster slot, and every Lua script touches one slot only (on a
 * standalone server, where slots do not matter, one script may cover several shards).
 *
 *   {P:layout}       hash, the store record: `shards` = the shard count of the store, recorded on
 *                    first use (see schema.ts)
 *   {P:K}:m:<id>     hash: the instance. Snapshot fields (single letters, see MetaField; the
 *                    initial input is a field of its own, not inside the header),
 *                    "r:<task id>" = that task's output, "c:<task id>" = that task's claim
 *                    "token|claimedAt|expiresAt|requestId|workerId" (requestId: hex), or after a
 *                    release the bare token, after a completion "token|requestId" (the field
 *                    keeps the last token issued for the task)
 *   {P:K}:e:<id>     hash: the instance's pending events. "n" = the last sequence issued (the
 *                    per-instance counter), "<seq>" (16 digits) = that event's payload
 *   {P:K}:o:<id>     sorted set (score 0, read by ZRANGEBYLEX): one member per pending event,
 *                    "<event name> NUL <seq, 16 digits> NUL <sentAt>", so the oldest pending
 *                    event of a name is the first member from "<name> NUL"
 *                    "a:<task id>" = that task's attempts "count|lastFailedAt|retryAt|error"
 *                    (failTasks and takeovers write it, saveSnapshot replaces it)
 *   {P:K}:ready      sorted set: instances of shard K in queue "default" whose ready task holds no
 *                    live claim, member = instance id, score = readyAt + offset, readyAt = updatedAt
 *                    (a timed-out wait: its timeoutAt; a runAt or retryAt: that), offset = (priority
 *                    - 3) x agingMs (field z), so the order is effectiveTime's (shifted by 2 x agingMs)
 *   {P:K}:ready:<q>  the same for queue <q> (one sorted set per shard and queue)
 *   {P:K}:leased     sorted set: instances whose ready task holds a live claim, score = the
 *                    claim's expiry (+inf without ttl); expired ones go back to ready lazily
 *   {P:K}:timers     sorted set: what of queue "default" is not ready yet but will be at a time:
 *                    waits for an event with a timeout (none pending), tasks with a future runAt
 *                    or retryAt (due = the later of the two); score = that time; discovery and
 *                    claim-next move every due one of the queues they serve to its queue's ready
 *                    set (score = that time + offset) first, as they move expired leases back
 *   {P:K}:timers:<q> the same for queue <q> (one timer set per shard and queue)
 *   {P:wake}         pub/sub channel (not a key): the scripts that file a task into a ready or
 *                    timer set publish its queue name there (see wake-ups.ts)
 *   {P:K}:ids        sorted set: every instance id of shard K (score 0, walked by ZRANGE BYLEX)
 *   {P:K}:done       sorted set: the finish-time index of shard K, every Completed, Failed or
 *                    Cancelled instance, score = its finish time (field `e`, epoch ms by Redis's
 *                    clock), member = its id; purgeFinished reads it oldest first (retention.ts)
 *   {P:K}:floor      string: highest fencing token of any instance deleted from shard K
 *   {P:K}:q:<req>    string: (shard, id, task id) of what one claim-next call claimed, NUL-joined,
 *                    so a second run of the same call returns them (expires; built in Lua only);
 *                    for a sendEvent call, the sequence it was given (expires)
 *
 * The instance id is always the whole tail of a key, after a fixed-length type marker, so no two
 * different ids (whatever characters they hold, "{" and ":" included) ever share a key, and the
 * hash tag (the first "{...}" of the key) is always ours. Task ids follow a fixed prefix in a
 * field name (snapshot fields are one letter, so they never collide); worker ids are the last
 * part of a value. Nothing is parsed out of a key. The scripts build keys and fields from the
 * same names (L, below), so nothing outside this file spells one.
 *
 * The shard of an instance is FNV-1a (32 bit) of its UTF-8 bytes modulo the shard count; every
 * client of one store must use the same prefix and shard count (the layout record enforces it).
 */

/** The queue whose ready set keeps the pre-issue-16 key `{P:K}:ready`. */
export const DEFAULT_QUEUE = "default";

const encoder = new TextEncoder();

/** FNV-1a over the UTF-8 bytes: stable across processes and platforms. */
export function fnv1a(value: string): number {
  let hash = 0x811c9dc5;
  for (const byte of encoder.encode(value)) {
    hash ^= byte;
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash >>> 0;
}

/** Prefixes of the other fields of the instance hash, followed by a task id. */
export const FieldPrefix = {
  /** The task's output. */
  result: "r:",
  /** The task's claim "token|claimedAt|expiresAt|requestId|workerId", or a tombstone. */
  claim: "c:",
  /** The task's attempts "count|lastFailedAt|retryAt|error" (see AttemptsFormat in replies.ts). */
  attempts: "a:",
} as const;

/** Fields of the instance hash `{P:K}:m:<id>` that hold the snapshot (single letters). */
export const MetaField = {
  /** toStoredSnapshot's header: everything but task outputs, lastCompletedTaskId and the initial input. */
  header: "h",
  /** "1" when Completed, Failed or Cancelled, else "0". */
  finished: "f",
  /** The stored status (toStoredSnapshot's); absent in records written before it was kept (never Paused or Cancelled). */
  status: "s",
  /** definitionHash. */
  definitionHash: "d",
  /** Task id of an InProgress AtTask position (toStoredSnapshot's positionTaskId); absent otherwise. */
  positionTaskId: "p",
  /** The task of the position of an InProgress or Paused snapshot (AtTask's, or the one after a wait), for cancel/pause/resume. */
  positionTask: "k",
  /** toStoredSnapshot's awaiting: the event name of an InProgress wait whose next task has no result; absent otherwise. */
  awaitedEvent: "w",
  /** The wait's next task (with `w`). */
  awaitedTask: "n",
  /** The wait's timeoutAt in epoch ms (with `w`; absent when the wait has none). */
  timeoutAt: "t",
  /** lastCompletedTaskId; absent when null. */
  lastCompletedTaskId: "l",
  /** updatedAt in epoch ms (decimal). */
  updatedAt: "u",
  /** initialInput bytes, stored once (not in the header); absent when the snapshot has none. */
  initialInput: "i",
  /** Request id of the cancel, pause or resume that wrote the header last (a second run of it answers OK). */
  controlRequest: "q",
  /** "sequence|request id" of the event the saveSnapshot that wrote the snapshot consumed (a second run of it answers OK). */
  consumed: "x",
  /** The queue of the ready or awaited task; absent: "default" (records written before issue 16 have none). */
  queue: "g",
  /** Its priority 1..5; absent: 3. */
  priority: "y",
  /** Its ready-index offset (priority - 3) x agingMs of the writer, in ms; absent: 0 (priority 3). */
  offset: "z",
  /**
   * When the position task may run (epoch ms: its runAt, or the retryAt of its attempts), or "h"
   * (held: failed with retryAt null); absent: when it became ready (updatedAt, or a wait's time).
   */
  due: "v",
  /** The position's runAt (epoch ms); absent: none. failTasks reads it: a retry is due at the later of the two. */
  runAt: "b",
  /**
   * The finish time (epoch ms, Redis's clock): written by the script that first makes the
   * instance Completed, Failed or Cancelled, kept by later terminal saves; absent while unfinished.
   */
  finishedAt: "e",
} as const;

/** Fields of the events hash `{P:K}:e:<id>` besides the payloads (whose fields are 16-digit sequences). */
export const EventField = {
  /** The last sequence issued to the instance. */
  counter: "n",
} as const;

/** Digits of a sequence in event fields and members (zero-padded, so they sort as numbers). */
export const SEQUENCE_DIGITS = 16;

/** What follows a shard's base `{P:K}:` in its keys. */
export const ShardKey = {
  /** `m:<id>`: the instance hash. */
  instance: "m:",
  ready: "ready",
  /** `ready:<queue>`: the ready set of a queue other than "default" (which is `ready`). */
  queueReady: "ready:",
  leased: "leased",
  ids: "ids",
  /** The finish-time index of the shard. */
  finished: "done",
  floor: "floor",
  timers: "timers",
  /** `timers:<queue>`: the timer set of a queue other than "default" (which is `timers`). */
  queueTimers: "timers:",
  /** `e:<id>`: the instance's pending events (payloads and the sequence counter). */
  events: "e:",
  /** `o:<id>`: the order of the instance's pending events, by name then sequence. */
  eventOrder: "o:",
  /** `q:<request id>`: what one claim-next call claimed, or the sequence one sendEvent call got. */
  request: "q:",
} as const;

/** What follows `{P:` in the wake-up channel `{P:wake}` (no shard number is a word). */
const WAKE = "wake";

/** The field of the store record `{P:layout}` that holds the shard count. */
export const RecordField = {
  shards: "shards",
  /** "1" once every instance finished before the finish-time index existed is in it (retention.ts). */
  finishIndex: "finishIndex",
} as const;

/** The hash field of a task's output. */
export const resultField = (taskId: string): string => `${FieldPrefix.result}${taskId}`;

/** The hash field of a task's attempts. */
export const attemptsField = (taskId: string): string => `${FieldPrefix.attempts}${taskId}`;

const luaString = (value: string): string => {
  if (!/^[a-z:}]+$/.test(value)) throw new Error(`not a plain name: ${value}`);
  return `'${value}'`;
};

/**
 * The names above as Lua string literals, for the scripts: they build keys and fields from these
 * only (`${L.instance} .. id`, `${L.result} .. task`, `${L.finished}`). Literals, not Lua
 * locals: a local captured by the scripts' helper functions would cost every call.
 */
export const L = {
  header: luaString(MetaField.header),
  finished: luaString(MetaField.finished),
  definitionHash: luaString(MetaField.definitionHash),
  positionTaskId: luaString(MetaField.positionTaskId),
  lastCompletedTaskId: luaString(MetaField.lastCompletedTaskId),
  updatedAt: luaString(MetaField.updatedAt),
  initialInput: luaString(MetaField.initialInput),
  status: luaString(MetaField.status),
  positionTask: luaString(MetaField.positionTask),
  awaitedEvent: luaString(MetaField.awaitedEvent),
  awaitedTask: luaString(MetaField.awaitedTask),
  timeoutAt: luaString(MetaField.timeoutAt),
  controlRequest: luaString(MetaField.controlRequest),
  consumed: luaString(MetaField.consumed),
  queue: luaString(MetaField.queue),
  priority: luaString(MetaField.priority),
  offset: luaString(MetaField.offset),
  due: luaString(MetaField.due),
  runAt: luaString(MetaField.runAt),
  finishedAt: luaString(MetaField.finishedAt),
  attempts: luaString(FieldPrefix.attempts),
  queueReady: luaString(ShardKey.queueReady),
  queueTimers: luaString(ShardKey.queueTimers),
  counter: luaString(EventField.counter),
  /** The length of the instance key's type marker, to get a shard's base from an instance key. */
  instanceLength: String(ShardKey.instance.length),
  sequenceDigits: String(SEQUENCE_DIGITS),
  result: luaString(FieldPrefix.result),
  claim: luaString(FieldPrefix.claim),
  /** The length of the claim prefix, to test a field name for it. */
  claimLength: String(FieldPrefix.claim.length),
  instance: luaString(ShardKey.instance),
  ready: luaString(ShardKey.ready),
  leased: luaString(ShardKey.leased),
  done: luaString(ShardKey.finished),
  ids: luaString(ShardKey.ids),
  floor: luaString(ShardKey.floor),
  timers: luaString(ShardKey.timers),
  events: luaString(ShardKey.events),
  eventOrder: luaString(ShardKey.eventOrder),
  /** What follows the shard number in a shard's base `{P:K}:`. */
  tagEnd: luaString("}:"),
  shards: luaString(RecordField.shards),
  /** The wake-up channel's tail, after `{P:` (a shard's base with its `K}:` replaced). */
  wakeTail: luaString(`${WAKE}}`),
} as const;

export interface InstanceKeys {
  shard: number;
  /** `{P:K}:`, the start of every key of the shard (what the shard scripts build keys from). */
  base: string;
  /** The instance hash: snapshot fields, task outputs and claims. */
  meta: string;
  ready: string;
  leased: string;
  ids: string;
  floor: string;
  timers: string;
  /** The pending events' payloads and sequence counter. */
  events: string;
  /** The pending events' order (by name, then sequence). */
  eventOrder: string;
}

export class KeyLayout {
  constructor(
    readonly prefix: string,
    readonly shards: number,
  ) {}

  shardOf(instanceId: string): number {
    return this.shards === 1 ? 0 : fnv1a(instanceId) % this.shards;
  }

  /** `{P:layout}`: the record of the shard count (its own slot, apart from every shard). */
  record(): string {
    return `{${this.prefix}:layout}`;
  }

  /**
   * `{P:wake}`: the pub/sub channel of the store's wake-ups (a channel, not a key: PUBLISH reaches
   * every node of a cluster). The scripts build it from a shard's base (lua.ts, `wake`).
   */
  wakeChannel(): string {
    return `${this.tagStart()}${WAKE}}`;
  }

  /** `{P:` : what the shard scripts prepend to a shard number (then `}:`) to get its base. */
  tagStart(): string {
    return `{${this.prefix}:`;
  }

  /** `{P:K}:` */
  base(shard: number): string {
    return `${this.tagStart()}${shard}}:`;
  }

  /** The ready set of the queue "default" of a shard (also the routing key of the shard scripts). */
  ready(shard: number): string {
    return `${this.base(shard)}${ShardKey.ready}`;
  }

  /** The ready set of one queue of a shard: `ready` for "default", `ready:<queue>` for another. */
  queueReady(shard: number, queue: string): string {
    return queue === DEFAULT_QUEUE ? this.ready(shard) : `${this.base(shard)}${ShardKey.queueReady}${queue}`;
  }

  leased(shard: number): string {
    return `${this.base(shard)}${ShardKey.leased}`;
  }

  ids(shard: number): string {
    return `${this.base(shard)}${ShardKey.ids}`;
  }

  /** `{P:K}:done`: the finish-time index of a shard. */
  finished(shard: number): string {
    return `${this.base(shard)}${ShardKey.finished}`;
  }

  floor(shard: number): string {
    return `${this.base(shard)}${ShardKey.floor}`;
  }

  /** The timer set of one queue of a shard: `timers` for "default", `timers:<queue>` for another. */
  timers(shard: number, queue: string = DEFAULT_QUEUE): string {
    return queue === DEFAULT_QUEUE
      ? `${this.base(shard)}${ShardKey.timers}`
      : `${this.base(shard)}${ShardKey.queueTimers}${queue}`;
  }

  /** `{P:K}:q:<request id>`: the request record of a claim-next call over shards starting at K. */
  request(shard: number | string, requestId: string): string {
    return `${this.tagStart()}${shard}}:${ShardKey.request}${requestId}`;
  }

  instance(instanceId: string): InstanceKeys {
    const shard = this.shardOf(instanceId);
    const base = this.base(shard);
    return {
      shard,
      base,
      meta: `${base}${ShardKey.instance}${instanceId}`,
      ready: `${base}${ShardKey.ready}`,
      leased: `${base}${ShardKey.leased}`,
      ids: `${base}${ShardKey.ids}`,
      floor: `${base}${ShardKey.floor}`,
      timers: `${base}${ShardKey.timers}`,
      events: `${base}${ShardKey.events}${instanceId}`,
      eventOrder: `${base}${ShardKey.eventOrder}${instanceId}`,
    };
  }

  /** Every shard index, 0..shards-1. */
  allShards(): number[] {
    return Array.from({ length: this.shards }, (_, i) => i);
  }
}

/*
 * listSnapshotsPage cursor: "r1." + shard + "." + base64url(last id returned in that shard).
 * Opaque to callers; decoded strictly so that a forged cursor gives ValidationError.
 */
export interface ListCursor {
  shard: number;
  after: string;
}

export function encodeCursor(cursor: ListCursor): string {
  return `r1.${cursor.shard}.${Buffer.from(cursor.after, "utf8").toString("base64url")}`;
}

export function decodeCursor(cursor: string, shards: number): ListCursor | undefined {
  const match = /^r1\.(\d{1,6})\.([A-Za-z0-9_-]*)$/.exec(cursor);
  if (match === null) return undefined;
  const shard = Number(match[1]);
  if (shard >= shards) return undefined;
  return { shard, after: Buffer.from(match[2] ?? "", "base64url").toString("utf8") };
}
