/*
 * Pure functions over an instance document: claim liveness, fences, pending events, and the
 * ready- and timer-index fields.
 * Every mutation reads the document, computes its next state here, and commits it with one
 * compare-and-set on `v` (see context.ts), so whatever is judged here (a live claim, a fence,
 * readiness) is exactly the state the write commits over.
 */
import type {
  CompletionOutcome,
  EventRef,
  Fence,
  PersistenceError,
  TaskClaim,
} from "@sayiir/persistence-core";
import { DEFAULT_AGING_MS, ErrorCode, effectiveTime } from "@sayiir/persistence-core";
import {
  consumeRefusal,
  type HeldClaimView,
  fenceHolds as holds,
  REVOKED_EXPIRY,
  resultRefusal,
  type StoredClaimView,
  type StoredStatus,
  type WriteView,
} from "@sayiir/persistence-core/adapter";
import { attemptsOn, scheduleOf } from "./attempts.js";
import {
  type ClaimEntry,
  type EventEntry,
  type InstanceDoc,
  isSnapshot,
  orderKey,
  type ResultRef,
  type WaitEntry,
} from "./layout.js";
import { isStale } from "./maintenance.js";

/**
 * Is a claim live at `now` (ms, the backend's clock)? A revoked claim never is: its expiry is the
 * epoch (REVOKED_EXPIRY), and it carries its revocation moment `x`.
 */
export const isLive = (claim: ClaimEntry, now: number): boolean =>
  claim.x === undefined && claim.d === undefined && (claim.e === null || claim.e > now);

/** The claim on `taskId`, live or expired, if any. */
export function claimOn(doc: InstanceDoc | null, taskId: string): ClaimEntry | undefined {
  return (doc?.c ?? []).find((entry) => entry.t === taskId);
}

/** The live claim on `taskId`, if any. */
export function liveClaimOn(doc: InstanceDoc | null, taskId: string, now: number): ClaimEntry | undefined {
  const claim = claimOn(doc, taskId);
  return claim !== undefined && isLive(claim, now) ? claim : undefined;
}

/** The claim on `taskId` as the kit's refusals read it (token and expiry). */
export function storedClaim(doc: InstanceDoc | null, taskId: string): StoredClaimView {
  const claim = claimOn(doc, taskId);
  return claim === undefined ? undefined : { token: Number(claim.k), expiresAt: expiry(claim) };
}

/** The claim on `taskId` as a release or an extend reads it (holder and expiry). */
export function heldClaim(doc: InstanceDoc | null, taskId: string): HeldClaimView {
  const claim = claimOn(doc, taskId);
  return claim === undefined ? undefined : { workerId: claim.w, expiresAt: expiry(claim) };
}

/** The expiry the kit judges: a revoked or lapsed claim is expired on every clock (the epoch). */
const expiry = (claim: ClaimEntry): number | null =>
  claim.x !== undefined || claim.d !== undefined ? REVOKED_EXPIRY : claim.e === null ? null : Number(claim.e);

/**
 * The claims with every one not yet revoked revoked at `now`, live or expired (an expired claim
 * nobody took over is revoked too: after a cancel no claim of the instance is listed): its expiry
 * set to the epoch (REVOKED_EXPIRY), so that no clock, however far behind, judges it live again,
 * and `x = now` (when it was revoked: what pruning counts from); its entry and token kept, so later
 * claims get larger tokens and the holder may still release it.
 */
export function revokedClaims(doc: InstanceDoc, now: number): ClaimEntry[] {
  return (doc.c ?? []).map((c): ClaimEntry => (c.x === undefined ? { ...c, e: REVOKED_EXPIRY, x: now } : c));
}

/**
 * The tasks whose claim a refusal should mark lapsed (`d`, see ClaimEntry): each item refused
 * with ClaimLostError whose claim on this version is still the one it names (its token), expired
 * at `now` and not yet revoked or lapsed. A claim taken over needs no mark: the takeover changed
 * the version already.
 */
