import { type EventRef, type Fence, isClaimLive, type TaskClaim } from "../claims.js";
import { failures, type PersistenceError } from "../errors.js";
import type { StoredStatus } from "./stored.js";

/** The stored claim a fence is checked against: its token and expiry (no record: undefined). */
export type StoredClaimView = Pick<TaskClaim, "token" | "expiresAt"> | undefined;

/** Does `fence` name the live claim? No fence: nothing to check. */
export function fenceHolds(fence: Fence | undefined, claim: StoredClaimView, now: number): boolean {
  if (fence === undefined) return true;
  return claim !== undefined && claim.token === fence.token && isClaimLive(claim, now);
}

/** What a write is checked against, read inside the adapter's atomic step. */
export interface WriteView {
  /** The stored snapshot exists. */
  found: boolean;
  /** The stored snapshot is Completed, Failed or Cancelled. */
  finished: boolean;
  /** The stored snapshot is Cancelled (only saveSnapshot asks: a cancel is final). */
  cancelled?: boolean;
  /** The stored snapshot is Paused (only saveSnapshot asks). */
  paused?: boolean;
  /** The stored claim on the fence's task (only read when there is a fence). */
  claim: StoredClaimView;
  /** The store's clock, read inside the same atomic step. */
  now: number;
}

/**
 * Why a task result may not be written (saveTaskResult, completeTasks), in the contract's order:
 * a missing instance (NotFound), then a fence that is not the live claim (ClaimLost), then a
 * finished workflow (Conflict). null: the write may go ahead. Every adapter asks this one
 * function, so all of them refuse in the same order with the same words.
 */
export function resultRefusal(
  instanceId: string,
  fence: Fence | undefined,
  view: WriteView,
): PersistenceError | null {
  if (!view.found) return failures.snapshotNotFound(instanceId);
  if (fence !== undefined && !fenceHolds(fence, view.claim, view.now)) {
    return failures.fenceRejected(instanceId, fence);
  }
  if (view.finished) return failures.resultsFinal(instanceId);
  return null;
}

/**
 * Why a snapshot may not be written (saveSnapshot): a fence that is not the live claim
 * (ClaimLost); then a finished stored workflow that the write would reopen (Conflict); then a
 * cancelled stored workflow overwritten by anything but Cancelled (Conflict: a cancel is final,
 * even against a late Completed or Failed); then a paused stored workflow that the write would
 * move on, i.e. anything but Paused or Cancelled (Conflict: resume it first). A missing snapshot
 * is no refusal: saveSnapshot creates it.
 */
export function snapshotRefusal(
  instanceId: string,
  fence: Fence | undefined,
  view: WriteView,
  writes: StoredStatus,
): PersistenceError | null {
  if (fence !== undefined && !fenceHolds(fence, view.claim, view.now)) {
    return failures.fenceRejected(instanceId, fence);
  }
  if (!view.found) return null;
  const writesFinished = writes === "Completed" || writes === "Failed" || writes === "Cancelled";
  if (view.finished && !writesFinished) return failures.cannotReopen(instanceId);
  if (view.cancelled === true && writes !== "Cancelled") return failures.cancelledIsFinal(instanceId);
  if (view.paused === true && writes !== "Paused" && writes !== "Cancelled") {
    return failures.pausedCannotMove(instanceId);
  }
  return null;
}

/**
 * Why a write may not consume `event`: it must still be pending and be the oldest pending event
 * of its name (`oldest`: that one's sequence, undefined when none is pending). Checked after the
 * fence and the state, in the same atomic step as the write.
 */
export function consumeRefusal(
  instanceId: string,
  event: EventRef | undefined,
  oldest: number | undefined,
): PersistenceError | null {
  if (event === undefined || oldest === event.sequence) return null;
  return failures.eventNotPending(instanceId, event);
}

/** The control operations and sendEvent, with the stored state they act on (undefined: missing). */
export type ControlOperation = "cancel" | "pause" | "resume" | "sendEvent";

/**
 * Why a control operation or an event may not apply to a workflow in `status` (undefined: no
 * snapshot): NotFound when missing; Conflict when cancelling a finished (Completed, Failed,
 * Cancelled) workflow, pausing anything but InProgress, resuming anything but Paused, or sending
 * an event to a finished workflow.
 */
export function controlRefusal(
  operation: ControlOperation,
  instanceId: string,
  status: StoredStatus | undefined,
): PersistenceError | null {
  if (status === undefined) return failures.snapshotNotFound(instanceId);
  const finished = status === "Completed" || status === "Failed" || status === "Cancelled";
  switch (operation) {
    case "cancel":
      return finished ? failures.notCancellable(instanceId, status) : null;
    case "pause":
      return status === "InProgress" ? null : failures.notPausable(instanceId, status);
    case "resume":
      return status === "Paused" ? null : failures.notPaused(instanceId, status);
    case "sendEvent":
      return finished ? failures.eventsClosed(instanceId, status) : null;
  }
}

/** The claim record a release or an extend finds: its holder and expiry (no record: undefined). */
export type HeldClaimView = Pick<TaskClaim, "workerId" | "expiresAt"> | undefined;

/**
 * Why `workerId` may not release this claim: no record (NotFound), another holder (ClaimLost).
 * The holder may release its own expired claim that nobody took over.
 */
export function releaseRefusal(
  instanceId: string,
  taskId: string,
  claim: HeldClaimView,
  workerId: string,
): PersistenceError | null {
  if (claim === undefined) return failures.claimNotFound(instanceId, taskId);
  if (claim.workerId !== workerId) return failures.claimedByOther(instanceId, taskId);
  return null;
}

/**
 * Why `workerId` may not extend this claim: as for a release; an expired claim is never revived
 * (ClaimLost); and the heartbeat of a claim on a cancelled workflow fails (ClaimLost), whether
 * cancelWorkflow revoked it or it was taken after the cancel. `status`: the stored state of the
 * instance, read in the same step (undefined when missing).
 */
export function extendRefusal(
  instanceId: string,
  taskId: string,
  claim: HeldClaimView,
  workerId: string,
  now: number,
  status?: StoredStatus,
): PersistenceError | null {
  const refusal = releaseRefusal(instanceId, taskId, claim, workerId);
  if (refusal !== null) return refusal;
  if (claim !== undefined && !isClaimLive(claim, now)) return failures.claimExpired(instanceId, taskId);
  if (status === "Cancelled") return failures.claimRevoked(instanceId, taskId);
  return null;
}

/**
 * The expiry a revoked claim gets: the epoch. The record and its token stay (later claims get
 * larger tokens, the holder may release it), and no clock, however far it steps back or however
 * large a skew budget, ever judges it live again.
 */
export const REVOKED_EXPIRY = 0;

/** releaseRefusal in throwing form: for adapters that check the holder in JavaScript. */
export function assertClaimHolder(
  instanceId: string,
  taskId: string,
  holder: string | undefined,
  workerId: string,
): void {
  const refusal = releaseRefusal(
    instanceId,
    taskId,
    holder === undefined ? undefined : { workerId: holder, expiresAt: null },
    workerId,
  );
  if (refusal !== null) throw refusal;
}
