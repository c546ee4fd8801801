/*
 * Pure functions over an instance document: claim liveness, fences, and the ready-index fields.
 * Every mutation reads the document, computes its next state here, and commits it with one
 * compare-and-set on `v` (see context.ts), so whatever is judged here (a live claim, a fence,
 * readiness) is exactly the state the write commits over.
 */
import type { CompletionOutcome, Fence, TaskClaim } from "@sayiir/persistence-core";
import {
  type HeldClaimView,
  fenceHolds as holds,
  resultRefusal,
  type StoredClaimView,
  type WriteView,
} from "@sayiir/persistence-core/adapter";
import { type ClaimEntry, type InstanceDoc, isSnapshot, orderKey, type ResultRef } from "./layout.js";
import { isStale } from "./maintenance.js";

/** Is a claim live at `now` (ms, the backend's clock)? */
export const isLive = (claim: ClaimEntry, now: number): boolean => claim.e === null || claim.e > now;

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

const expiry = (claim: ClaimEntry): number | null => (claim.e === null ? null : Number(claim.e));

/** Does the fence name the live claim of this document at `now`? */
export function fenceHolds(doc: InstanceDoc | null, fence: Fence, now: number): boolean {
  return holds(fence, storedClaim(doc, fence.taskId), now);
}

/** What a fenced write is judged on: this version of the document, at `now`. */
export function writeView(doc: InstanceDoc | null, fence: Fence | undefined, now: number): WriteView {
  return {
    found: isSnapshot(doc),
    finished: doc?.f === true,
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

/**
 * The ready-index fields of a document state: present (qa, qi, qe) only while the snapshot is
 * InProgress at a task that has no result and no claim without ttl; qe is the expiry of the
 * claim on that task, null when unclaimed. Discovery then reads `qe null or <= now`. qi is the
 * instance id as `orderKey` (code point order on every server).
 */
export function readyFields(
  instanceId: string,
  doc: Pick<InstanceDoc, "d" | "f" | "p" | "r" | "u" | "c">,
): { qa: number; qi: string; qe: number | null } | null {
  if (typeof doc.d !== "string" || doc.f === true) return null;
  const task = doc.p;
  if (typeof task !== "string") return null;
  if ((doc.r ?? []).some((r) => r.t === task)) return null;
  const claim = (doc.c ?? []).find((c) => c.t === task);
  if (claim !== undefined && claim.e === null) return null;
  return {
    qa: Number(doc.u ?? 0),
    qi: orderKey(instanceId),
    qe: claim === undefined ? null : Number(claim.e),
  };
}

export const READY_FIELDS = ["qa", "qi", "qe"] as const;

/**
 * The update that moves `doc` (as read) to `doc + changes` (minus `remove`), with a new version
 * and recomputed ready fields. Only changed fields are sent, so a document read with a
 * projection is never truncated.
 */
export function nextUpdate(
  instanceId: string,
  doc: InstanceDoc | null,
  changes: Partial<InstanceDoc>,
  remove: readonly string[],
  version: string,
): { $set: Record<string, unknown>; $unset?: Record<string, ""> } {
  const next: Partial<InstanceDoc> = { ...(doc ?? {}), ...changes };
  for (const field of remove) delete (next as Record<string, unknown>)[field];
  const ready = readyFields(instanceId, next);
  const set: Record<string, unknown> = { ...changes, v: version };
  const unset = new Set(remove);
  if (ready === null) for (const field of READY_FIELDS) unset.add(field);
  else Object.assign(set, ready);
  for (const field of Object.keys(set)) unset.delete(field);
  if (unset.size === 0) return { $set: set };
  return { $set: set, $unset: Object.fromEntries([...unset].map((f) => [f, ""])) };
}

/** One completion of a completeTasks batch, its output already stored under `blobId`. */
export interface Completing {
  taskId: string;
  token: number;
  blobId: string;
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
  for (const item of accepted) r.push({ t: item.taskId, g: item.blobId });
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
