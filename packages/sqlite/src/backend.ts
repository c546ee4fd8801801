import type { DatabaseSync } from "node:sqlite";
import {
  type AvailableTask,
  type BackendCapabilities,
  BaseBackend,
  type ClaimedTask,
  type CompletionOutcome,
  type ControlRequest,
  compareIds,
  type EventRef,
  type Fence,
  failures,
  isClaimLive,
  type PendingEvent,
  type PersistenceError,
  type RenewedClaim,
  type SnapshotPage,
  type TaskClaim,
  toBytes,
  type ValidCompletion,
  type ValidFailure,
  validateWaitOptions,
  type WaitOptions,
  type WakeProbe,
  type WakeReason,
  type WorkflowSnapshot,
} from "@sayiir/persistence-core";
import {
  extendRefusal,
  fromStoredParts,
  type MigrationReport,
  releaseRefusal,
  resultRefusal,
  snapshotRefusal,
  toStoredSnapshot,
  type WriteView,
} from "@sayiir/persistence-core/adapter";
import { configure, inFile, open } from "./connection.js";
import {
  availableTask,
  consumeEvent,
  loadPendingEvents,
  sendEvent,
  storedStatus,
  transition,
  waitParams,
} from "./control.js";
import { Status, statusOf, type Tables, tableNames } from "./layout.js";
import { DEFAULT_BUSY_TIMEOUT_MS, normalizeOptions, type SqliteBackendOptions } from "./options.js";
import { Queries } from "./queries.js";
import { saveResults } from "./results.js";
import { deleteInstance, loadTaskClaims, loadTaskResult, purgeFinished } from "./retention.js";
import {
  eventPending,
  failTask,
  loadAttempts,
  placement,
  placementParams,
  recordTakeover,
  replaceAttempts,
  snapshotRetry,
} from "./schedule.js";
import { migrate } from "./schema.js";
import { type ClaimRow, type ReadyRow, statements } from "./sql.js";
import { step } from "./step.js";
import { immediate, read } from "./transaction.js";
import { probeWakeUp, SqliteWakeUps } from "./wake-ups.js";

/** A stored claim as the kit's refusals read it (HeldClaimView and StoredClaimView at once). */
interface StoredClaim {
  workerId: string;
  token: number;
  claimedAt: number;
  expiresAt: number | null;
}

/**
 * A backend on Node's built-in SQLite (`node:sqlite`). Durable in a file, safe for several
 * processes on one machine: WAL mode, a busy timeout, and BEGIN IMMEDIATE around every
 * read-modify-write. Every operation runs its whole transaction synchronously.
 *
 * Call `migrate()` once (any number of processes may) before the first operation.
 */
export class SqliteBackend extends BaseBackend {
  /**
   * Expiry is judged by this machine's clock (`Date.now()`, read under the write lock), the one
   * clock every process on the file shares. A `":memory:"` database is not durable.
   */
  readonly capabilities: BackendCapabilities;
  /** The underlying connection (the caller's own when passed as `database`). */
  readonly database: DatabaseSync;
  readonly #owned: boolean;
  readonly #busyTimeoutMs: number;
  readonly #tables: Tables;
  readonly #q: Queries;
  readonly #wakes: SqliteWakeUps;

  constructor(options: SqliteBackendOptions) {
    super(options);
    const normalized = normalizeOptions(options);
    this.#tables = tableNames(normalized.tablePrefix);
    this.#owned = normalized.database === undefined;
    this.#busyTimeoutMs = normalized.busyTimeoutMs ?? DEFAULT_BUSY_TIMEOUT_MS;
    this.database = normalized.database ?? open(normalized);
    this.#q = new Queries(this.database, statements(this.#tables));
    this.#wakes = new SqliteWakeUps(this.database);
    if (!this.#owned && normalized.busyTimeoutMs !== undefined) {
      configure(this.database, normalized.busyTimeoutMs, undefined);
    }
    this.capabilities = {
      durable: inFile(this.database, normalized.path),
      clock: "client",
      clockSkewMs: 0,
      shards: 1,
      // In-process writes are heard at once, other processes' within DATA_VERSION_POLL_MS; the
      // bound is the safety re-probe against anything both missed.
      wakeUps: "push",
      wakeBoundMs: 5_000,
      dbSystem: "sqlite",
    };
  }

