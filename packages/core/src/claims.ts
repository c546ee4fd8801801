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

/** A task ready to run: its workflow is InProgress at this task, it is not completed and not claimed. */
export interface AvailableTask {
  instanceId: string;
  taskId: string;
  /** The last completed task's output, else the initial input, else empty bytes. */
  input: Uint8Array;
  workflowDefinitionHash: string;
}

/** A task found and claimed in one step by claimAvailableTasks. */
export interface ClaimedTask extends AvailableTask {
  claim: TaskClaim;
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
