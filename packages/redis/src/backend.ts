import {
  type AvailableTask,
  type BackendCapabilities,
  BackendError,
  BaseBackend,
  type ClaimedTask,
  type CompletionOutcome,
  type ControlRequest,
  type EventRef,
  type Fence,
  failures,
  type PendingEvent,
  type RenewedClaim,
  type SnapshotPage,
  type TaskClaim,
  ValidationError,
  type ValidCompletion,
  type ValidFailure,
  type WakeProbe,
  type WorkflowSnapshot,
} from "@sayiir/persistence-core";
import type { Cluster, Redis } from "ioredis";
import { completeTasks, failTasks } from "./completion.js";
import type { ShardContext } from "./context.js";
import { changeWorkflow } from "./control.js";
import { claimAvailableTasks, findAvailableTasks, probeWakeUp } from "./discovery.js";
import { loadPendingEvents, sendEvent } from "./events.js";
import { decodeCursor, encodeCursor, KeyLayout, RecordField } from "./layout.js";
import {
  DEFAULT_CLUSTER_SHARDS,
  DEFAULT_STANDALONE_SHARDS,
  normalizeOptions,
  type RedisBackendOptions,
} from "./options.js";
import { loadTaskClaims, loadTaskResult } from "./reads.js";
import { decodeInstance, requestId, toArg, toClaim } from "./replies.js";
import { indexFinishedInstances, purgeFinished } from "./retention.js";
import { type StoreRecordRequest, storeLayout, storeRecordArgs } from "./schema.js";
import { refusal, type ScriptArg, type ScriptName, Scripts } from "./scripts/index.js";
import { saveSnapshot } from "./snapshots.js";
import { listenForWakeUps } from "./wake-ups.js";

/**
 * Persistence backend over Redis (standalone or Cluster) through ioredis. Every state change is
 * one Lua script on the keys of one slot; claim expiry is judged by Redis's own clock.
 */
export class RedisBackend extends BaseBackend {
  /** The ioredis client in use (owned by the backend unless it was passed in as `client`). */
  readonly client: Redis | Cluster;
  readonly #owned: boolean;
  readonly #secrets: string[];
  readonly #timeoutMs: number;
  readonly #scripts: Scripts;
  /** Cluster: scripts of one shard each. Standalone: one script may cover every shard. */
  readonly #cluster: boolean;
  /** The shard count given in the options, if any. */
  readonly #wantedShards: number | undefined;
  #context: ShardContext;
  /** True once the shard count is checked against the store record. */
  #layoutKnown = false;
  #layoutLoading: Promise<ShardContext> | undefined;
  /** True once the store record says the finish-time index holds every finished instance. */
  #finishIndexed = false;
  #finishIndexing: Promise<void> | undefined;

  constructor(options: RedisBackendOptions) {
    super(options);
    const normalized = normalizeOptions(options ?? {});
    this.client = normalized.client;
    this.#owned = normalized.owned;
    this.#secrets = normalized.secrets;
    this.#timeoutMs = normalized.operationTimeoutMs;
    this.#cluster = (this.client as { isCluster?: boolean }).isCluster === true;
    this.#wantedShards = normalized.shards;
    const shards = normalized.shards ?? (this.#cluster ? DEFAULT_CLUSTER_SHARDS : DEFAULT_STANDALONE_SHARDS);
    this.#context = this.#contextFor(new KeyLayout(normalized.keyPrefix, shards));
    this.#scripts = new Scripts(this.client, normalized.faults, normalized.replicaAcks);
    if (this.#owned) {
      // Connection errors surface through the commands that fail; keep them off the process's
      // unhandled 'error' event.
      this.client.on("error", () => {});
    }
  }

  /**
   * What this backend is. `shards` is the count in use: the one of the options (or the default)
   * until the first operation has read the store record, the store's own count from then on.
   */
  get capabilities(): BackendCapabilities {
    return {
      durable: true,
      clock: "server",
      clockSkewMs: 0,
      shards: this.layout.shards,
      // Pub/sub on {P:wake}; a waiter looks again every 10 s all the same (a lost message).
      wakeUps: "push",
      wakeBoundMs: 10_000,
      dbSystem: "redis",
    };
  }

  /**
   * The key layout. Its shard count is the one of the options (or the default) until the first
   * operation has read the store record, the store's own count from then on.
   */
  get layout(): KeyLayout {
    return this.#context.layout;
  }

  protected override secrets(): readonly string[] {
    return this.#secrets;
  }

  #contextFor(layout: KeyLayout): ShardContext {
    return {
      layout,
      oneScript: !this.#cluster || layout.shards === 1,
      shardArgs: layout.allShards().map(String),
      // Longer than any wait for a reply.
      recordTtlMs: String(Math.max(60_000, 2 * this.#timeoutMs)),
      agingMs: this.agingMs,
      call: (name, operation, args, buffers) => this.#call(name, operation, args, buffers),
    };
  }

  /** The layout and the rest, checked against the store record once (the first operation pays one round trip). */
  #shards(): ShardContext | Promise<ShardContext> {
    if (this.#layoutKnown) return this.#context;
    this.#layoutLoading ??= this.#loadLayout().finally(() => {
      this.#layoutLoading = undefined;
    });
    return this.#layoutLoading;
  }