  /**
   * Creates or upgrades the tables and switches the file to WAL mode. Explicit (the constructor
   * does no schema work), idempotent, and safe when several processes call it at once.
   */
  async migrate(): Promise<MigrationReport> {
    return this.run("migrate", () => migrate(this.database, this.#tables, this.#busyTimeoutMs));
  }

  /**
   * Inside a write transaction: the clock reading, taken once the write lock is held. The queues
   * the body touched (#touch) are told to this process's waiters once it has committed.
   */
  #write<T>(body: (now: number) => T): T {
    try {
      const result = immediate(this.database, () => body(Date.now()));
      this.#wakes.flush();
      return result;
    } finally {
      this.#wakes.discard();
    }
  }

  /**
   * Inside a write transaction that may have made the instance's task ready or moved its due
   * time: its queue is told after the commit, if a backend of this process waits at all.
   */
  #touch(instanceId: string): void {
    if (this.#wakes.heard) this.#wakes.touched(this.#q.get<{ queue: string }>("queueOf", instanceId)?.queue);
  }

  #claim(instanceId: string, taskId: string): StoredClaim | undefined {
    const row = this.#q.get<ClaimRow>("readClaim", instanceId, taskId);
    return row === undefined
      ? undefined
      : { workerId: row.worker_id, token: row.token, claimedAt: row.claimed_at, expiresAt: row.expires_at };
  }

