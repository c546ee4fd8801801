import { createHash, randomBytes } from "node:crypto";
import { DEFAULT_QUEUE } from "@sayiir/persistence-core";
import { type Item, type Key, S } from "./dynamo.js";

/*
 * Single-table layout: every key, index and attribute name lives here; nobody else builds names.
 * Every id is hashed (SHA-256, base64url: 43 characters) into keys, so ids of any length (up to
 * 1,536 UTF-8 bytes) and any character fit DynamoDB's key limits and never collide by
 * concatenation; the exact ids are stored as attributes and checked on read.
 *
 *   item            PK                               SK                      other attributes
 *   head            <P>I#<h(instanceId)>             H                       iid, gen, st, kind, hd | hc/hn/hl, id | ic/in/il, pos, last, upd, def,
 *                                                                            inc, evn, ev/tmo (only while waiting for an event), nc,
 *                                                                            q, pri, rat, hold, att (schedule and attempts),
 *                                                                            GPK/GSK (only while ready), TPK/TSK (only on a timer), LPK/LSK,
 *                                                                            fin/FPK/FSK (only once finished)
 *   task result     <P>I#<h(instanceId)>             R#<gen>#<h(taskId)>     tid, gen, at, d | c/n/l/s
 *   claim           <P>I#<h(instanceId)>             L#<h(taskId)>           iid, tid, tok, w, ca, exp, nc (w/ca/exp/nc absent: released; cn: the nonce of the call that released it)
 *   event           <P>I#<h(instanceId)>             E#<inc>#<h(name)>#<seq> en, seq, sat, inc, nc, at, d | c/n/l
 *   delete marker   <P>I#<h(instanceId)>             D                       op, at, ttl (written by deleteSnapshot's commit)
 *   chunk           <P>C#<chunkSetId>#<index>        C                       own, at, d
 *   migration mark  <P>M                             <name of the pass>      at (a data migration of this key prefix that completed)
 *
 * <P> is the key prefix, length-prefixed so that two prefixes can never produce the same key.
 * GSI "ready": GPK = <P>Q#<shard> for the queue "default", <P>Q#<h(queue)>#<shard> for any other
 *              (one ordered partition set per queue), GSK = zero-padded discovery key + "#" + instance
 *              id (truncated). The discovery key is the effective time shifted by a constant:
 *              readyAt + (priority - 3) x agingMs (floored at 0), the same order as readyAt +
 *              (priority - 1) x agingMs, and for priority 3 exactly the readyAt older heads are keyed by.
 *              While claimed by claim-next: GPK = <P>K#[<h(queue)>#]<shard> ("leased"), GSK =
 *              zero-padded lease end + "#" + id.
 * GSI "list":  LPK = <P>L#<shard>, LSK = h(instanceId).
 * GSI "timer": TPK = <P>T#[<h(queue)>#]<shard>, TSK = zero-padded due time + "." + priority + "#" +
 *              instance id (truncated; heads written before issue 16: due + "#" + id, priority 3):
 *              waits for an event with a timeout and no event pending (due: timeoutAt), tasks with a
 *              future runAt or retryAt (due: that time). Sparse; claim-next moves a due one to the
 *              leased partition of "ready".
 * GSI "finished": FPK = <P>F#<shard>, FSK = zero-padded finish time + "#" + instance id (truncated).
 *              Sparse: only finished heads carry the keys (written with `fin`, the finish time, by
 *              the write that first finishes the workflow); purgeFinished reads it oldest first.
 * Events live under the head's incarnation `inc` (fresh when the head is created): the events of
 * a deleted instance are never seen by one re-created under the same id.
 */