export function lapsedClaims(
  doc: InstanceDoc | null,
  items: readonly Fence[],
  outcomes: readonly CompletionOutcome[],
  now: number,
): Set<string> {
  const lapsed = new Set<string>();
  for (const [i, item] of items.entries()) {
    if (outcomes[i]?.code !== ErrorCode.ClaimLost) continue;
    const claim = claimOn(doc, item.taskId);
    if (claim !== undefined && Number(claim.k) === item.token && isExpired(claim, now))
      lapsed.add(item.taskId);
  }
  return lapsed;
}

/** Is this claim expired at `now` by its own expiry (not revoked, not lapsed, with a ttl)? */
export const isExpired = (claim: ClaimEntry, now: number): boolean =>
  claim.x === undefined && claim.d === undefined && claim.e !== null && Number(claim.e) <= now;

/** The claims with those on `lapsed` marked lapsed at `now` (entry, token and expiry kept). */
export function markedLapsed(
  claims: readonly ClaimEntry[],
  lapsed: ReadonlySet<string>,
  now: number,
): ClaimEntry[] {
  return claims.map((c): ClaimEntry => (lapsed.has(c.t) && c.d === undefined ? { ...c, d: now } : c));
}

/**
 * A commit's changes with the claims on `lapsed` marked lapsed too (the commit's claims, or the
 * document's when it leaves them as they are), so that the commit carries its refusals' marks.
 */
export function withLapsed<T extends Partial<InstanceDoc>>(
  changes: T,
  doc: InstanceDoc | null,
  lapsed: ReadonlySet<string>,
  now: number,
): T {
  if (lapsed.size === 0) return changes;
  return { ...changes, c: markedLapsed(changes.c ?? doc?.c ?? [], lapsed, now) };
}

/**
 * The stored status as the heartbeat judges it (undefined: no snapshot). A document of an older
 * release has no `s`; it can only be InProgress, Completed or Failed, never Cancelled, which is
 * all the heartbeat asks.
 */
export const statusOf = (doc: InstanceDoc | null): StoredStatus | undefined =>
  isSnapshot(doc) ? doc.s : undefined;

/** The oldest pending event named `eventName`, if any. */
export function oldestEvent(doc: Pick<InstanceDoc, "e"> | null, eventName: string): EventEntry | undefined {
  let oldest: EventEntry | undefined;
  for (const event of doc?.e ?? []) {
    if (event.n === eventName && (oldest === undefined || event.q < oldest.q)) oldest = event;
  }
  return oldest;
}

/** Does the fence name the live claim of this document at `now`? */
export function fenceHolds(doc: InstanceDoc | null, fence: Fence, now: number): boolean {
  return holds(fence, storedClaim(doc, fence.taskId), now);
}

/** What a fenced write is judged on: this version of the document, at `now`. */
export function writeView(doc: InstanceDoc | null, fence: Fence | undefined, now: number): WriteView {
  return {
    found: isSnapshot(doc),
    finished: doc?.f === true,
    cancelled: doc?.s === "Cancelled",
    paused: doc?.s === "Paused",
    claim: fence === undefined ? undefined : storedClaim(doc, fence.taskId),
    now,
  };
}

/**
 * The claims with the one on `taskId` replaced by `entry` (or removed, when entry is undefined),
 * and the stale claims of other tasks dropped (else the array would only ever grow).
 */
export function withClaim(
  doc: InstanceDoc | null,
  taskId: string,
  entry: ClaimEntry | undefined,
  now: number,
): ClaimEntry[] {
  const rest = (doc?.c ?? []).filter((c) => c.t !== taskId && !isStale(c, now));
  return entry === undefined ? rest : [...rest, entry];
}

export function toTaskClaim(instanceId: string, entry: ClaimEntry): TaskClaim {
  return {
    instanceId,
    taskId: entry.t,
    workerId: entry.w,
    claimedAt: Number(entry.c),
    expiresAt: entry.e === null ? null : Number(entry.e),
    token: Number(entry.k),
  };
}