  /** Inside a write transaction: what a write is checked against (the fence's claim only when fenced). */
  #view(instanceId: string, fence: Fence | undefined, now: number): WriteView {
    const stored = this.#q.get<{ status: string }>("lockSnapshot", instanceId);
    return {
      found: stored !== undefined,
      finished:
        stored !== undefined && stored.status !== Status.InProgress && stored.status !== Status.Paused,
      cancelled: stored?.status === Status.Cancelled,
      paused: stored?.status === Status.Paused,
      claim: fence === undefined ? undefined : this.#claim(instanceId, fence.taskId),
      now,
    };
  }

  /**
   * One transaction: the refusals (snapshotRefusal), the consumed event (consumeEvent), the
   * pending events dropped by a terminal write, then the row (its ready task by the rule of
   * upsertSnapshot: an awaited event already pending makes the wait ready) and the results that
   * changed (saveResults: unchanged result rows are not rewritten).
   */
  protected async doSaveSnapshot(
    snapshot: WorkflowSnapshot,
    fence: Fence | undefined,
    consume: EventRef | undefined,
  ): Promise<void> {
    const stored = toStoredSnapshot(snapshot);
    const id = stored.instanceId;
    this.#write((now) => {
      const refusal = snapshotRefusal(id, fence, this.#view(id, fence, now), stored.status);
      if (refusal !== null) throw refusal;
      if (consume !== undefined) consumeEvent(this.#q, id, consume);
      if (stored.finished) this.#q.run("deleteEvents", id);
      const task = stored.readyTaskId ?? stored.awaiting?.nextTaskId ?? null;
      const placed = placement(
        {
          readyTaskId: stored.readyTaskId,
          awaiting: stored.awaiting,
          eventPending: eventPending(this.#q, id, stored.awaiting?.eventName),
          runAt: stored.schedule.runAt,
          priority: stored.schedule.priority,
          retry: snapshotRetry(stored.attempts, task),
          updatedAt: stored.updatedAt,
        },
        now,
        this.agingMs,
      );
      this.#q.runNamed("upsertSnapshot", {
        id,
        header: stored.header,
        status: statusOf[stored.status],
        hash: stored.definitionHash,
        input: stored.initialInput,
        last: stored.lastCompletedTaskId,
        updatedAt: stored.updatedAt,
        position: stored.positionTaskId ?? stored.awaiting?.nextTaskId ?? null,
        runAt: stored.schedule.runAt,
        priority: stored.schedule.priority,
        queue: stored.schedule.queue,
        ...waitParams(stored.awaiting),
        ...placementParams(placed),
        finishedAt: stored.finished ? now : null,
      });
      saveResults(this.#q, id, stored.results);
      replaceAttempts(this.#q, id, stored.attempts);
      if (placed.ready !== null || placed.dueTask !== null) this.#wakes.touched(stored.schedule.queue);
    });
  }

  protected async doSaveTaskResult(
    instanceId: string,
    taskId: string,
    output: Uint8Array,
    fence: Fence | undefined,
  ): Promise<void> {
    this.#write((now) => {
      const refusal = this.#saveTaskResult(instanceId, taskId, output, fence, now);
      if (refusal !== null) throw refusal;
    });
  }

  /**
   * Inside a write transaction: the checks of saveTaskResult in their order (resultRefusal),
   * then, if none refuses, the writes. Returns the refusal, having written nothing.
   */
  #saveTaskResult(
    instanceId: string,
    taskId: string,
    output: Uint8Array,
    fence: Fence | undefined,
    now: number,
  ): PersistenceError | null {
    const refusal = resultRefusal(instanceId, fence, this.#view(instanceId, fence, now));
    if (refusal !== null) return refusal;
    this.#q.run("upsertResult", instanceId, taskId, output);
    this.#q.runNamed("recordResult", { id: instanceId, task: taskId, now });
    return null;
  }

  /**
   * The whole batch in one BEGIN IMMEDIATE transaction: one lock, one commit (a commit, with its
   * fsync, is what a write costs here). Each completion's checks run before any of its writes,
   * so a refused one writes nothing and leaves its claim; the others go on. A driver error rolls
   * back all. The fence check has just found the claim live with this token under the write
   * lock, so deleting the claim row deletes exactly that claim.
   */
  protected override async doCompleteTasks(
    completions: readonly ValidCompletion[],
  ): Promise<CompletionOutcome[]> {
    return this.#write((now) =>
      completions.map((c): CompletionOutcome => {
        if (c.next !== undefined) {
          const outcome = step(this.#q, c, c.next, now, this.agingMs);
          if (outcome === null) this.#touch(c.instanceId);
          return outcome;
        }
        const refusal = this.#saveTaskResult(c.instanceId, c.taskId, c.output, c, now);
        if (refusal !== null) return refusal;
        this.#q.run("releaseClaim", c.instanceId, c.taskId);
        return null;
      }),
    );
  }

  /**
   * The whole batch in one BEGIN IMMEDIATE transaction, like completeTasks: per failure its
   * refusals, then the attempt recorded, the claim released and the task placed again (failTask).
   */
  protected async doFailTasks(failures: readonly ValidFailure[]): Promise<CompletionOutcome[]> {
    return this.#write((now) =>
      failures.map((f) => {
        const outcome = failTask(this.#q, f, this.#view(f.instanceId, f, now), now, this.agingMs);
        if (outcome === null) this.#touch(f.instanceId);
        return outcome;
      }),
    );
  }

  protected async doLoadSnapshot(instanceId: string): Promise<WorkflowSnapshot> {
    const { row, results, attempts } = read(this.database, () => {
      const row = this.#q.get<{
        header: Uint8Array;
        initial_input: Uint8Array | null;
        last_completed_task_id: string | null;
        updated_at: number;
      }>("loadSnapshot", instanceId);
      if (row === undefined) throw failures.snapshotNotFound(instanceId);
      return {
        row,
        results: this.#q.all<{ task_id: string; output: Uint8Array }>("loadResults", instanceId),
        attempts: loadAttempts(this.#q, instanceId),
      };
    });
    return fromStoredParts({
      instanceId,
      header: toBytes(row.header),
      initialInput: row.initial_input === null ? null : toBytes(row.initial_input),
      results: results.map((r) => ({ taskId: r.task_id, output: toBytes(r.output) })),
      lastCompletedTaskId: row.last_completed_task_id,
      updatedAt: row.updated_at,
      ...(attempts === undefined ? {} : { attempts }),
    });
  }

  protected async doDeleteSnapshot(instanceId: string): Promise<void> {
    this.#write(() => {
      if (!deleteInstance(this.#q, instanceId)) throw failures.snapshotNotFound(instanceId);
    });
  }

  protected async doLoadTaskResult(instanceId: string, taskId: string): Promise<Uint8Array | null> {
    // One SELECT is one consistent read: existence, state and the one result row (retention.ts).
    return loadTaskResult(this.#q, instanceId, taskId);
  }

  protected async doPurgeFinished(finishedBefore: number, limit: number): Promise<number> {
    return purgeFinished(this.#q, (batch) => this.#write(batch), finishedBefore, limit);
  }

  protected async doLoadTaskClaims(instanceId: string): Promise<TaskClaim[]> {
    // One SELECT is one consistent read.
    return loadTaskClaims(this.#q, instanceId);
  }

  protected async doListSnapshotsPage(cursor: string | null, limit: number): Promise<SnapshotPage> {
    // Keyset pagination on the primary key: the cursor is the last id of the previous page.
    const rows =
      cursor === null
        ? this.#q.all<{ instance_id: string }>("listPage", limit + 1)
        : this.#q.all<{ instance_id: string }>("listPageAfter", cursor, limit + 1);
    const instanceIds = rows.slice(0, limit).map((r) => r.instance_id);
    const more = rows.length > limit;
    return { instanceIds, nextCursor: more ? (instanceIds[instanceIds.length - 1] ?? null) : null };
  }

  /** Inside a write transaction: takes the claim unless a live one exists. */
  #claimTask(
    instanceId: string,
    taskId: string,
    workerId: string,
    ttlMs: number | null,
    now: number,
  ): TaskClaim | null {
    const existing = this.#claim(instanceId, taskId);
    if (existing !== undefined && isClaimLive(existing, now)) return null;
    const token = this.#q.nextToken();
    const claim: TaskClaim = {
      instanceId,
      taskId,
      workerId,
      claimedAt: now,
      expiresAt: ttlMs === null ? null : now + ttlMs,
      token,
    };
    this.#q.run("claimTask", instanceId, taskId, workerId, token, now, claim.expiresAt);
    return claim;
  }

  protected async doClaimTask(
    instanceId: string,
    taskId: string,
    workerId: string,
    ttlMs: number | null,
  ): Promise<TaskClaim | null> {
    return this.#write((now) => this.#claimTask(instanceId, taskId, workerId, ttlMs, now));
  }

  protected async doReleaseTaskClaim(instanceId: string, taskId: string, workerId: string): Promise<void> {
    this.#write(() => {
      const refusal = releaseRefusal(instanceId, taskId, this.#claim(instanceId, taskId), workerId);
      if (refusal !== null) throw refusal;
      this.#q.run("releaseClaim", instanceId, taskId);
      this.#touch(instanceId);
    });
  }

  /**
   * The renewal, under one lock with the workflow's status: refused on a cancelled workflow
   * (extendRefusal's last rule), and `workflowPaused` when it is paused.
   */
  protected async doExtendTaskClaim(
    instanceId: string,
    taskId: string,
    workerId: string,
    durationMs: number,
  ): Promise<RenewedClaim> {
    return this.#write((now) => {
      const found = this.#claim(instanceId, taskId);
      const status = this.#q.get<{ status: string }>("lockSnapshot", instanceId)?.status;
      const refusal = extendRefusal(instanceId, taskId, found, workerId, now, storedStatus(status));
      if (refusal !== null) throw refusal;
      const claim = found as StoredClaim; // extendRefusal refuses a missing claim
      const expiresAt = claim.expiresAt === null ? null : now + durationMs;
      if (expiresAt !== null) this.#q.run("extendClaim", expiresAt, instanceId, taskId);
      return {
        instanceId,
        taskId,
        workerId,
        claimedAt: claim.claimedAt,
        expiresAt,
        token: claim.token,
        workflowPaused: status === Status.Paused,
      };
    });
  }

  /**
   * The ready tasks of the queues served: one findAvailable per queue (each an index walk led by
   * its queue), merged by (key, instance id) when there are several.
   */
  #findAvailable(limit: number, now: number, queues: readonly string[]): ReadyRow[] {
    const horizon = now + 2 * this.agingMs;
    const read = (queue: string) =>
      this.#q.allNamed<ReadyRow>("findAvailable", { queue, now, horizon, limit });
    if (queues.length === 1) return read(queues[0] as string);
    return queues
      .flatMap(read)
      .sort((a, b) => a.sort_key - b.sort_key || compareIds(a.instance_id, b.instance_id))
      .slice(0, limit);
  }

  protected async doFindAvailableTasks(
    _workerId: string,
    limit: number,
    queues: readonly string[],
  ): Promise<AvailableTask[]> {
    // One read transaction: the rows and the events of the waits among them, as of one moment.
    return read(this.database, () =>
      // An expired claim on a task is counted as an attempt when it is taken over (claim-next),
      // not when discovery merely sees it: the attempt shown is the count so far + 1.
      this.#findAvailable(limit, Date.now(), queues).map((row) =>
        availableTask(this.#q, { ...row, taken_over: 0 }),
      ),
    );
  }

  protected async doClaimAvailableTasks(
    workerId: string,
    limit: number,
    ttlMs: number | null,
    queues: readonly string[],
  ): Promise<ClaimedTask[]> {
    // Find and claim under one write lock: no other connection can claim in between, so every
    // row found is claimable and no task is handed out twice. Over an expired claim it is a
    // takeover: one more attempt (explicit claimTask does not count one: the fencing group's
    // takeover keeps the snapshot as it was).
    return this.#write((now) =>
      this.#findAvailable(limit, now, queues).map((row) => {
        if (row.taken_over === 1) recordTakeover(this.#q, row.instance_id, row.task_id);
        return {
          ...availableTask(this.#q, row),
          claim: this.#claimTask(row.instance_id, row.task_id, workerId, ttlMs, now) as TaskClaim,
        };
      }),
    );
  }

  protected async doCancelWorkflow(instanceId: string, request: Required<ControlRequest>): Promise<void> {
    this.#write((now) => transition(this.#q, "cancel", instanceId, request, now, this.agingMs));
  }

  protected async doPauseWorkflow(instanceId: string, request: Required<ControlRequest>): Promise<void> {
    this.#write((now) => transition(this.#q, "pause", instanceId, request, now, this.agingMs));
  }

  protected async doResumeWorkflow(instanceId: string): Promise<void> {
    this.#write((now) => {
      transition(this.#q, "resume", instanceId, { reason: null, requestedBy: null }, now, this.agingMs);
      this.#touch(instanceId);
    });
  }

  protected async doSendEvent(instanceId: string, eventName: string, payload: Uint8Array): Promise<number> {
    return this.#write((now) => {
      const sequence = sendEvent(this.#q, instanceId, eventName, payload, now, this.agingMs);
      this.#touch(instanceId);
      return sequence;
    });
  }

  protected async doLoadPendingEvents(instanceId: string): Promise<PendingEvent[]> {
    // One SELECT is one consistent read.
    return loadPendingEvents(this.#q, instanceId);
  }

  /** Counts the waits in progress: the cross-process watch runs only while there are some. */
  override async waitForTasks(options: WaitOptions): Promise<WakeReason> {
    validateWaitOptions(options); // before the watch reads anything
    this.#wakes.enter();
    try {
      return await super.waitForTasks(options);
    } finally {
      this.#wakes.leave();
    }
  }

  protected override async doProbeWakeUp(queues: readonly string[]): Promise<WakeProbe> {
    return probeWakeUp(this.#q, queues, Date.now(), this.agingMs);
  }

  protected override async doListenForWakeUps(
    notify: (queue: string | null) => void,
  ): Promise<() => Promise<void>> {
    return this.#wakes.listen(notify);
  }

  protected async doClose(): Promise<void> {
    this.#q.clear();
    if (this.#owned) this.database.close();
  }
}