/** Attribute names of every item. */
export const ATTR = {
  pk: "PK",
  sk: "SK",
  readyPk: "GPK",
  readySk: "GSK",
  listPk: "LPK",
  listSk: "LSK",
  timerPk: "TPK",
  timerSk: "TSK",
  finishedPk: "FPK",
  finishedSk: "FSK",
  /** Head: when the workflow first finished (epoch ms, the backend's clock); absent while unfinished. */
  finishedAt: "fin",
  /** Head and claim: the exact instance id. */
  instanceId: "iid",
  /** Result and claim: the exact task id. */
  taskId: "tid",
  /** Head and result: the generation (a fresh id per saveSnapshot). */
  generation: "gen",
  /** Head: STATUS.inProgress or STATUS.finished (Paused is in progress: it takes results). */
  status: "st",
  /** Head: the stored status (InProgress, Paused, Completed, Failed, Cancelled); absent on older heads. */
  kind: "kind",
  /** Head: the incarnation its events are stored under (fresh when the head is created). */
  incarnation: "inc",
  /** Head: how many events were sent to this incarnation (the last sequence given). */
  eventCount: "evn",
  /** Head: the event an InProgress wait awaits (absent unless waiting, next task without result). */
  awaitedEvent: "ev",
  /** Head: that wait's timeoutAt (absent: no timeout). */
  timeoutAt: "tmo",
  /** Head: the queue of the ready or awaited task (absent: "default"). */
  queue: "q",
  /** Head: its priority 1..5 (absent: 3). */
  priority: "pri",
  /** Head: when the position's task is ready by its schedule (max of runAt and retryAt; absent: at its write). */
  readyAt: "rat",
  /** Head: present when the position's task is held (a failure without retryAt): in no index. */
  held: "hold",
  /** Head: the attempts per task, JSON [{ taskId, count, lastError, lastFailedAt, retryAt? }] (absent: none). */
  attempts: "att",
  /** Event: the exact event name. */
  eventName: "en",
  /** Event: its sequence (per instance, across names). */
  sequence: "seq",
  /** Event: sentAt (client clock). */
  sentAt: "sat",
  /** Head: the task of an AtTask position. */
  position: "pos",
  /** Head: lastCompletedTaskId. */
  lastCompleted: "last",
  /** Head: updatedAt (epoch ms). */
  updatedAt: "upd",
  /** Head: the workflow definition hash. */
  definitionHash: "def",
  /** Result, chunk and delete marker: when it was written (client clock), read by cleanup(). */
  writtenAt: "at",
  /** Claim: the fencing token (kept by a released claim's tombstone). */
  token: "tok",
  /** Claim: the holder (absent: released). */
  worker: "w",
  claimedAt: "ca",
  /** Claim: expiresAt (absent: no ttl). */
  expiresAt: "exp",
  /**
   * Claim and event: random per attempt, to recognise our own landed write. Head: the same, of the
   * cancel, pause or resume that last changed it in place (kept by saves): with `gen`, its version.
   */
  nonce: "nc",
  /**
   * Claim: lapsed (epoch ms, the holder's clock): the claim had expired and a call of its holder
   * was refused for it; that refusal wrote this first (see lapse.ts). Every fenced write and
   * renewal requires it absent, so a call of the holder judged live before the claim's end and
   * still in flight cannot land after the refusal. Removed with the holder (release, takeover).
   */
  lapsed: "lp",
  /** Claim tombstone: the nonce of the completeTasks completion that released it. */
  completedBy: "cn",
  /** Delete marker: the id of the deleteSnapshot call that committed. */
  op: "op",
  /** Chunk: the partition key of the item that owns it. */
  owner: "own",
  /** Tombstones and delete markers: DynamoDB's TTL deletes them after this (epoch seconds). */
  ttl: "ttl",
} as const;

/** Attribute DynamoDB's TTL deletes released-claim tombstones by (epoch seconds). */
export const TTL_ATTRIBUTE = ATTR.ttl;

/**
 * A stored byte value (see chunks.ts) is `<prefix>d` (inline bytes) or `<prefix>c`, `<prefix>n`,
 * `<prefix>l` (chunk set id, chunk count, byte length), and on result and event items also `s`
 * (the SHA-256 of a chunked value, base64url: what lets a save point at it again unchanged).
 * Results and chunks use no prefix.
 */
export const VALUE = { inline: "d", chunkSet: "c", count: "n", length: "l", hash: "s" } as const;
/** Prefixes of the two values a head stores: the snapshot header and the initial input. */
export const HEAD_VALUE = { header: "h", input: "i" } as const;

/** Values of ATTR.status. */
export const STATUS = { inProgress: "P", finished: "F" } as const;

/** `#name` placeholders of attribute names, comma-separated (see dynamo.ts `expressions`). */
export const names = (...attributes: string[]): string => attributes.map((a) => `#${a}`).join(", ");

export const READY_INDEX = "ready";
export const LIST_INDEX = "list";
export const TIMER_INDEX = "timer";
export const FINISHED_INDEX = "finished";
export const HEAD_SK = "H";
export const CHUNK_SK = "C";
/** Sort key of the marker a deleteSnapshot leaves (with a TTL) to recognise its own retried commit. */
export const DELETE_MARKER_SK = "D";
const RESULT_SK_PREFIX = "R#";
const CLAIM_SK_PREFIX = "L#";
const EVENT_SK_PREFIX = "E#";
/** Byte values up to this size are stored inline in their item; larger ones are chunked. */
export const INLINE_MAX_BYTES = 300_000;
/** Size of one chunk item's payload (items are capped at 400 KB). */
export const CHUNK_BYTES = 350_000;
/** Lease end of a claim without ttl (16 digits, after every real time). */
const LEASE_FOREVER = "9999999999999999";
/** Longest instance-id part of the ready index sort key, in UTF-16 units (3 bytes each at most). */
const GSK_ID_UNITS = 300;

