import type { AvailableTask, ClaimedTask, Fence, TaskClaim } from "./claims.js";
import type { WorkflowSnapshot } from "./snapshot.js";

/** Option of fenced writes: refused with ClaimLostError unless this claim is still the live one. */
export interface WriteOptions {
  claim?: TaskClaim | Fence;
}

/** For saveTaskResult the fence may also be the bare token of the caller's claim on that task. */
export interface TaskResultWriteOptions {
  claim?: TaskClaim | Fence | number;
}

export interface ListPageOptions {
  /** Opaque cursor from the previous page; omit for the first page. */
  cursor?: string | null;
  /** Page size, 1 to 10,000. */
  limit: number;
}

export interface SnapshotPage {
  instanceIds: string[];
  /** null on the last page. */
  nextCursor: string | null;
}

/**
 * The contract every storage backend implements. Every operation validates its arguments
 * before any I/O (ValidationError), and every failure is a PersistenceError with a stable code.
 */
export interface PersistentBackend extends AsyncDisposable {
  /** Upserts. Refuses (ConflictError) to turn a stored Completed/Failed workflow back to InProgress. */
  saveSnapshot(snapshot: WorkflowSnapshot, options?: WriteOptions): Promise<void>;
  /** Atomically adds one task result and sets lastCompletedTaskId (and updatedAt). */
  saveTaskResult(
    instanceId: string,
    taskId: string,
    output: Uint8Array,
    options?: TaskResultWriteOptions,
  ): Promise<void>;
  loadSnapshot(instanceId: string): Promise<WorkflowSnapshot>;
  /** Removes the snapshot, its task results and its claims. */
  deleteSnapshot(instanceId: string): Promise<void>;
  /** Every stored instance id. Prefer listSnapshotsPage on large stores. */
  listSnapshots(): Promise<string[]>;
  /** One page of instance ids; every id stored for the whole walk appears exactly once. */
  listSnapshotsPage(options: ListPageOptions): Promise<SnapshotPage>;
  /** Atomically claims one task; null if a live claim exists (the caller's own included). */
  claimTask(
    instanceId: string,
    taskId: string,
    workerId: string,
    ttlMs?: number | null,
  ): Promise<TaskClaim | null>;
  releaseTaskClaim(instanceId: string, taskId: string, workerId: string): Promise<void>;
  /** Sets the claim's expiry to now + durationMs. Returns the renewed claim. */
  extendTaskClaim(
    instanceId: string,
    taskId: string,
    workerId: string,
    durationMs: number,
  ): Promise<TaskClaim>;
  findAvailableTasks(workerId: string, limit: number): Promise<AvailableTask[]>;
  /** Finds and claims up to `limit` ready tasks in one atomic step where the database allows it. */
  claimAvailableTasks(workerId: string, limit: number, ttlMs?: number | null): Promise<ClaimedTask[]>;
  /** Releases connections this backend opened; a client passed in by the user stays open. */
  close(): Promise<void>;
}

/** Walks every stored instance id page by page, so memory stays bounded on huge stores. */
export async function* iterateSnapshots(
  backend: Pick<PersistentBackend, "listSnapshotsPage">,
  pageSize = 1000,
): AsyncGenerator<string, void, undefined> {
  let cursor: string | null = null;
  do {
    const page: SnapshotPage = await backend.listSnapshotsPage({ cursor, limit: pageSize });
    yield* page.instanceIds;
    cursor = page.nextCursor;
  } while (cursor !== null);
}
