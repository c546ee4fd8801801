import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import {
  type AvailableTask,
  type BackendCapabilities,
  BaseBackend,
  type ClaimedTask,
  type CompletionOutcome,
  type ControlRequest,
  type EventRef,
  type Fence,
  type PendingEvent,
  type RenewedClaim,
  type SnapshotPage,
  type TaskClaim,
  type ValidCompletion,
  type ValidFailure,
  type WakeProbe,
  type WorkflowSnapshot,
} from "@sayiir/persistence-core";
import type { MigrationReport } from "@sayiir/persistence-core/adapter";
import { extendTaskClaim, releaseTaskClaim, tryClaim } from "./claims.js";
import { completeTasks, saveTaskResult } from "./completion.js";
import { type Context, createContext } from "./context.js";
import { cancelWorkflow, pauseWorkflow, resumeWorkflow } from "./control.js";
import { deleteSnapshot } from "./deletion.js";
import { claimAvailableTasks, findAvailableTasks } from "./discovery.js";
import { loadPendingEvents, sendEvent } from "./events.js";
import { failTasks } from "./failure.js";
import { durableRefusal, durableRefusals } from "./lapse.js";
import { Layout } from "./layout.js";
import { cleanup, DEFAULT_GRACE_MS } from "./maintenance.js";
import {
  clientConfigOf,
  type DynamoDBBackendOptions,
  type NormalizedOptions,
  normalizeOptions,
} from "./options.js";
import { backfillFinishTimes, purgeFinished } from "./retention.js";
import { ensureTable } from "./schema.js";
import { listSnapshotsPage, loadSnapshot, saveSnapshot } from "./snapshots.js";
import { loadTaskClaims, loadTaskResult } from "./task-reads.js";
import { probeWakeUp } from "./wake-ups.js";

/**
 * Sayiir persistence on one DynamoDB table (single-table design; see the README for the layout).
 * Claims, releases, extensions and fenced writes are conditional writes judged on the client
 * clock, with `clockSkewBudgetMs` of tolerance between clients. The work is done by one module
 * per concern (snapshots, deletion, completion, claims, discovery, control, events, maintenance),
 * each taking the backend's Context.
 */
export class DynamoDBBackend extends BaseBackend {
  readonly client: DynamoDBClient;
  readonly tableName: string;
  readonly capabilities: BackendCapabilities;
  readonly #ownsClient: boolean;
  readonly #o: NormalizedOptions;
  readonly #ctx: Context;

