import type {
  BackendCapabilities,
  CompletionOutcome,
  DiscoveryOptions,
  ListPageOptions,
  PendingEvent,
  PersistentBackend,
  PurgeOptions,
  SnapshotPage,
  TaskCompletion,
  TaskFailure,
  TaskResultWriteOptions,
  WriteOptions,
} from "./backend.js";
import type { AvailableTask, ClaimedTask, EventRef, Fence, RenewedClaim, TaskClaim } from "./claims.js";
import {
  BackendError,
  ErrorCode,
  failures,
  isPersistenceError,
  toBackendError,
  ValidationError,
} from "./errors.js";
import {
  applyStep,
  type ControlRequest,
  DEFAULT_AGING_MS,
  type ExecutionPosition,
  isFinished,
  type NextStep,
  positionTaskId,
  scheduleOf,
  type WorkflowSnapshot,
} from "./snapshot.js";
import {
  type ValidCompletion,
  type ValidFailure,
  validateBytes,
  validateCompletions,
  validateControlRequest,
  validateDuration,
  validateEventRef,
  validateFailures,
  validateFence,
  validateId,
  validateLimit,
  validateMaxPayloadBytes,
  validatePurgeOptions,
  validateQueues,
  validateSnapshot,
  validateTtl,
  validateWaitOptions,
} from "./validation.js";
import { type WaitOptions, WakeHub, type WakeProbe, type WakeReason, type WakeSource } from "./wake-ups.js";

export interface BaseBackendOptions {
  /** Largest single byte value accepted (default 32 MiB). Larger ones give PayloadTooLargeError. */
  maxPayloadBytes?: number;
  /**
   * Priority ageing: a waiting task gains one priority level per `agingMs` (default 60,000), so
   * discovery serves by `readyAt + (priority - 1) * agingMs` and no priority starves.
   */
  agingMs?: number;
}

/**
 * Validates every argument before any I/O, wraps driver failures as BackendError and refuses
 * calls after close(), then hands clean arguments to the adapter's `do*` methods. Adapters
 * extend it so that every backend rejects the same inputs with the same codes.
 */
export abstract class BaseBackend implements PersistentBackend {
  protected readonly maxPayloadBytes: number;
  protected readonly agingMs: number;
  /** What the backend declares about itself; see BackendCapabilities. */
  abstract readonly capabilities: BackendCapabilities;
  #closed = false;
  #closing: Promise<void> | undefined;
  #wakes: WakeHub | undefined;

  constructor(options: BaseBackendOptions = {}) {
    this.maxPayloadBytes = validateMaxPayloadBytes(options.maxPayloadBytes);
    this.agingMs =
      options.agingMs === undefined ? DEFAULT_AGING_MS : validateDuration("agingMs", options.agingMs);
  }

  /** Secrets (passwords) to scrub from wrapped driver messages. */
  protected secrets(): readonly string[] {
    return [];
  }

  /** `consumeEvent` is only ever given together with a fence. */
  protected abstract doSaveSnapshot(
    snapshot: WorkflowSnapshot,
    fence: Fence | undefined,
    consumeEvent: EventRef | undefined,
  ): Promise<void>;
  protected abstract doSaveTaskResult(
    instanceId: string,
    taskId: string,
    output: Uint8Array,
    fence: Fence | undefined,
  ): Promise<void>;
  protected abstract doLoadSnapshot(instanceId: string): Promise<WorkflowSnapshot>;
  protected abstract doDeleteSnapshot(instanceId: string): Promise<void>;
  /** The output as loadSnapshot would show it (null: none), reading only that output. */
  protected abstract doLoadTaskResult(instanceId: string, taskId: string): Promise<Uint8Array | null>;
  /** Deletes up to `limit` workflows finished before `finishedBefore` (store clock), through the finish-time index. */
  protected abstract doPurgeFinished(finishedBefore: number, limit: number): Promise<number>;
  /** Claims neither released nor revoked, by task id; [] for an unknown instance. */
  protected abstract doLoadTaskClaims(instanceId: string): Promise<TaskClaim[]>;
  protected abstract doListSnapshotsPage(cursor: string | null, limit: number): Promise<SnapshotPage>;
  protected abstract doClaimTask(
    instanceId: string,
    taskId: string,
    workerId: string,
    ttlMs: number | null,
  ): Promise<TaskClaim | null>;
  protected abstract doReleaseTaskClaim(instanceId: string, taskId: string, workerId: string): Promise<void>;
  protected abstract doExtendTaskClaim(
    instanceId: string,
    taskId: string,
    workerId: string,
    durationMs: number,
  ): Promise<RenewedClaim>;
  /** `queues`: the validated queue names served (at least one, no duplicates). */
  protected abstract doFindAvailableTasks(
    workerId: string,
    limit: number,
    queues: readonly string[],
  ): Promise<AvailableTask[]>;
  protected abstract doClaimAvailableTasks(
    workerId: string,
    limit: number,
    ttlMs: number | null,
    queues: readonly string[],
  ): Promise<ClaimedTask[]>;
  /** failTasks after validation: one atomic fenced step per failure (see PersistentBackend.failTasks). */
  protected abstract doFailTasks(failures: readonly ValidFailure[]): Promise<CompletionOutcome[]>;
  protected abstract doCancelWorkflow(instanceId: string, request: Required<ControlRequest>): Promise<void>;
  protected abstract doPauseWorkflow(instanceId: string, request: Required<ControlRequest>): Promise<void>;
  protected abstract doResumeWorkflow(instanceId: string): Promise<void>;
  protected abstract doSendEvent(instanceId: string, eventName: string, payload: Uint8Array): Promise<number>;
  protected abstract doLoadPendingEvents(instanceId: string): Promise<PendingEvent[]>;
  protected abstract doClose(): Promise<void>;

