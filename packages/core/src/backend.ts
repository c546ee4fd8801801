import type { AvailableTask, ClaimedTask, EventRef, Fence, RenewedClaim, TaskClaim } from "./claims.js";
import type { PersistenceError } from "./errors.js";
import type { ControlRequest, NextStep, WorkflowSnapshot } from "./snapshot.js";
import type { WaitOptions, WakeReason } from "./wake-ups.js";

/** Option of fenced writes: refused with ClaimLostError unless this claim is still the live one. */
export interface WriteOptions {
  claim?: TaskClaim | Fence;
  /**
   * The event this write consumes (the `event` of the available task it finishes), in the same
   * atomic step: refused with ConflictError, and nothing written, unless that event is still
   * pending and is the oldest pending event of its name. Needs `claim`.
   */
  consumeEvent?: EventRef;
}

/** An event waiting to be consumed. */
export interface PendingEvent extends EventRef {
  payload: Uint8Array;
  /** When the store accepted it (epoch ms, the store's clock). */
  sentAt: number;
}

/** For saveTaskResult the fence may also be the bare token of the caller's claim on that task. */
export interface TaskResultWriteOptions {
  claim?: TaskClaim | Fence | number;
}

/** Which queues a discovery or claim-next call serves (default ["default"]). */
export interface DiscoveryOptions {
  queues?: readonly string[];
}

/**
 * One failed run to record with failTasks: the caller's claim, the error, and when the task may
 * run again (null: not rescheduled; the workflow stays where it is for the runtime to decide).
 */
export interface TaskFailure {
  claim: Pick<TaskClaim, "instanceId" | "taskId" | "workerId" | "token">;
  error: string;
  retryAt: number | null;
}

/**
 * One task to finish with completeTasks: the caller's claim on it and the task's output, and
 * optionally where the workflow goes next (one fenced write per workflow step).
 */
export interface TaskCompletion {
  /** The claim returned by claimTask or claimAvailableTasks (its instance, task, worker and token). */
  claim: Pick<TaskClaim, "instanceId" | "taskId" | "workerId" | "token">;
  output: Uint8Array;
  /**
   * Moves the workflow on in the same atomic step: the claimed task must be the one its position
   * runs (AtTask's task, or the task after a wait); the result is recorded as the last completed
   * task and the workflow goes to this position (its task ready at once, or at its runAt), or
   * Completed, or Failed. Other outputs are neither read nor rewritten.
   */
  next?: NextStep;
  /** With `next`, after a wait: the event the task ran on (ClaimedTask.event), consumed in the same step. */
  consumeEvent?: EventRef;
}

/**
 * What completeTasks says of one completion, at the same index as the input: null when the result
 * is stored and the claim released, otherwise why nothing was written for it (NotFoundError,
 * ClaimLostError or ConflictError, with the precedence of saveTaskResult).
 */
export type CompletionOutcome = PersistenceError | null;

/**
 * What a backend declares about itself, on the instance (`backend.capabilities`). The conformance
 * kit reads it instead of options in each test file, and tooling reads it to know what to expect.
 */
export interface BackendCapabilities {
  /** Data survives close() and a new backend instance over the same storage. */
  durable: boolean;
  /**
   * Which clock judges claim expiry: "server" (the database's own clock, read inside the atomic
   * step) or "client" (this process's clock, with the skew budget below).
   */
  clock: "server" | "client";
  /** How far expiry may be judged late or early against real time, in ms (0 on a server clock). */
  clockSkewMs: number;
  /** Shards of the ready index (1 when unsharded). Order is exact across shards either way. */
  shards: number;
  /** How an idle worker learns of new work: "push" (the database notifies) or "poll". */
  wakeUps: "push" | "poll";
  /**
   * waitForTasks' own bound, in ms. Poll: the longest gap between two looks at an idle store (a
   * new task waits at most about this long). Push: how often a waiter looks all the same, so a
   * lost notification delays a task by at most this long.
   */
  wakeBoundMs: number;
  /**
   * The database, as OpenTelemetry's `db.system.name` names it ("postgresql", "redis",
   * "mongodb", "aws.dynamodb", "sqlite"; "memory" for the in-process store). Telemetry reads it.
   */
  dbSystem?: string;
}