/** The fields the index entries are computed from. */
type IndexedView = Pick<InstanceDoc, "d" | "f" | "s" | "p" | "w" | "r" | "u" | "c" | "sc" | "at"> & {
  e?: ReadonlyArray<Pick<EventEntry, "n">>;
};

/** The task a ready or timer entry of this document offers: its AtTask task, else its wait's next task. */
export const runnableTask = (doc: Pick<InstanceDoc, "p" | "w">): string | undefined =>
  typeof doc.p === "string" ? doc.p : doc.w?.t;

/**
 * The task an index entry would offer and the expiry of the claim on it (null: unclaimed), or
 * null: not a snapshot, not InProgress, no such task, the task has a result, or a claim without
 * ttl holds it.
 */
function offered(doc: IndexedView): { task: string; expiry: number | null } | null {
  if (typeof doc.d !== "string" || doc.f === true) return null;
  if (doc.s !== undefined && doc.s !== "InProgress") return null;
  const task = runnableTask(doc);
  if (task === undefined) return null;
  if ((doc.r ?? []).some((r) => r.t === task)) return null;
  const claim = (doc.c ?? []).find((c) => c.t === task);
  if (claim !== undefined && claim.e === null) return null;
  return { task, expiry: claim === undefined ? null : Number(claim.e) };
}

const eventPending = (doc: IndexedView, eventName: string): boolean =>
  (doc.e ?? []).some((event) => event.n === eventName);

/**
 * Where an offered task belongs: ready now (with no due time: an AtTask without runAt, a wait
 * with an event of its name pending), due at a time (runAt, a wait's timeoutAt with no event
 * pending, a retryAt: the latest of them), or nowhere (a wait with neither event nor timeout, a
 * failure with retryAt null: held).
 */
function placement(doc: IndexedView, task: string): { due: number | null } | null {
  let due: number | null = null;
  if (typeof doc.p === "string") due = scheduleOf(doc).runAt;
  else {
    const wait = doc.w as WaitEntry;
    if (!eventPending(doc, wait.n)) {
      if (wait.o === null) return null;
      due = Number(wait.o);
    }
  }
  const retry = attemptsOn(doc, task)?.y;
  if (retry === null) return null;
  if (retry !== undefined) due = due === null ? Number(retry) : Math.max(due, Number(retry));
  return { due };
}

/**
 * The ready-index fields of a document state: present (qn, qa, qi, qe) only while the snapshot
 * is InProgress at a task that has no result and no claim without ttl, is ready now and has no
 * due time (see placement): qn = queue, qa = effectiveTime(updatedAt, priority, agingMs), qi =
 * the instance id as `orderKey` (code point order on every server), qe = the expiry of the
 * claim on that task, null when unclaimed. Discovery then reads `qe null or <= now`.
 */
export function readyFields(
  instanceId: string,
  doc: IndexedView,
  agingMs: number = DEFAULT_AGING_MS,
): { qn: string; qa: number; qi: string; qe: number | null } | null {
  const offer = offered(doc);
  if (offer === null) return null;
  const place = placement(doc, offer.task);
  if (place === null || place.due !== null) return null;
  const { priority, queue } = scheduleOf(doc);
  const qa = effectiveTime(Number(doc.u ?? 0), priority, agingMs);
  return { qn: queue, qa, qi: orderKey(instanceId), qe: offer.expiry };
}

/**
 * The timer-index fields: present (tn, tp, ta, ti, te) only while the runnable task has a due
 * time (see placement): tn = queue, tp = priority, ta = the due time, te = the expiry of the
 * claim on the task (null: unclaimed). Discovery reads `ta <= now` and `te null or <= now`.
 */
export function timerFields(
  instanceId: string,
  doc: IndexedView,
): { tn: string; tp: number; ta: number; ti: string; te: number | null } | null {
  const offer = offered(doc);
  if (offer === null) return null;
  const place = placement(doc, offer.task);
  if (place === null || place.due === null) return null;
  const { priority, queue } = scheduleOf(doc);
  return { tn: queue, tp: priority, ta: place.due, ti: orderKey(instanceId), te: offer.expiry };
}

