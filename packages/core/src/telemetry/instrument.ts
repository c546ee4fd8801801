// The wrapper: a PersistentBackend that runs each operation of the one it wraps in a span. Each
// method says which of its arguments and results are worth an attribute; bytes never are.
import { type Attributes, type Meter, metrics, type Tracer, trace } from "@opentelemetry/api";
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
} from "../backend.js";
import type { AvailableTask, ClaimedTask, RenewedClaim, TaskClaim } from "../claims.js";
import type { ControlRequest, WorkflowSnapshot } from "../snapshot.js";
import type { WaitOptions, WakeReason } from "../wake-ups.js";
import { ATTR, attrs, claimList, fenceToken, field, outcomeCounts } from "./attributes.js";
import { Instruments } from "./metrics.js";
import { Spans } from "./spans.js";
import { INSTRUMENTATION_NAME, INSTRUMENTATION_VERSION } from "./version.js";

export interface InstrumentOptions {
  /** Default: `trace.getTracer("@sayiir/persistence-core", version)` of the global provider. */
  tracer?: Tracer;
  /** Default: `metrics.getMeter(...)` of the global provider, taken at the first operation. */
  meter?: Meter;
  /** `db.namespace` on every span and measurement (the schema, database, key prefix or table). */
  namespace?: string;
}

/**
 * Wraps `backend` so that every operation runs in a CLIENT span named after it, with the
 * database conventions' attributes and Sayiir's identifiers, and feeds the counters. Same
 * interface and capabilities; close() and Symbol.asyncDispose reach the wrapped backend.
 */
export function instrument(backend: PersistentBackend, options: InstrumentOptions = {}): PersistentBackend {
  return new InstrumentedBackend(backend, options);
}

class InstrumentedBackend implements PersistentBackend {
  readonly #inner: PersistentBackend;
  readonly #spans: Spans;

  constructor(inner: PersistentBackend, options: InstrumentOptions) {
    this.#inner = inner;
    const base = attrs({
      [ATTR.dbSystem]: inner.capabilities.dbSystem,
      [ATTR.dbNamespace]: options.namespace,
    });
    const tracer = options.tracer ?? trace.getTracer(INSTRUMENTATION_NAME, INSTRUMENTATION_VERSION);
    // The global meter is looked up at the first operation, not here: a MeterProvider registered
    // after instrument() still gets the measurements (metrics has no proxy, unlike trace).
    let instruments: Instruments | undefined;
    const lazy = (): Instruments => {
      instruments ??= new Instruments(
        options.meter ?? metrics.getMeter(INSTRUMENTATION_NAME, INSTRUMENTATION_VERSION),
        base,
      );
      return instruments;
    };
    this.#spans = new Spans(tracer, base, lazy);
  }

  get capabilities(): BackendCapabilities {
    return this.#inner.capabilities;
  }

  saveSnapshot(snapshot: WorkflowSnapshot, options?: WriteOptions): Promise<void> {
    const a = attrs({
      [ATTR.instanceId]: field(snapshot, "instanceId"),
      [ATTR.workflowState]: field(field(snapshot, "state"), "kind"),
      [ATTR.taskId]: field(options?.claim, "taskId"),
      [ATTR.workerId]: field(options?.claim, "workerId"),
      [ATTR.claimToken]: fenceToken(options?.claim),
      [ATTR.eventName]: field(options?.consumeEvent, "eventName"),
      [ATTR.eventSequence]: field(options?.consumeEvent, "sequence"),
    });
    return this.#spans.run("saveSnapshot", a, () => this.#inner.saveSnapshot(snapshot, options));
  }