const key = (pk: string, sk: string): Key => ({ [ATTR.pk]: S(pk), [ATTR.sk]: S(sk) });

/** The primary key of an item read from the table. */
export function keyOf(item: Item): Key {
  return { [ATTR.pk]: item[ATTR.pk] as Item[string], [ATTR.sk]: item[ATTR.sk] as Item[string] };
}

/** A key (or an item) as a string, to look items up by key in a Map. */
export function keyString(key: Key): string {
  return `${key[ATTR.pk]?.S}\u0000${key[ATTR.sk]?.S}`;
}

/** SHA-256 of the UTF-8 bytes, base64url without padding (43 characters). */
export function hashId(id: string): string {
  return createHash("sha256").update(id, "utf8").digest("base64url");
}

export function freshId(): string {
  return randomBytes(16).toString("base64url");
}

export class Layout {
  readonly base: string;
  constructor(
    keyPrefix: string,
    readonly shards: number,
    /** The backend's agingMs: one priority level of the discovery key. */
    readonly agingMs: number = 60_000,
  ) {
    this.base = `p${keyPrefix.length}:${keyPrefix}#`;
  }

  instancePk(instanceId: string): string {
    return this.instancePkOfHash(hashId(instanceId));
  }

  /** The instance partition key from the hash of its id (what the list index's LSK holds). */
  instancePkOfHash(hash: string): string {
    return `${this.base}I#${hash}`;
  }

  resultSk(generation: string, taskId: string): string {
    return `${this.resultPrefix(generation)}${hashId(taskId)}`;
  }

  resultPrefix(generation: string): string {
    return `${RESULT_SK_PREFIX}${generation}#`;
  }

  isResultSk(sk: string): boolean {
    return sk.startsWith(RESULT_SK_PREFIX);
  }

  claimSk(taskId: string): string {
    return `${CLAIM_SK_PREFIX}${hashId(taskId)}`;
  }

  /** The sort key prefix every claim item of an instance shares. */
  claimPrefix(): string {
    return CLAIM_SK_PREFIX;
  }

  /** The sort key prefix of every event of an incarnation. */
  eventPrefix(incarnation: string): string {
    return `${EVENT_SK_PREFIX}${incarnation}#`;
  }

  /** The sort key prefix of the events of one name (oldest first in key order). */
  eventNamePrefix(incarnation: string, eventName: string): string {
    return `${this.eventPrefix(incarnation)}${hashId(eventName)}#`;
  }

  eventSk(incarnation: string, eventName: string, sequence: number): string {
    return `${this.eventNamePrefix(incarnation, eventName)}${String(sequence).padStart(16, "0")}`;
  }

  isEventSk(sk: string): boolean {
    return sk.startsWith(EVENT_SK_PREFIX);
  }

  eventKey(pk: string, incarnation: string, eventName: string, sequence: number): Key {
    return key(pk, this.eventSk(incarnation, eventName, sequence));
  }

  chunkPk(chunkSetId: string, index: number): string {
    return `${this.base}C#${chunkSetId}#${index}`;
  }

  /** The chunk set id of a chunk item's partition key, or undefined when it is not a chunk's. */
  chunkSetOfPk(pk: string): string | undefined {
    const prefix = `${this.base}C#`;
    if (!pk.startsWith(prefix)) return undefined;
    const rest = pk.slice(prefix.length);
    return rest.slice(0, rest.lastIndexOf("#"));
  }

  /** The index of a chunk within its set, from its partition key. */
  chunkIndexOfPk(pk: string): number {
    return Number(pk.slice(pk.lastIndexOf("#") + 1));
  }

  headKey(pk: string): Key {
    return key(pk, HEAD_SK);
  }

  claimKey(pk: string, taskId: string): Key {
    return key(pk, this.claimSk(taskId));
  }

  resultKey(pk: string, generation: string, taskId: string): Key {
    return key(pk, this.resultSk(generation, taskId));
  }

  deleteMarkerKey(pk: string): Key {
    return key(pk, DELETE_MARKER_SK);
  }

  chunkKey(chunkSetId: string, index: number): Key {
    return key(this.chunkPk(chunkSetId, index), CHUNK_SK);
  }

