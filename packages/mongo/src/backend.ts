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
  validateWaitOptions,
  type WaitOptions,
  type WakeProbe,
  type WakeReason,
  type WorkflowSnapshot,
} from "@sayiir/persistence-core";
import { connectionSecrets, type MigrationReport } from "@sayiir/persistence-core/adapter";
import { MongoClient } from "mongodb";
import { ChangeStreamWakeUps, type WakeUpMode } from "./change-stream.js";
import { claimTask, extendClaim, releaseClaim } from "./claims.js";
import { completeTasks, failTasks, saveTaskResult } from "./completion.js";
import { MongoContext, noServerClock } from "./context.js";
import { cancelWorkflow, pauseWorkflow, resumeWorkflow } from "./control.js";
import { claimAvailableTasks, findAvailableTasks } from "./discovery.js";
import { loadPendingEvents, sendEvent } from "./events.js";
import type { CollectionNames } from "./layout.js";
import { type MongoBackendOptions, normalizeOptions } from "./options.js";
import { loadTaskClaims, loadTaskResult, purgeFinished } from "./retention.js";
import { migrate, type ServerFeatures } from "./schema.js";
import { deleteSnapshot, listSnapshotsPage, loadSnapshot, saveSnapshot } from "./snapshots.js";
import { probeWakeUp } from "./wake-ups.js";

/**
 * Sayiir persistence on MongoDB (official driver). Each instance has one document holding its
 * snapshot header, its initial input (or the reference of its blob), its task-result references,
 * its claims and its pending events; every claim, release, extend, (fenced) write, control
 * operation and event is one compare-and-set of that document, so a fence check and the write
 * it guards are atomic. No multi-document transaction
 * is used. The operations live in modules per concern that take a MongoContext; see the README.
 */
export class MongoBackend extends BaseBackend {
  readonly #ctx: MongoContext;
  readonly #client: MongoClient;
  readonly #ownsClient: boolean;
  readonly #secrets: string[];
  #reconnecting: Promise<void> | undefined;
  #closing = false;
  /** Change stream or poll for waitForTasks (see change-stream.ts). */
  readonly #wakeUps: ChangeStreamWakeUps;

  constructor(options: MongoBackendOptions) {
    super(options);
    const normalized = normalizeOptions(options);
    const { url, client, clientOptions } = normalized;
    this.#secrets = connectionSecrets(url);
    this.#ownsClient = client === undefined;
    this.#client = client ?? new MongoClient(url as string, clientOptions);
    this.#ctx = new MongoContext(this.#client, normalized, this.agingMs);
    this.#wakeUps = new ChangeStreamWakeUps(this.#ctx.snapshots, normalized.changeStreams);
  }

  /**
   * Durable; one ready index (no shards); idle workers follow a change stream where the server
   * runs one, else poll. Claim expiry is judged on the
   * server's clock (sampled, see the README) unless `clock: "client"` is set or the server
   * reports no time ("auto" says "server" until the first operation has probed it). Either way
   * the adapter adds no skew budget of its own: clockSkewMs is 0.
   */
  get capabilities(): BackendCapabilities {
    const clock = this.#ctx.options.clock === "client" ? "client" : (this.#ctx.clockMode ?? "server");
    return {
      durable: true,
      clock,
      clockSkewMs: 0,
      shards: 1,
      // A change stream wakes waiters (re-probed every 10 s all the same), else a poll at 200 ms:
      // which one is known once migrate() or the first wait asked the server (see wakeUpMode()).
      ...(this.#wakeUps.mode === "push"
        ? { wakeUps: "push" as const, wakeBoundMs: 10_000 }
        : { wakeUps: "poll" as const, wakeBoundMs: 200 }),
      dbSystem: "mongodb",
    };
  }

  protected override secrets(): readonly string[] {
    return this.#secrets;
  }

  /**
   * When the first (automatic) connect fails, the driver closes its topology for good, and every
   * later call on that client throws MongoTopologyClosedError. For a client this backend opened,
   * connect it again, so the backend recovers once the server is back. A client passed in by the
   * user is theirs to manage.
   */
  protected override async run<T>(operation: string, body: () => Promise<T>): Promise<T> {
    try {
      return await super.run(operation, body);
    } catch (error) {
      if (this.#ownsClient && !this.#closing && topologyClosed(error)) {
        this.#reconnecting ??= this.#client
          .connect()
          .then(
            () => undefined,
            () => undefined,
          )
          .finally(() => {
            this.#reconnecting = undefined;
          });
      }
      throw error;
    }
  }

  /** The database this backend uses. */
  get databaseName(): string {
    return this.#ctx.db.databaseName;
  }