  saveTaskResult(
    instanceId: string,
    taskId: string,
    output: Uint8Array,
    options?: TaskResultWriteOptions,
  ): Promise<void> {
    const a = attrs({
      [ATTR.instanceId]: instanceId,
      [ATTR.taskId]: taskId,
      [ATTR.claimToken]: fenceToken(options?.claim),
    });
    return this.#spans.run("saveTaskResult", a, () =>
      this.#inner.saveTaskResult(instanceId, taskId, output, options),
    );
  }

  loadSnapshot(instanceId: string): Promise<WorkflowSnapshot> {
    return this.#spans.run(
      "loadSnapshot",
      attrs({ [ATTR.instanceId]: instanceId }),
      () => this.#inner.loadSnapshot(instanceId),
      (snapshot) => attrs({ [ATTR.workflowState]: snapshot.state.kind }),
    );
  }

  deleteSnapshot(instanceId: string): Promise<void> {
    const a = attrs({ [ATTR.instanceId]: instanceId });
    return this.#spans.run("deleteSnapshot", a, () => this.#inner.deleteSnapshot(instanceId));
  }

  loadTaskResult(instanceId: string, taskId: string): Promise<Uint8Array | null> {
    return this.#spans.run(
      "loadTaskResult",
      attrs({ [ATTR.instanceId]: instanceId, [ATTR.taskId]: taskId }),
      () => this.#inner.loadTaskResult(instanceId, taskId),
      (result) => ({ [ATTR.resultFound]: result !== null }),
    );
  }

  purgeFinished(options: PurgeOptions): Promise<number> {
    return this.#spans.run(
      "purgeFinished",
      attrs({
        [ATTR.finishedBefore]: field(options, "finishedBefore"),
        [ATTR.limit]: field(options, "limit"),
      }),
      () => this.#inner.purgeFinished(options),
      (deleted) => ({ [ATTR.resultCount]: deleted }),
    );
  }

  loadTaskClaims(instanceId: string): Promise<TaskClaim[]> {
    return this.#spans.run(
      "loadTaskClaims",
      attrs({ [ATTR.instanceId]: instanceId }),
      () => this.#inner.loadTaskClaims(instanceId),
      (claims) => attrs({ [ATTR.resultCount]: claims.length, ...listedClaims(claims) }),
    );
  }

  listSnapshots(): Promise<string[]> {
    return this.#spans.run(
      "listSnapshots",
      {},
      () => this.#inner.listSnapshots(),
      (ids) => ({ [ATTR.resultCount]: ids.length }),
    );
  }

  listSnapshotsPage(options: ListPageOptions): Promise<SnapshotPage> {
    return this.#spans.run(
      "listSnapshotsPage",
      attrs({ [ATTR.limit]: field(options, "limit") }),
      () => this.#inner.listSnapshotsPage(options),
      (page) => ({ [ATTR.resultCount]: page.instanceIds.length, [ATTR.hasMore]: page.nextCursor !== null }),
    );
  }

  claimTask(
    instanceId: string,
    taskId: string,
    workerId: string,
    ttlMs?: number | null,
  ): Promise<TaskClaim | null> {
    return this.#spans.run(
      "claimTask",
      attrs({ ...ids(instanceId, taskId, workerId), [ATTR.claimTtlMs]: ttlMs }),
      () => this.#inner.claimTask(instanceId, taskId, workerId, ttlMs),
      (claim, instruments) => {
        instruments.claimed("claimTask", claim === null ? 0 : 1);
        return attrs({ [ATTR.claimAcquired]: claim !== null, [ATTR.claimToken]: claim?.token });
      },
    );
  }

  releaseTaskClaim(instanceId: string, taskId: string, workerId: string): Promise<void> {
    return this.#spans.run("releaseTaskClaim", attrs(ids(instanceId, taskId, workerId)), () =>
      this.#inner.releaseTaskClaim(instanceId, taskId, workerId),
    );
  }

  extendTaskClaim(
    instanceId: string,
    taskId: string,
    workerId: string,
    durationMs: number,
  ): Promise<RenewedClaim> {
    return this.#spans.run(
      "extendTaskClaim",
      attrs({ ...ids(instanceId, taskId, workerId), [ATTR.durationMs]: durationMs }),
      () => this.#inner.extendTaskClaim(instanceId, taskId, workerId, durationMs),
      (claim) => ({ [ATTR.claimToken]: claim.token, [ATTR.workflowPaused]: claim.workflowPaused }),
    );
  }

  findAvailableTasks(workerId: string, limit: number, options?: DiscoveryOptions): Promise<AvailableTask[]> {
    return this.#spans.run(
      "findAvailableTasks",
      attrs({ [ATTR.workerId]: workerId, [ATTR.limit]: limit, [ATTR.queues]: field(options, "queues") }),
      () => this.#inner.findAvailableTasks(workerId, limit, options),
      (tasks) => ({ [ATTR.resultCount]: tasks.length }),
    );
  }

  claimAvailableTasks(
    workerId: string,
    limit: number,
    ttlMs?: number | null,
    options?: DiscoveryOptions,
  ): Promise<ClaimedTask[]> {
    const a = attrs({
      [ATTR.workerId]: workerId,
      [ATTR.limit]: limit,
      [ATTR.claimTtlMs]: ttlMs,
      [ATTR.queues]: field(options, "queues"),
    });
    return this.#spans.run(
      "claimAvailableTasks",
      a,
      () => this.#inner.claimAvailableTasks(workerId, limit, ttlMs, options),
      (tasks, instruments) => {
        instruments.claimed("claimAvailableTasks", tasks.length);
        return attrs({ [ATTR.resultCount]: tasks.length, ...listedClaims(tasks.map((t) => t.claim)) });
      },
    );
  }

  completeTasks(completions: readonly TaskCompletion[]): Promise<CompletionOutcome[]> {
    return this.#batch("completeTasks", completions, () => this.#inner.completeTasks(completions));
  }

  failTasks(failures: readonly TaskFailure[]): Promise<CompletionOutcome[]> {
    return this.#batch("failTasks", failures, () => this.#inner.failTasks(failures));
  }

  /** completeTasks and failTasks: a refused item is an outcome (span OK), counted as a refusal. */
  #batch(
    operation: "completeTasks" | "failTasks",
    items: readonly unknown[],
    call: () => Promise<CompletionOutcome[]>,
  ): Promise<CompletionOutcome[]> {
    const list = Array.isArray(items) ? items : [];
    const a = attrs({
      [ATTR.batchSize]: list.length,
      [ATTR.dbBatchSize]: list.length >= 2 ? list.length : undefined,
      ...claimList(list.map((item) => field(item, "claim"))),
    });
    // One completion moving its workflow on says where to (the kind only: a final output is bytes).
    if (list.length === 1)
      Object.assign(a, attrs({ [ATTR.nextStep]: field(field(list[0], "next"), "kind") }));
    return this.#spans.run(operation, a, call, (outcomes, instruments) => {
      instruments.settled(operation, outcomes);
      return outcomeCounts(outcomes);
    });
  }

  cancelWorkflow(instanceId: string, request?: ControlRequest): Promise<void> {
    // The request's reason and requester are free text a user typed: not recorded.
    const a = attrs({ [ATTR.instanceId]: instanceId });
    return this.#spans.run("cancelWorkflow", a, () => this.#inner.cancelWorkflow(instanceId, request));
  }

  pauseWorkflow(instanceId: string, request?: ControlRequest): Promise<void> {
    const a = attrs({ [ATTR.instanceId]: instanceId });
    return this.#spans.run("pauseWorkflow", a, () => this.#inner.pauseWorkflow(instanceId, request));
  }

  resumeWorkflow(instanceId: string): Promise<void> {
    const a = attrs({ [ATTR.instanceId]: instanceId });
    return this.#spans.run("resumeWorkflow", a, () => this.#inner.resumeWorkflow(instanceId));
  }

  sendEvent(instanceId: string, eventName: string, payload: Uint8Array): Promise<number> {
    return this.#spans.run(
      "sendEvent",
      attrs({ [ATTR.instanceId]: instanceId, [ATTR.eventName]: eventName }),
      () => this.#inner.sendEvent(instanceId, eventName, payload),
      (sequence) => ({ [ATTR.eventSequence]: sequence }),
    );
  }

  loadPendingEvents(instanceId: string): Promise<PendingEvent[]> {
    return this.#spans.run(
      "loadPendingEvents",
      attrs({ [ATTR.instanceId]: instanceId }),
      () => this.#inner.loadPendingEvents(instanceId),
      (events) => ({ [ATTR.resultCount]: events.length }),
    );
  }

  waitForTasks(options: WaitOptions): Promise<WakeReason> {
    return this.#spans.run(
      "waitForTasks",
      attrs({ [ATTR.queues]: field(options, "queues"), [ATTR.timeoutMs]: field(options, "timeoutMs") }),
      () => this.#inner.waitForTasks(options),
      (reason, instruments) => {
        instruments.wokeUp(reason);
        return { [ATTR.wakeReason]: reason };
      },
    );
  }

  close(): Promise<void> {
    return this.#inner.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.#inner[Symbol.asyncDispose]();
  }
}

function ids(instanceId: unknown, taskId: unknown, workerId: unknown): Record<string, unknown> {
  return { [ATTR.instanceId]: instanceId, [ATTR.taskId]: taskId, [ATTR.workerId]: workerId };
}

/** The tokens and ids of claims a read or claim-next returned. */
function listedClaims(claims: readonly TaskClaim[]): Attributes {
  return claims.length === 0 ? {} : attrs(claimList(claims));
}