  shardOf(instanceId: string): number {
    const digest = createHash("sha256").update(instanceId, "utf8").digest();
    return digest.readUInt32BE(0) % this.shards;
  }

  /** The partition suffix of a queue: none for "default" (the layout of older heads), else its hash. */
  #queuePart(queue: string): string {
    return queue === DEFAULT_QUEUE ? "" : `${hashId(queue)}#`;
  }

  readyPk(shard: number, queue: string = DEFAULT_QUEUE): string {
    return `${this.base}Q#${this.#queuePart(queue)}${shard}`;
  }

  /** The discovery key of a task ready at `readyAt` with `priority` (see the layout comment). */
  discoveryKey(readyAt: number, priority: number): number {
    return Math.max(0, readyAt + (priority - 3) * this.agingMs);
  }

  /** The ready partition's sort key: the discovery key, then the instance id. */
  readySk(readyAt: number, priority: number, instanceId: string): string {
    return this.timeSk(this.discoveryKey(readyAt, priority), instanceId);
  }

  /** Zero-padded time + "#" + the instance id (truncated to GSK_ID_UNITS, well formed). */
  timeSk(time: number, instanceId: string): string {
    let id = instanceId.slice(0, GSK_ID_UNITS);
    if (!id.isWellFormed()) id = id.slice(0, -1);
    return `${String(time).padStart(16, "0")}#${id}`;
  }

  /** The time at the front of a ready, leased or timer sort key. */
  timeOfSk(sk: string): number {
    return Number(sk.slice(0, 16));
  }

  /** Partition of the ready index holding heads claimed by claim-next, sorted by lease end. */
  leasedPk(shard: number, queue: string = DEFAULT_QUEUE): string {
    return `${this.base}K#${this.#queuePart(queue)}${shard}`;
  }

  isLeasedPk(readyPk: string): boolean {
    return readyPk.startsWith(`${this.base}K#`);
  }

  /** Lease sort key: when others may take the claim over (expiresAt + skew budget; no ttl: never). */
  leaseSk(until: number | undefined, instanceId: string): string {
    const sk = this.timeSk(until ?? 0, instanceId);
    return until === undefined ? `${LEASE_FOREVER}${sk.slice(LEASE_FOREVER.length)}` : sk;
  }

  /** Partition of the timer index: what comes due later (waits' timeouts, runAt, retryAt). */
  timerPk(shard: number, queue: string = DEFAULT_QUEUE): string {
    return `${this.base}T#${this.#queuePart(queue)}${shard}`;
  }

  timerSk(due: number, priority: number, instanceId: string): string {
    const sk = this.timeSk(due, instanceId);
    return `${sk.slice(0, 16)}.${priority}${sk.slice(16)}`;
  }

  /** The upper bound (exclusive) of the timer keys due at or before `now`. */
  timerCut(now: number): string {
    return String(now + 1).padStart(16, "0");
  }

  /** The due time and priority of a timer sort key (older keys carry no priority: 3). */
  parseTimerSk(sk: string): { due: number; priority: number } {
    const due = this.timeOfSk(sk);
    return sk[16] === "." ? { due, priority: Number(sk[17]) } : { due, priority: 3 };
  }

  /** Partition of the finished index (finished heads, by finish time). */
  finishedPk(shard: number): string {
    return `${this.base}F#${shard}`;
  }

  finishedSk(finishedAt: number, instanceId: string): string {
    return this.timeSk(finishedAt, instanceId);
  }

  /** The upper bound (exclusive) of the finished keys of finishes strictly before `before`. */
  finishedCut(before: number): string {
    return String(before).padStart(16, "0");
  }

  /** The key of the mark a completed data migration (`name`) of this key prefix leaves. */
  migrationKey(name: string): Key {
    return key(`${this.base}M`, name);
  }

  listPk(shard: number): string {
    return `${this.base}L#${shard}`;
  }

  /** The list index's sort key of an instance: the hash of its id (what a cursor carries). */
  listSk(instanceId: string): string {
    return hashId(instanceId);
  }

  /** Opaque listing cursor: the shard and the hash of the last instance id returned. */
  encodeCursor(shard: number, lastHash: string): string {
    return `${shard}.${lastHash}`;
  }

  decodeCursor(cursor: string): { shard: number; lastHash: string } | undefined {
    const match = /^(\d{1,3})\.([A-Za-z0-9_-]{43})$/.exec(cursor);
    if (!match) return undefined;
    const shard = Number(match[1]);
    if (shard >= this.shards) return undefined;
    return { shard, lastHash: match[2] as string };
  }
}
