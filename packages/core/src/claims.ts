/** A worker's lease on one task of one workflow instance. Timestamps are epoch milliseconds. */
export interface TaskClaim {
  instanceId: string;
  taskId: string;
  workerId: string;
  claimedAt: number;
  /** null: the claim never expires. */
  expiresAt: number | null;
  /**
   * Fencing token: a positive safe integer, strictly greater than every token issued before for
   * the same (instance, task), even after a release or a deleted-and-recreated instance.
   */
  token: number;
}

/** An event as the store keeps it until the write that moves its workflow past the wait consumes it. */
export interface EventRef {
  eventName: string;
  /** Increases with every event sent to the instance (whatever its name): the order they were sent. */
  sequence: number;
}

/**
 * A task ready to run: its workflow is InProgress at this task (AtTask, or AwaitingEvent whose
 * event is pending or whose timeout has passed), it is not completed and not claimed.
 */
export interface AvailableTask {
  instanceId: string;
  taskId: string;
  /**
   * The last completed task's output, else the initial input, else empty bytes. After a wait:
   * the payload of the event it carries, or empty bytes when it timed out.
   */
  input: Uint8Array;
  workflowDefinitionHash: string;
  /** 1 on the first run; one more after each failure (failTasks) or takeover of an expired claim. */
  attempt: number;
  /** The task's priority (1 first .. 5 last; default 3) and queue (default "default"). */
  priority: number;
  queue: string;
  /** After a wait, the event this task carries; the fenced write that moves past the wait names it in `consumeEvent`. */
  event?: EventRef;
  /** After a wait: true when it became ready because its timeout passed with no event pending. */
  timedOut?: boolean;
}

/** A task found and claimed in one step by claimAvailableTasks. */
export interface ClaimedTask extends AvailableTask {
  claim: TaskClaim;
}

/** What extendTaskClaim returns: the renewed claim, and whether its workflow is paused (so a long task can stop early). */
export interface RenewedClaim extends TaskClaim {
  workflowPaused: boolean;
}

/** What a fenced write carries: the claim, or at least its task id and token. */
export interface Fence {
  taskId: string;
  token: number;
  instanceId?: string;
}

/** Is a claim live at `now` (milliseconds, on the backend's clock)? */
export function isClaimLive(claim: Pick<TaskClaim, "expiresAt">, now: number): boolean {
  return claim.expiresAt === null || claim.expiresAt > now;
}