export const READY_FIELDS = ["qn", "qa", "qi", "qe"] as const;
export const TIMER_FIELDS = ["tn", "tp", "ta", "ti", "te"] as const;

/**
 * How a commit changes the pending events (never by rewriting the array, so that a document
 * read without the inline payloads is never truncated): append one, remove some by sequence,
 * or remove all.
 */
export interface EventsChange {
  push?: EventEntry;
  pull?: readonly number[];
  clear?: boolean;
}

/** The pending events after `change` (for the index fields; payloads as read). */
function nextEvents(doc: InstanceDoc | null, change: EventsChange | undefined): EventEntry[] {
  if (change?.clear === true) return [];
  const pulled = new Set(change?.pull ?? []);
  const events = (doc?.e ?? []).filter((event) => !pulled.has(event.q));
  return change?.push === undefined ? events : [...events, change.push];
}

type Update = {
  $set: Record<string, unknown>;
  $unset?: Record<string, "">;
  $push?: Record<string, unknown>;
  $pull?: Record<string, unknown>;
};

/**
 * The update that moves `doc` (as read) to `doc + changes` (minus `remove`, with `events`
 * applied), with a new version and recomputed ready and timer fields. Only changed fields are
 * sent, so a document read with a projection is never truncated.
 */
export function nextUpdate(
  instanceId: string,
  doc: InstanceDoc | null,
  changes: Partial<InstanceDoc>,
  remove: readonly string[],
  version: string,
  events?: EventsChange,
  agingMs: number = DEFAULT_AGING_MS,
): Update {
  const next: Partial<InstanceDoc> = { ...(doc ?? {}), ...changes, e: nextEvents(doc, events) };
  for (const field of remove) delete (next as Record<string, unknown>)[field];
  const set: Record<string, unknown> = { ...changes, v: version };
  const unset = new Set(remove);
  const ready = readyFields(instanceId, next, agingMs);
  const timer = timerFields(instanceId, next);
  if (ready === null) for (const field of READY_FIELDS) unset.add(field);
  else Object.assign(set, ready);
  // Timer fields are removed only where they are (the document as read has them: every
  // projection a commit reads with includes them).
  if (timer === null) {
    if (TIMER_FIELDS.some((field) => doc?.[field] !== undefined)) for (const f of TIMER_FIELDS) unset.add(f);
  } else Object.assign(set, timer);
  if (events?.clear === true) unset.add("e");
  for (const field of Object.keys(set)) unset.delete(field);
  const update: Update = { $set: set };
  if (unset.size > 0) update.$unset = Object.fromEntries([...unset].map((f) => [f, ""]));
  if (events?.clear !== true && events?.push !== undefined) update.$push = { e: events.push };
  if (events?.clear !== true && (events?.pull ?? []).length > 0) {
    update.$pull = { e: { q: { $in: [...(events?.pull ?? [])] } } };
  }
  return update;
}

/**
 * What a commit of `changes` over `doc` (as read) does to the finish time `fa`: "start" when it
 * first makes the snapshot finished (a new document, a placeholder or an unfinished snapshot),
 * "clear" when it leaves unfinished a snapshot that was finished (no write does today: finished
 * workflows are never reopened; but the field must not outlive the state), undefined: unchanged
 * (a finished write over a finished snapshot keeps its first finish time; a commit that does not
 * set `f`, a claim, an event, never finishes anything).
 */
export function finishChange(
  doc: Pick<InstanceDoc, "d" | "f" | "fa"> | null,
  changes: Pick<InstanceDoc, "f">,
): "start" | "clear" | undefined {
  if (changes.f === undefined) return undefined;
  const wasFinished = typeof doc?.d === "string" && doc.f === true;
  if (changes.f === true) return wasFinished ? undefined : "start";
  return wasFinished || doc?.fa !== undefined ? "clear" : undefined;
}

/** The blob ids of a document's pending events. */
export function eventBlobsOf(doc: Pick<InstanceDoc, "e">): string[] {
  return (doc.e ?? []).flatMap((event) => (event.g === undefined ? [] : [event.g]));
}