  #keys(): KeyLayout | Promise<KeyLayout> {
    if (this.#layoutKnown) return this.#context.layout;
    return (this.#shards() as Promise<ShardContext>).then((context) => context.layout);
  }

  async #loadLayout(): Promise<ShardContext> {
    const request: StoreRecordRequest = {
      current: this.layout,
      wanted: this.#wantedShards,
      cluster: this.#cluster,
    };
    const reply = await this.#call("storeRecord", "reading the layout record", storeRecordArgs(request));
    const layout = storeLayout(reply, request);
    if (layout !== this.layout) this.#context = this.#contextFor(layout);
    this.#layoutKnown = true;
    return this.#context;
  }

  /** Calls one script, bounded by the operation timeout. */
  #call(name: ScriptName, operation: string, args: ScriptArg[], buffers = false): Promise<unknown> {
    return this.#timed(operation, this.#scripts.call(name, args, buffers));
  }

  /** Bounds every wait on Redis: a command that takes longer fails with BackendError. */
  #timed<T>(what: string, promise: Promise<T>): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new BackendError(`${what}: no answer from Redis within ${this.#timeoutMs} ms`)),
        this.#timeoutMs,
      );
    });
    promise.catch(() => {});
    return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
  }

  protected async doSaveSnapshot(
    snapshot: WorkflowSnapshot,
    fence: Fence | undefined,
    consume: EventRef | undefined,
  ): Promise<void> {
    return saveSnapshot(await this.#shards(), snapshot, fence, consume);
  }

  protected async doSaveTaskResult(
    instanceId: string,
    taskId: string,
    output: Uint8Array,
    fence: Fence | undefined,
  ): Promise<void> {
    const k = (await this.#keys()).instance(instanceId);
    const code = await this.#call("saveTaskResult", "saveTaskResult", [
      k.meta,
      k.ready,
      k.leased,
      instanceId,
      taskId,
      toArg(output),
      fence?.taskId ?? "",
      fence === undefined ? "" : String(fence.token),
    ]);
    const error = refusal(Number(code), { instanceId, taskId, ...(fence === undefined ? {} : { fence }) });
    if (error !== null) throw error;
  }

  protected async doLoadSnapshot(instanceId: string): Promise<WorkflowSnapshot> {
    const k = (await this.#keys()).instance(instanceId);
    const pairs = (await this.#call("loadSnapshot", "loadSnapshot", [k.meta], true)) as Buffer[] | null;
    if (pairs === null) throw failures.snapshotNotFound(instanceId);
    return decodeInstance(pairs, instanceId);
  }

  protected async doDeleteSnapshot(instanceId: string): Promise<void> {
    const k = (await this.#keys()).instance(instanceId);
    const code = await this.#call("deleteSnapshot", "deleteSnapshot", [
      k.meta,
      k.ready,
      k.ids,
      k.floor,
      k.leased,
      k.timers,
      k.events,
      k.eventOrder,
      instanceId,
    ]);
    const error = refusal(Number(code), { instanceId });
    if (error !== null) throw error;
  }

  protected async doLoadTaskResult(instanceId: string, taskId: string): Promise<Uint8Array | null> {
    return loadTaskResult(await this.#shards(), instanceId, taskId);
  }

  protected async doLoadTaskClaims(instanceId: string): Promise<TaskClaim[]> {
    return loadTaskClaims(await this.#shards(), instanceId);
  }

  protected async doPurgeFinished(finishedBefore: number, limit: number): Promise<number> {
    const ctx = await this.#shards();
    await this.#finishIndex(ctx);
    return purgeFinished(ctx, finishedBefore, limit);
  }

  /**
   * The finish-time index migration (retention.ts), before this backend's first purge unless the
   * store record says it is done; recorded done after (field finishIndex of `{P:layout}`).
   */
  #finishIndex(ctx: ShardContext): Promise<void> | undefined {
    if (this.#finishIndexed) return undefined;
    this.#finishIndexing ??= (async () => {
      const record = ctx.layout.record();
      const done = await this.#timed("purgeFinished", this.client.hget(record, RecordField.finishIndex));
      if (done !== "1") {
        await indexFinishedInstances(ctx);
        await this.#timed("purgeFinished", this.client.hset(record, RecordField.finishIndex, "1"));
      }
      this.#finishIndexed = true;
    })().finally(() => {
      this.#finishIndexing = undefined;
    });
    return this.#finishIndexing;
  }

  protected async doListSnapshotsPage(cursor: string | null, limit: number): Promise<SnapshotPage> {
    const layout = await this.#keys();
    let shard = 0;
    let after: string | null = null;
    if (cursor !== null) {
      const decoded = decodeCursor(cursor, layout.shards);
      if (decoded === undefined)
        throw new ValidationError("cursor must be a string returned by listSnapshotsPage");
      shard = decoded.shard;
      after = decoded.after;
    }
    const found: Array<{ shard: number; id: string }> = [];
    for (; shard < layout.shards; shard++, after = null) {
      // One more than needed tells whether another page exists.
      const want = limit - found.length + 1;
      const ids = await this.#timed(
        "listSnapshotsPage",
        this.client.zrangebylex(layout.ids(shard), after === null ? "-" : `(${after}`, "+", "LIMIT", 0, want),
      );
      for (const id of ids) found.push({ shard, id });
      if (found.length > limit) {
        const page = found.slice(0, limit);
        const lastEntry = page[page.length - 1] as { shard: number; id: string };
        return {
          instanceIds: page.map((e) => e.id),
          nextCursor: encodeCursor({ shard: lastEntry.shard, after: lastEntry.id }),
        };
      }
    }
    return { instanceIds: found.map((e) => e.id), nextCursor: null };
  }

  protected async doClaimTask(
    instanceId: string,
    taskId: string,
    workerId: string,
    ttlMs: number | null,
  ): Promise<TaskClaim | null> {
    const k = (await this.#keys()).instance(instanceId);
    const reply = (await this.#call("claimTask", "claimTask", [
      k.meta,
      k.floor,
      k.ready,
      k.leased,
      taskId,
      workerId,
      ttlMs === null ? "" : String(ttlMs),
      instanceId,
      requestId(),
    ])) as [string, string, string] | null;
    if (reply === null) return null;
    return toClaim(instanceId, taskId, workerId, reply[0], reply[1], reply[2]);
  }

  protected async doReleaseTaskClaim(instanceId: string, taskId: string, workerId: string): Promise<void> {
    const k = (await this.#keys()).instance(instanceId);
    const code = await this.#call("releaseClaim", "releaseTaskClaim", [
      k.meta,
      k.ready,
      k.leased,
      taskId,
      workerId,
      instanceId,
    ]);
    const error = refusal(Number(code), { instanceId, taskId });
    if (error !== null) throw error;
  }

  protected async doExtendTaskClaim(
    instanceId: string,
    taskId: string,
    workerId: string,
    durationMs: number,
  ): Promise<RenewedClaim> {
    const k = (await this.#keys()).instance(instanceId);
    const reply = (await this.#call("extendClaim", "extendTaskClaim", [
      k.meta,
      k.ready,
      k.leased,
      taskId,
      workerId,
      String(durationMs),
      instanceId,
    ])) as [number, string?, string?, string?, string?];
    const error = refusal(Number(reply[0]), { instanceId, taskId });
    if (error !== null) throw error;
    return {
      ...toClaim(instanceId, taskId, workerId, reply[1] ?? "", reply[2] ?? "", reply[3] ?? ""),
      workflowPaused: reply[4] === "1",
    };
  }

  protected async doFindAvailableTasks(
    _workerId: string,
    limit: number,
    queues: readonly string[],
  ): Promise<AvailableTask[]> {
    return findAvailableTasks(await this.#shards(), limit, queues);
  }

  protected async doClaimAvailableTasks(
    workerId: string,
    limit: number,
    ttlMs: number | null,
    queues: readonly string[],
  ): Promise<ClaimedTask[]> {
    return claimAvailableTasks(await this.#shards(), workerId, limit, ttlMs, queues);
  }

  protected async doFailTasks(failures: readonly ValidFailure[]): Promise<CompletionOutcome[]> {
    return failTasks(await this.#shards(), failures);
  }

  protected override async doCompleteTasks(
    completions: readonly ValidCompletion[],
  ): Promise<CompletionOutcome[]> {
    return completeTasks(await this.#shards(), completions);
  }

  protected async doCancelWorkflow(instanceId: string, request: Required<ControlRequest>): Promise<void> {
    return changeWorkflow(await this.#shards(), "cancel", instanceId, request);
  }

  protected async doPauseWorkflow(instanceId: string, request: Required<ControlRequest>): Promise<void> {
    return changeWorkflow(await this.#shards(), "pause", instanceId, request);
  }

  protected async doResumeWorkflow(instanceId: string): Promise<void> {
    return changeWorkflow(await this.#shards(), "resume", instanceId, { reason: null, requestedBy: null });
  }

  protected async doSendEvent(instanceId: string, eventName: string, payload: Uint8Array): Promise<number> {
    return sendEvent(await this.#shards(), instanceId, eventName, payload);
  }

  protected async doLoadPendingEvents(instanceId: string): Promise<PendingEvent[]> {
    return loadPendingEvents(await this.#shards(), instanceId);
  }

  protected override async doProbeWakeUp(queues: readonly string[]): Promise<WakeProbe> {
    return probeWakeUp(await this.#shards(), queues);
  }

  /** One subscriber connection of this instance's own (see wake-ups.ts); never the client itself. */
  protected override async doListenForWakeUps(
    notify: (queue: string | null, readyNow?: boolean) => void,
  ): Promise<() => Promise<void>> {
    // The layout read first: the client is connected (a cluster knows its masters) by then.
    const { layout } = await this.#shards();
    const listener = await listenForWakeUps({
      client: this.client,
      channel: layout.wakeChannel(),
      connectionName: wakeConnectionName(layout.prefix),
      timeoutMs: this.#timeoutMs,
      notify,
    });
    return () => listener.stop();
  }

  protected async doClose(): Promise<void> {
    if (!this.#owned) return;
    const client = this.client;
    const ended = new Promise<void>((resolve) => {
      if (client.status === "end") resolve();
      else client.once("end", () => resolve());
    });
    try {
      await this.#timed("close", client.quit());
    } catch {
      // Redis unreachable: drop the connection without waiting for it.
    }
    client.disconnect();
    await this.#timed("close", ended).catch(() => {});
  }
}

/** The name of a backend's subscriber connection on the server (no spaces: CLIENT SETNAME's rule). */
export const wakeConnectionName = (keyPrefix: string): string =>
  `sayiir-wake:${encodeURIComponent(keyPrefix)}`;