  /**
   * The portable form of completeTasks, for adapters without a batched one: per completion, the
   * fenced write, then the release of that claim. It is not one atomic step: a crash between the
   * two leaves the claim held until it expires (the result is stored; nobody can overwrite it with
   * a stale claim). A release that finds the claim already gone or taken over (it expired after
   * the write) is not an error: the result landed under a live claim.
   */
  protected async doCompleteTasks(completions: readonly ValidCompletion[]): Promise<CompletionOutcome[]> {
    // One completion after the other: completions of one workflow apply in call order.
    const outcomes: CompletionOutcome[] = [];
    for (const c of completions) outcomes.push(await this.portableCompletion(c));
    return outcomes;
  }

  private async portableCompletion(c: ValidCompletion): Promise<CompletionOutcome> {
    const fence = { instanceId: c.instanceId, taskId: c.taskId, token: c.token };
    try {
      if (c.next === undefined) await this.doSaveTaskResult(c.instanceId, c.taskId, c.output, fence);
      else {
        const refusal = await this.portableStep(c, c.next, fence);
        if (refusal !== null) return refusal;
      }
    } catch (error) {
      if (isPersistenceError(error) && error.code !== ErrorCode.Backend) return error;
      throw error;
    }
    try {
      await this.doReleaseTaskClaim(c.instanceId, c.taskId, c.workerId);
    } catch (error) {
      const gone =
        isPersistenceError(error) &&
        (error.code === ErrorCode.NotFound || error.code === ErrorCode.ClaimLost);
      if (!gone) throw error;
    }
    return null;
  }

  /**
   * One look for waitForTasks: is a task of `queues` ready, and when does the next one come due
   * by time alone? The portable form runs a discovery call and knows no due time (a poll finds
   * it). Adapters answer from their indexes, with the due time, without reading any payload.
   */
  protected async doProbeWakeUp(queues: readonly string[]): Promise<WakeProbe> {
    const found = await this.doFindAvailableTasks("sayiir-wake-probe", 1, [...queues]);
    return { ready: found.length > 0, nextDueAt: null };
  }

  /**
   * Push backends override this: start the one listener of this instance (a dedicated connection),
   * call `notify(queue)` when a write may have made a task of `queue` ready (`notify(queue, true)`
   * when it is claimable at once, not only due later: the waiters then skip their look), `notify(null)` after
   * reconnecting, and resolve once listening. The returned function stops it.
   */
  protected doListenForWakeUps?(
    notify: (queue: string | null, readyNow?: boolean) => void,
  ): Promise<() => Promise<void>>;