/** What a saveSnapshot does to the pending events: the change of its commit, and the blobs it frees. */
export interface Consumption {
  change: EventsChange | undefined;
  /** Blobs of the events it removes: garbage once the commit lands. */
  garbage: string[];
}

/**
 * What a saveSnapshot over `doc` does to its pending events: a write that ends the workflow
 * (`finished`) removes them all; else the event it consumes (if any) must be the oldest pending
 * one of its name and is removed. Throws the kit's refusal (Conflict) otherwise; judged after the
 * fence and the state, on the version the commit replaces.
 */
export function consumption(
  instanceId: string,
  doc: InstanceDoc | null,
  consume: EventRef | undefined,
  finished: boolean,
): Consumption {
  const refusal: PersistenceError | null = consumeRefusal(
    instanceId,
    consume,
    consume === undefined ? undefined : oldestEvent(doc, consume.eventName)?.q,
  );
  if (refusal !== null) throw refusal;
  const events = doc?.e ?? [];
  if (finished) {
    return events.length === 0
      ? { change: undefined, garbage: [] }
      : { change: { clear: true }, garbage: eventBlobsOf(doc ?? {}) };
  }
  if (consume === undefined) return { change: undefined, garbage: [] };
  const consumed = events.find((event) => event.q === consume.sequence);
  return { change: { pull: [consume.sequence] }, garbage: consumed?.g === undefined ? [] : [consumed.g] };
}

/** One completion of a completeTasks batch, its output already stored under `blobId`. */
export interface Completing {
  taskId: string;
  token: number;
  blobId: string;
  /** The output's size and SHA-256 (stored in its result entry: see ResultRef). */
  size?: number;
  hash?: Uint8Array;
}

/** The result entry of a completion (with the output's size and hash when known). */
export function resultRef(item: Completing): ResultRef {
  const ref: ResultRef = { t: item.taskId, g: item.blobId };
  if (item.size !== undefined && item.hash !== undefined) Object.assign(ref, { z: item.size, x: item.hash });
  return ref;
}

/** What one compare-and-set of an instance document does for the completions of its tasks. */
export interface CompletionPlan {
  /** Per completion (same order): null when it goes into this commit, else why not. */
  outcomes: CompletionOutcome[];
  /** The changes of the commit; undefined when every completion is refused (nothing to write). */
  changes: Partial<InstanceDoc> | undefined;
  /** Blob ids of earlier results of those tasks: garbage once the commit lands. */
  replaced: string[];
}

/**
 * Judges each completion on this version of the document, with saveTaskResult's order (no
 * snapshot: NotFound; the claim with that token not live: ClaimLost; finished: Conflict), and
 * folds the accepted ones into one set of changes: their results in, their claims out (with the
 * stale claims of other tasks), lastCompletedTaskId the last of them, updatedAt never backwards.
 * A refused completion contributes nothing, so its claim stays as it is.
 */
export function completionPlan(
  instanceId: string,
  doc: InstanceDoc | null,
  items: readonly Completing[],
  now: number,
): CompletionPlan {
  const outcomes = items.map(
    (item): CompletionOutcome => resultRefusal(instanceId, item, writeView(doc, item, now)),
  );
  const accepted = items.filter((_, i) => outcomes[i] === null);
  const last = accepted[accepted.length - 1];
  if (doc === null || last === undefined) return { outcomes, changes: undefined, replaced: [] };
  const done = new Set(accepted.map((item) => item.taskId));
  const results = doc.r ?? [];
  const r: ResultRef[] = results.filter((e) => !done.has(e.t));
  for (const item of accepted) r.push(resultRef(item));
  return {
    outcomes,
    changes: {
      r,
      l: last.taskId,
      u: Math.max(Number(doc.u ?? 0), now),
      c: (doc.c ?? []).filter((e) => !done.has(e.t) && !isStale(e, now)),
    },
    replaced: results.filter((e) => done.has(e.t)).map((e) => e.g),
  };
}