/** What purgeFinished removes: finished workflows whose finish time is before `finishedBefore`. */
export interface PurgeOptions {
  /** Epoch ms, on the store's clock: workflows that finished strictly before this time. */
  finishedBefore: number;
  /** The most workflows removed by this call, 1 to 10,000 (call again until it returns 0). */
  limit: number;
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
  /** What this backend declares about itself (durability, clock, shards, wake-ups). */
  readonly capabilities: BackendCapabilities;
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
  /**
   * One task's output as loadSnapshot would show it, without reading the snapshot or any other
   * output: the bytes of `completedTasks[taskId]` of an InProgress, Paused or Cancelled workflow,
   * null when that task has no result (and always for Completed and Failed, whose state carries
   * only the final output or error). Missing instance: NotFoundError.
   */
  loadTaskResult(instanceId: string, taskId: string): Promise<Uint8Array | null>;
  /**
   * Deletes up to `limit` Completed, Failed or Cancelled workflows that finished before
   * `finishedBefore` (the store's clock), each with its results, claims and events, oldest
   * finish first, and returns how many it deleted. The store keeps the time a workflow first
   * became finished; saving it again finished keeps that time. Reads an index on the finish
   * time: unfinished workflows cost it nothing.
   */
  purgeFinished(options: PurgeOptions): Promise<number>;
  /**
   * The claim records of one instance that are neither released nor revoked, live or expired (an
   * expired one not yet taken over is stuck work), by task id in code-point order (compareIds, as
   * listSnapshotsPage orders instance ids). Claims are their own records:
   * a missing instance has none ([]), never NotFoundError. For operators (the CLI); a worker
   * never needs it.
   */
  loadTaskClaims(instanceId: string): Promise<TaskClaim[]>;
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
  /**
   * Sets the claim's expiry to now + durationMs. Returns the renewed claim, saying whether its
   * workflow is paused. A claim revoked by cancelWorkflow is lost (ClaimLostError).
   */
  extendTaskClaim(
    instanceId: string,
    taskId: string,
    workerId: string,
    durationMs: number,
  ): Promise<RenewedClaim>;
  /** Ready tasks of the queues served (default ["default"]), by effective time, never before their runAt. */
  findAvailableTasks(workerId: string, limit: number, options?: DiscoveryOptions): Promise<AvailableTask[]>;
  /** Finds and claims up to `limit` ready tasks in one atomic step where the database allows it. */
  claimAvailableTasks(
    workerId: string,
    limit: number,
    ttlMs?: number | null,
    options?: DiscoveryOptions,
  ): Promise<ClaimedTask[]>;
  /**
   * Finishes claimed tasks in one call: for each completion, a saveTaskResult fenced by its claim
   * and the release of that claim, as one atomic step per completion. Completions are independent:
   * one refused (claim lost, instance missing or finished) does not stop the others. The whole
   * batch is validated before any I/O; a bad item throws and nothing is written. A BackendError
   * means the outcome of every item is unknown.
   *
   * A completion with `next` also moves its workflow on in that step, exactly as a saveSnapshot
   * fenced by the claim of the snapshot with the result added and the workflow at `next` would
   * (consuming `consumeEvent`), without reading or rewriting the other outputs. Refused, in this
   * order: NotFound, ClaimLost (the fence), Conflict when the workflow is finished, paused, not at
   * the claimed task, or the event is not the oldest pending one of its name; nothing is written
   * and the claim stays held.
   */
  completeTasks(completions: readonly TaskCompletion[]): Promise<CompletionOutcome[]>;
  /**
   * The twin of completeTasks for failed runs: per item, one atomic step fenced by its claim that
   * records the failure in the task's attempts (count, last error, time), releases the claim and
   * makes the task ready again at `retryAt` (null: not rescheduled). One outcome per item, in
   * order, with completeTasks' refusals; the batch is validated before any I/O.
   */
  failTasks(failures: readonly TaskFailure[]): Promise<CompletionOutcome[]>;
  /**
   * InProgress or Paused -> Cancelled, in one atomic step that also revokes every claim on the
   * instance (their holders' fenced writes and heartbeats fail with ClaimLostError) and drops its
   * pending events. Missing: NotFoundError; already Completed, Failed or Cancelled: ConflictError.
   */
  cancelWorkflow(instanceId: string, request?: ControlRequest): Promise<void>;
  /**
   * InProgress -> Paused: discovery skips it and no write may move it on until it is resumed;
   * live claims stay valid and may still record results. Anything else: ConflictError.
   */
  pauseWorkflow(instanceId: string, request?: ControlRequest): Promise<void>;
  /** Paused -> InProgress at the same position, with every result that landed. Not paused: ConflictError. */
  resumeWorkflow(instanceId: string): Promise<void>;
  /**
   * Appends an event to the FIFO of (instance, event name), kept until the write that moves the
   * workflow past a wait for it consumes it. Returns its sequence. Missing: NotFoundError;
   * Completed, Failed or Cancelled: ConflictError.
   */
  sendEvent(instanceId: string, eventName: string, payload: Uint8Array): Promise<number>;
  /** The instance's pending events, oldest first. Missing instance: NotFoundError. */
  loadPendingEvents(instanceId: string): Promise<PendingEvent[]>;
  /**
   * Resolves as soon as a task of `queues` (default ["default"]) may be ready: one already is, a
   * write made one ready (a save, a step, a release, a resume, an event, a retry), or the earliest
   * runAt, retry, event timeout or claim expiry of those queues came due; at the latest after
   * `timeoutMs`, early on `signal` ("aborted") or close() ("closed"). A look at the store that
   * fails rejects (BackendError); a listener that cannot connect makes the wait poll instead.
   * See `capabilities.wakeUps` and `wakeBoundMs`.
   */
  waitForTasks(options: WaitOptions): Promise<WakeReason>;
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