  #wakeHub(): WakeHub {
    if (this.#wakes === undefined) {
      const listen = this.doListenForWakeUps?.bind(this);
      const source: WakeSource = {
        probe: (queues) => this.doProbeWakeUp(queues),
        ...(listen === undefined ? {} : { listen }),
      };
      const { wakeUps, wakeBoundMs } = this.capabilities;
      this.#wakes = new WakeHub(source, { mode: wakeUps, boundMs: wakeBoundMs });
    }
    return this.#wakes;
  }

  /** Runs one operation: refused after close, driver errors wrapped, PersistenceErrors untouched. */
  protected async run<T>(operation: string, body: () => Promise<T>): Promise<T> {
    if (this.#closed) throw new BackendError(`${operation}: the backend is closed`);
    try {
      return await body();
    } catch (error) {
      throw toBackendError(operation, error, this.secrets());
    }
  }

  async saveSnapshot(snapshot: WorkflowSnapshot, options?: WriteOptions): Promise<void> {
    const valid = validateSnapshot(snapshot, this.maxPayloadBytes);
    const fence = validateFence(options?.claim, valid.instanceId);
    const consume = options?.consumeEvent === undefined ? undefined : validateEventRef(options.consumeEvent);
    if (consume !== undefined && fence === undefined) {
      throw new ValidationError("consumeEvent needs the claim of the task that consumes it ({ claim })");
    }
    await this.run("saveSnapshot", () => this.doSaveSnapshot(valid, fence, consume));
    if (valid.state.kind === "InProgress") this.#wakeOwn(valid.state.position);
  }

  async saveTaskResult(
    instanceId: string,
    taskId: string,
    output: Uint8Array,
    options?: TaskResultWriteOptions,
  ): Promise<void> {
    validateId("instanceId", instanceId);
    validateId("taskId", taskId);
    const bytes = validateBytes("output", output, this.maxPayloadBytes);
    const fence = validateFence(options?.claim, instanceId, taskId);
    const plain = new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    return this.run("saveTaskResult", () => this.doSaveTaskResult(instanceId, taskId, plain, fence));
  }

  async loadSnapshot(instanceId: string): Promise<WorkflowSnapshot> {
    validateId("instanceId", instanceId);
    return this.run("loadSnapshot", () => this.doLoadSnapshot(instanceId));
  }

  async deleteSnapshot(instanceId: string): Promise<void> {
    validateId("instanceId", instanceId);
    return this.run("deleteSnapshot", () => this.doDeleteSnapshot(instanceId));
  }

  async loadTaskResult(instanceId: string, taskId: string): Promise<Uint8Array | null> {
    validateId("instanceId", instanceId);
    validateId("taskId", taskId);
    return this.run("loadTaskResult", () => this.doLoadTaskResult(instanceId, taskId));
  }

  async purgeFinished(options: PurgeOptions): Promise<number> {
    const { finishedBefore, limit } = validatePurgeOptions(options);
    return this.run("purgeFinished", () => this.doPurgeFinished(finishedBefore, limit));
  }

  async loadTaskClaims(instanceId: string): Promise<TaskClaim[]> {
    validateId("instanceId", instanceId);
    return this.run("loadTaskClaims", () => this.doLoadTaskClaims(instanceId));
  }

  async listSnapshots(): Promise<string[]> {
    return this.run("listSnapshots", async () => {
      const ids: string[] = [];
      let cursor: string | null = null;
      do {
        const page: SnapshotPage = await this.doListSnapshotsPage(cursor, 1000);
        ids.push(...page.instanceIds);
        cursor = page.nextCursor;
      } while (cursor !== null);
      return ids;
    });
  }

  async listSnapshotsPage(options: ListPageOptions): Promise<SnapshotPage> {
    const limit = validateLimit(options?.limit);
    const cursor = options.cursor ?? null;
    if (cursor !== null && (typeof cursor !== "string" || cursor.length === 0 || !cursor.isWellFormed())) {
      throw new ValidationError("cursor must be a string returned by listSnapshotsPage");
    }
    return this.run("listSnapshotsPage", () => this.doListSnapshotsPage(cursor, limit));
  }

  async claimTask(
    instanceId: string,
    taskId: string,
    workerId: string,
    ttlMs?: number | null,
  ): Promise<TaskClaim | null> {
    validateId("instanceId", instanceId);
    validateId("taskId", taskId);
    validateId("workerId", workerId);
    const ttl = validateTtl(ttlMs);
    return this.run("claimTask", () => this.doClaimTask(instanceId, taskId, workerId, ttl));
  }

  async releaseTaskClaim(instanceId: string, taskId: string, workerId: string): Promise<void> {
    validateId("instanceId", instanceId);
    validateId("taskId", taskId);
    validateId("workerId", workerId);
    return this.run("releaseTaskClaim", () => this.doReleaseTaskClaim(instanceId, taskId, workerId));
  }

  async extendTaskClaim(
    instanceId: string,
    taskId: string,
    workerId: string,
    durationMs: number,
  ): Promise<RenewedClaim> {
    validateId("instanceId", instanceId);
    validateId("taskId", taskId);
    validateId("workerId", workerId);
    const duration = validateDuration("durationMs", durationMs);
    return this.run("extendTaskClaim", () => this.doExtendTaskClaim(instanceId, taskId, workerId, duration));
  }

  async findAvailableTasks(
    workerId: string,
    limit: number,
    options?: DiscoveryOptions,
  ): Promise<AvailableTask[]> {
    validateId("workerId", workerId);
    const n = validateLimit(limit);
    const queues = validateQueues(options);
    return this.run("findAvailableTasks", () => this.doFindAvailableTasks(workerId, n, queues));
  }

  async claimAvailableTasks(
    workerId: string,
    limit: number,
    ttlMs?: number | null,
    options?: DiscoveryOptions,
  ): Promise<ClaimedTask[]> {
    validateId("workerId", workerId);
    const n = validateLimit(limit);
    const ttl = validateTtl(ttlMs);
    const queues = validateQueues(options);
    return this.run("claimAvailableTasks", () => this.doClaimAvailableTasks(workerId, n, ttl, queues));
  }

  /**
   * The portable form of a completion with `next`: load, check, then one saveSnapshot of the
   * stepped snapshot fenced by the claim (consuming the event). It rewrites every output, takes
   * its time from this process's clock, and is atomic only through the fence (a result another
   * worker records between the load and the save is overwritten): adapters implement the step
   * natively. A refused state writes nothing and is reported as such, even when the claim is
   * also lost (the portable form cannot read a claim without writing it).
   */
  private async portableStep(c: ValidCompletion, next: NextStep, fence: Fence): Promise<CompletionOutcome> {
    const snapshot = await this.doLoadSnapshot(c.instanceId);
    const state = snapshot.state;
    if (isFinished(state)) return failures.resultsFinal(c.instanceId);
    if (state.kind === "Paused") return failures.pausedCannotMove(c.instanceId);
    if (state.kind !== "InProgress" || positionTaskId(state.position) !== c.taskId) {
      return failures.notAtTask(c.instanceId, c.taskId);
    }
    const now = Math.max(snapshot.updatedAt, Date.now());
    await this.doSaveSnapshot(applyStep(snapshot, c.taskId, c.output, next, now), fence, c.consumeEvent);
    return null;
  }

  async failTasks(failures: readonly TaskFailure[]): Promise<CompletionOutcome[]> {
    const valid = validateFailures(failures, this.maxPayloadBytes);
    return this.run("failTasks", async () => (valid.length === 0 ? [] : this.doFailTasks(valid)));
  }

  async completeTasks(completions: readonly TaskCompletion[]): Promise<CompletionOutcome[]> {
    const valid = validateCompletions(completions, this.maxPayloadBytes);
    const outcomes = await this.run("completeTasks", async () =>
      valid.length === 0 ? [] : this.doCompleteTasks(valid),
    );
    for (const [i, c] of valid.entries()) {
      if (outcomes[i] === null && c.next !== undefined) this.#wakeOwn(c.next);
    }
    return outcomes;
  }

  /**
   * A poll backend's own writes wake its own waiters at once (a push backend's listener hears them
   * from the database): a save or a step that leaves the workflow at a task of `position`'s queue.
   */
  #wakeOwn(position: ExecutionPosition | NextStep): void {
    if (this.#wakes === undefined || this.capabilities.wakeUps !== "poll") return;
    if (position.kind === "AtTask" || position.kind === "AwaitingEvent")
      this.#wakes.notify(scheduleOf(position).queue);
  }

  async cancelWorkflow(instanceId: string, request?: ControlRequest): Promise<void> {
    validateId("instanceId", instanceId);
    const valid = validateControlRequest(request);
    return this.run("cancelWorkflow", () => this.doCancelWorkflow(instanceId, valid));
  }

  async pauseWorkflow(instanceId: string, request?: ControlRequest): Promise<void> {
    validateId("instanceId", instanceId);
    const valid = validateControlRequest(request);
    return this.run("pauseWorkflow", () => this.doPauseWorkflow(instanceId, valid));
  }

  async resumeWorkflow(instanceId: string): Promise<void> {
    validateId("instanceId", instanceId);
    return this.run("resumeWorkflow", () => this.doResumeWorkflow(instanceId));
  }

  async sendEvent(instanceId: string, eventName: string, payload: Uint8Array): Promise<number> {
    validateId("instanceId", instanceId);
    validateId("eventName", eventName);
    const bytes = validateBytes("payload", payload, this.maxPayloadBytes);
    const plain = new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    return this.run("sendEvent", () => this.doSendEvent(instanceId, eventName, plain));
  }

  async loadPendingEvents(instanceId: string): Promise<PendingEvent[]> {
    validateId("instanceId", instanceId);
    return this.run("loadPendingEvents", () => this.doLoadPendingEvents(instanceId));
  }

  async waitForTasks(options: WaitOptions): Promise<WakeReason> {
    const { queues, timeoutMs, signal } = validateWaitOptions(options);
    return this.run("waitForTasks", () => this.#wakeHub().wait(queues, timeoutMs, signal));
  }

  /** Idempotent: a second close waits for the first and does nothing more. */
  async close(): Promise<void> {
    if (this.#closing === undefined) {
      this.#closed = true;
      // Waits end ("closed") and the listener's connection goes before the backend's own.
      const wakes = this.#wakes;
      this.#closing = (async () => {
        await wakes?.close();
        await this.doClose();
      })().catch((error: unknown) => {
        throw toBackendError("close", error, this.secrets());
      });
    }
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