  constructor(options: DynamoDBBackendOptions) {
    super(options);
    this.#o = normalizeOptions(options);
    this.tableName = this.#o.tableName;
    this.#ownsClient = options.client === undefined;
    this.client = options.client ?? new DynamoDBClient(clientConfigOf(this.#o, options.clientConfig));
    this.#ctx = createContext(
      this.client,
      new Layout(this.#o.keyPrefix, this.#o.shards, this.agingMs),
      this.#o,
    );
    this.capabilities = {
      durable: true,
      clock: "client",
      clockSkewMs: this.#o.skewMs,
      shards: this.#o.shards,
      // Waits poll the indexes (wake-ups.ts): at most this long between looks while idle.
      wakeUps: "poll",
      wakeBoundMs: 200,
      dbSystem: "aws.dynamodb",
    };
  }

  /** Static credentials given in clientConfig: scrubbed from wrapped error messages. */
  protected override secrets(): readonly string[] {
    return this.#o.secrets;
  }

  /** The key layout (exposed for tests and tooling). */
  get layout(): Layout {
    return this.#ctx.layout;
  }

  /**
   * Creates the table and its indexes if missing and waits until they are ACTIVE, then gives the
   * finished heads of this key prefix that have none a finish time (their updatedAt; once: a
   * mark records it). Idempotent. Version 1 is the table with the ready and list indexes, version
   * 2 adds the timer index, version 3 the finished index; `applied` lists the versions this call
   * brought (creating the table: [1, 2, 3]).
   */
  async migrate(): Promise<MigrationReport> {
    return this.run("migrate", async () => {
      const report = await ensureTable(this.client, this.tableName);
      await backfillFinishTimes(this.#ctx);
      return report;
    });
  }

  /**
   * Deletes what interrupted writes left behind: result items of a generation that is not (or no
   * longer) current, chunk items that no head or current result points at, and the markers of
   * interrupted deletes. Only items older than `graceMs` (default 15 minutes) are touched, so
   * writes in flight are safe. It scans the table (filtered to this backend's key prefix): run it
   * off-peak.
   */
  async cleanup(options: { graceMs?: number } = {}): Promise<{ deletedItems: number }> {
    return this.run("cleanup", () => cleanup(this.#ctx, options.graceMs ?? DEFAULT_GRACE_MS));
  }

  protected async doSaveSnapshot(
    snapshot: WorkflowSnapshot,
    fence: Fence | undefined,
    consumeEvent: EventRef | undefined,
  ): Promise<void> {
    const ctx = this.#ctx;
    await durableRefusal(ctx, snapshot.instanceId, fence, () =>
      saveSnapshot(ctx, snapshot, fence, consumeEvent),
    );
  }

  protected doSaveTaskResult(
    instanceId: string,
    taskId: string,
    output: Uint8Array,
    fence: Fence | undefined,
  ): Promise<void> {
    const ctx = this.#ctx;
    return durableRefusal(ctx, instanceId, fence, () =>
      saveTaskResult(ctx, instanceId, taskId, output, fence),
    );
  }

  protected override doCompleteTasks(completions: readonly ValidCompletion[]): Promise<CompletionOutcome[]> {
    const ctx = this.#ctx;
    return durableRefusals(ctx, completions, (items) => completeTasks(ctx, items));
  }

  protected doLoadSnapshot(instanceId: string): Promise<WorkflowSnapshot> {
    return loadSnapshot(this.#ctx, instanceId);
  }

  protected doDeleteSnapshot(instanceId: string): Promise<void> {
    return deleteSnapshot(this.#ctx, instanceId);
  }

  protected doLoadTaskResult(instanceId: string, taskId: string): Promise<Uint8Array | null> {
    return loadTaskResult(this.#ctx, instanceId, taskId);
  }

  protected doPurgeFinished(finishedBefore: number, limit: number): Promise<number> {
    return purgeFinished(this.#ctx, finishedBefore, limit);
  }

  protected doLoadTaskClaims(instanceId: string): Promise<TaskClaim[]> {
    return loadTaskClaims(this.#ctx, instanceId);
  }

  protected doListSnapshotsPage(cursor: string | null, limit: number): Promise<SnapshotPage> {
    return listSnapshotsPage(this.#ctx, cursor, limit);
  }

  protected doClaimTask(
    instanceId: string,
    taskId: string,
    workerId: string,
    ttlMs: number | null,
  ): Promise<TaskClaim | null> {
    return tryClaim(this.#ctx, instanceId, taskId, workerId, ttlMs);
  }

  protected doReleaseTaskClaim(instanceId: string, taskId: string, workerId: string): Promise<void> {
    return releaseTaskClaim(this.#ctx, instanceId, taskId, workerId);
  }

  protected doExtendTaskClaim(
    instanceId: string,
    taskId: string,
    workerId: string,
    durationMs: number,
  ): Promise<RenewedClaim> {
    return extendTaskClaim(this.#ctx, instanceId, taskId, workerId, durationMs);
  }

  protected doFindAvailableTasks(
    _workerId: string,
    limit: number,
    queues: readonly string[],
  ): Promise<AvailableTask[]> {
    return findAvailableTasks(this.#ctx, limit, queues);
  }

  protected doClaimAvailableTasks(
    workerId: string,
    limit: number,
    ttlMs: number | null,
    queues: readonly string[],
  ): Promise<ClaimedTask[]> {
    return claimAvailableTasks(this.#ctx, workerId, limit, ttlMs, queues);
  }

  protected doFailTasks(failures: readonly ValidFailure[]): Promise<CompletionOutcome[]> {
    const ctx = this.#ctx;
    return durableRefusals(ctx, failures, (items) => failTasks(ctx, items));
  }

  protected doCancelWorkflow(instanceId: string, request: Required<ControlRequest>): Promise<void> {
    return cancelWorkflow(this.#ctx, instanceId, request);
  }

  protected doPauseWorkflow(instanceId: string, request: Required<ControlRequest>): Promise<void> {
    return pauseWorkflow(this.#ctx, instanceId, request);
  }

  protected doResumeWorkflow(instanceId: string): Promise<void> {
    return resumeWorkflow(this.#ctx, instanceId);
  }

  protected doSendEvent(instanceId: string, eventName: string, payload: Uint8Array): Promise<number> {
    return sendEvent(this.#ctx, instanceId, eventName, payload);
  }

  protected override doProbeWakeUp(queues: readonly string[]): Promise<WakeProbe> {
    return probeWakeUp(this.#ctx, queues);
  }

  protected doLoadPendingEvents(instanceId: string): Promise<PendingEvent[]> {
    return loadPendingEvents(this.#ctx, instanceId);
  }

  protected async doClose(): Promise<void> {
    if (this.#ownsClient) this.client.destroy();
  }
}