  /** The collection names this backend uses. */
  get collections(): Readonly<CollectionNames> {
    return this.#ctx.names;
  }

  /**
   * Creates the indexes and records the schema version (idempotent; safe to run from many
   * processes at once), after probing what the server supports (see serverFeatures()).
   */
  async migrate(): Promise<MigrationReport> {
    return this.run("migrate", async () => {
      const ctx = this.#ctx;
      const prefix = ctx.options.collectionPrefix;
      const { features, report } = await migrate(ctx.db, ctx.names, ctx.meta, prefix, this.agingMs);
      ctx.knowFeatures(features);
      if (ctx.options.clock === "server" && !features.serverClock) throw noServerClock();
      await this.#wakeUps.detect();
      return report;
    });
  }

  /** What the connected server supports: what migrate() found, else probed once now. */
  async serverFeatures(): Promise<ServerFeatures> {
    return this.run("serverFeatures", () => this.#ctx.features());
  }

  /** Which clock judges claim expiry: "server" (the server's localTime) or "client" (Date.now). */
  async clockMode(): Promise<"server" | "client"> {
    return this.run("clockMode", async () => (await this.#ctx.clock()).mode);
  }

  protected async doSaveSnapshot(
    snapshot: WorkflowSnapshot,
    fence: Fence | undefined,
    consumeEvent: EventRef | undefined,
  ): Promise<void> {
    await saveSnapshot(this.#ctx, snapshot, fence, consumeEvent);
  }

  protected doLoadSnapshot(instanceId: string): Promise<WorkflowSnapshot> {
    return loadSnapshot(this.#ctx, instanceId);
  }

  protected doDeleteSnapshot(instanceId: string): Promise<void> {
    return deleteSnapshot(this.#ctx, instanceId);
  }

  protected doListSnapshotsPage(cursor: string | null, limit: number): Promise<SnapshotPage> {
    return listSnapshotsPage(this.#ctx, cursor, limit);
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

  protected doSaveTaskResult(
    instanceId: string,
    taskId: string,
    output: Uint8Array,
    fence: Fence | undefined,
  ): Promise<void> {
    return saveTaskResult(this.#ctx, instanceId, taskId, output, fence);
  }

  protected override doCompleteTasks(completions: readonly ValidCompletion[]): Promise<CompletionOutcome[]> {
    return completeTasks(this.#ctx, completions);
  }

  protected doClaimTask(
    instanceId: string,
    taskId: string,
    workerId: string,
    ttlMs: number | null,
  ): Promise<TaskClaim | null> {
    return claimTask(this.#ctx, instanceId, taskId, workerId, ttlMs);
  }

  protected doReleaseTaskClaim(instanceId: string, taskId: string, workerId: string): Promise<void> {
    return releaseClaim(this.#ctx, instanceId, taskId, workerId);
  }

  protected doExtendTaskClaim(
    instanceId: string,
    taskId: string,
    workerId: string,
    durationMs: number,
  ): Promise<RenewedClaim> {
    return extendClaim(this.#ctx, instanceId, taskId, workerId, durationMs);
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
    return failTasks(this.#ctx, failures);
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

  /**
   * How waits learn of other clients' writes, and why: a change stream ("push") or the poll.
   * Asks the server once if neither migrate() nor a wait has yet.
   */
  async wakeUpMode(): Promise<WakeUpMode> {
    return this.run("wakeUpMode", () => this.#wakeUps.detect());
  }

  /** The first wait asks the server first (unless migrate() did): the hub reads the mode once. */
  override async waitForTasks(options: WaitOptions): Promise<WakeReason> {
    if (!this.#wakeUps.known) {
      validateWaitOptions(options);
      await this.run("waitForTasks", () => this.#wakeUps.detect());
    }
    return super.waitForTasks(options);
  }

  protected override doProbeWakeUp(queues: readonly string[]): Promise<WakeProbe> {
    return probeWakeUp(this.#ctx, queues);
  }

  /** Push only (the hub calls it when capabilities say "push"): the one change stream. */
  protected override doListenForWakeUps(
    notify: (queue: string | null, readyNow?: boolean) => void,
  ): Promise<() => Promise<void>> {
    return this.#wakeUps.listen(notify);
  }

  protected doLoadPendingEvents(instanceId: string): Promise<PendingEvent[]> {
    return loadPendingEvents(this.#ctx, instanceId);
  }

  protected async doClose(): Promise<void> {
    this.#closing = true;
    await this.#reconnecting;
    if (this.#ownsClient) await this.#client.close();
  }
}

/** Is this (or its cause) the driver's "topology closed" error? */
function topologyClosed(error: unknown): boolean {
  for (let e: unknown = error, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) {
    if (e.name === "MongoTopologyClosedError") return true;
  }
  return false;
}
