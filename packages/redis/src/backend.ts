import {
  type AvailableTask,
  BackendError,
  BaseBackend,
  type ClaimedTask,
  ClaimLostError,
  type CompletionOutcome,
  ConflictError,
  decodeSnapshotHeader,
  encodeSnapshotHeader,
  type Fence,
  failures,
  type SnapshotPage,
  type TaskClaim,
  type TaskResult,
  ValidationError,
  type ValidCompletion,
  type WorkflowSnapshot,
} from "@sayiir/persistence-core";
import type { Cluster, Redis } from "ioredis";
import { decodeCursor, encodeCursor, FieldPrefix, KeyLayout, MetaField } from "./layout.js";
import {
  DEFAULT_CLUSTER_SHARDS,
  DEFAULT_STANDALONE_SHARDS,
  MAX_SHARDS,
  normalizeOptions,
  type RedisBackendOptions,
} from "./options.js";
import {
  byAge,
  bytes,
  decodeClaimed,
  groupByShard,
  requestId,
  type Scored,
  str,
  toArg,
  toClaim,
} from "./replies.js";
import { defineScripts, type ScriptClient, Status } from "./scripts.js";

const quote = JSON.stringify;

interface Candidate extends Scored {
  shard: number;
  taskId: string;
}

/** Shard count of stores written before the layout record existed, when no count was given. */
const LEGACY_DEFAULT_SHARDS = 16;

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
  readonly #scripts: ScriptClient;
  /** Cluster: scripts of one shard each. Standalone: one script may cover every shard. */
  readonly #cluster: boolean;
  /** The shard count given in the options, if any. */
  readonly #wantedShards: number | undefined;
  #layout: KeyLayout;
  /** Every shard number as a script argument. */
  #shardArgs: string[];
  /** True once the shard count is checked against the store's layout record. */
  #layoutKnown = false;
  #layoutLoading: Promise<KeyLayout> | undefined;

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
    this.#layout = new KeyLayout(normalized.keyPrefix, shards);
    this.#shardArgs = this.#layout.allShards().map(String);
    this.#scripts = defineScripts(this.client);
    if (this.#owned) {
      // Connection errors surface through the commands that fail; keep them off the process's
      // unhandled 'error' event.
      this.client.on("error", () => {});
    }
  }

  /**
   * The key layout. Its shard count is the one of the options (or the default) until the first
   * operation has read the store's layout record, the store's own count from then on.
   */
  get layout(): KeyLayout {
    return this.#layout;
  }

  protected override secrets(): readonly string[] {
    return this.#secrets;
  }

  /** The layout, checked against the store's record once (the first operation pays one round trip). */
  #keys(): KeyLayout | Promise<KeyLayout> {
    if (this.#layoutKnown) return this.#layout;
    this.#layoutLoading ??= this.#loadLayout().finally(() => {
      this.#layoutLoading = undefined;
    });
    return this.#layoutLoading;
  }

  async #loadLayout(): Promise<KeyLayout> {
    const current = this.#layout;
    // A standalone store written before the record existed, without a shards option, used 16
    // shards: any data in shards 1..15 says so (with one shard it would all be in shard 0).
    const probes =
      this.#wantedShards === undefined && !this.#cluster && current.shards !== LEGACY_DEFAULT_SHARDS
        ? Array.from({ length: LEGACY_DEFAULT_SHARDS - 1 }, (_, i) => current.ids(i + 1))
        : [];
    const reply = await this.#timed(
      "reading the layout record",
      this.#scripts.sayiirLayout(
        current.record(),
        this.#wantedShards === undefined ? "" : String(this.#wantedShards),
        String(current.shards),
        String(LEGACY_DEFAULT_SHARDS),
        ...probes,
      ),
    );
    const stored = Number(reply);
    if (!Number.isSafeInteger(stored) || stored < 1 || stored > MAX_SHARDS) {
      throw new BackendError(`the layout record ${quote(current.record())} holds ${quote(String(reply))}`);
    }
    if (this.#wantedShards !== undefined && stored !== this.#wantedShards) {
      throw new ValidationError(
        `the store under key prefix ${quote(current.prefix)} has ${stored} shards (recorded in ` +
          `${quote(current.record())}); the shards option says ${this.#wantedShards}`,
      );
    }
    if (stored !== current.shards) {
      this.#layout = new KeyLayout(current.prefix, stored);
      this.#shardArgs = this.#layout.allShards().map(String);
    }
    this.#layoutKnown = true;
    return this.#layout;
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

  /** How long a request record (claim-next, completion) stays: longer than any wait for its reply. */
  #recordTtl(): string {
    return String(Math.max(60_000, 2 * this.#timeoutMs));
  }

  #statusError(status: number, instanceId: string, taskId?: string): Error | undefined {
    const task = taskId === undefined ? "" : ` task ${quote(taskId)} of`;
    switch (status) {
      case Status.ok:
        return undefined;
      case Status.claimLost:
        return new ClaimLostError(
          `the fencing claim on${task} ${quote(instanceId)} is no longer the live one`,
        );
      case Status.conflict:
        return new ConflictError(
          `workflow ${quote(instanceId)} is finished; it cannot go back to InProgress or take results`,
        );
      case Status.notFound:
        return failures.snapshotNotFound(instanceId);
      default:
        return new BackendError(`unexpected script status ${status} for ${quote(instanceId)}`);
    }
  }

  protected async doSaveSnapshot(snapshot: WorkflowSnapshot, fence: Fence | undefined): Promise<void> {
    const id = snapshot.instanceId;
    const k = (await this.#keys()).instance(id);
    const state = snapshot.state;
    const position =
      state.kind === "InProgress" && state.position.kind === "AtTask" ? state.position.taskId : null;
    const last = state.kind === "InProgress" ? state.lastCompletedTaskId : null;
    const args: Array<string | Uint8Array> = [
      id,
      encodeSnapshotHeader(snapshot),
      state.kind === "InProgress" ? "0" : "1",
      snapshot.definitionHash,
      position === null ? "0" : "1",
      position ?? "",
      last === null ? "0" : "1",
      last ?? "",
      String(snapshot.updatedAt),
      snapshot.initialInput === undefined ? "0" : "1",
      snapshot.initialInput ?? "",
      fence?.taskId ?? "",
      fence === undefined ? "" : String(fence.token),
    ];
    if (state.kind === "InProgress") {
      for (const result of Object.values(state.completedTasks)) {
        args.push(`${FieldPrefix.result}${result.taskId}`, result.output);
      }
    }
    const status = await this.#timed(
      "saveSnapshot",
      this.#scripts.sayiirSaveSnapshot(k.meta, k.ready, k.ids, k.leased, ...args.map(toArg)),
    );
    const error = this.#statusError(Number(status), id, fence?.taskId);
    if (error) throw error;
  }

  protected async doSaveTaskResult(
    instanceId: string,
    taskId: string,
    output: Uint8Array,
    fence: Fence | undefined,
  ): Promise<void> {
    const k = (await this.#keys()).instance(instanceId);
    const status = await this.#timed(
      "saveTaskResult",
      this.#scripts.sayiirSaveTaskResult(
        k.meta,
        k.ready,
        k.leased,
        instanceId,
        taskId,
        toArg(output),
        fence?.taskId ?? "",
        fence === undefined ? "" : String(fence.token),
      ),
    );
    const error = this.#statusError(Number(status), instanceId, fence?.taskId);
    if (error) throw error;
  }

  protected async doLoadSnapshot(instanceId: string): Promise<WorkflowSnapshot> {
    const k = (await this.#keys()).instance(instanceId);
    const pairs = (await this.#timed("loadSnapshot", this.#scripts.sayiirLoadSnapshotBuffer(k.meta))) as
      | Buffer[]
      | null;
    if (pairs === null) throw failures.snapshotNotFound(instanceId);
    const meta = new Map<string, Buffer>();
    const results: TaskResult[] = [];
    for (let i = 0; i + 1 < pairs.length; i += 2) {
      const field = str(pairs[i] as Buffer);
      const value = pairs[i + 1] as Buffer;
      if (field.startsWith(FieldPrefix.result)) {
        results.push({ taskId: field.slice(FieldPrefix.result.length), output: bytes(value) });
      } else if (!field.startsWith(FieldPrefix.claim)) {
        meta.set(field, value);
      }
    }
    const header = meta.get(MetaField.header);
    const last = meta.get(MetaField.lastCompletedTaskId);
    const updatedAt = Number(str(meta.get(MetaField.updatedAt) ?? ""));
    return decodeSnapshotHeader(header === undefined ? new Uint8Array(0) : bytes(header), instanceId, {
      results,
      lastCompletedTaskId: last === undefined ? null : str(last),
      ...(Number.isSafeInteger(updatedAt) && updatedAt >= 0 ? { updatedAt } : {}),
    });
  }

  protected async doDeleteSnapshot(instanceId: string): Promise<void> {
    const k = (await this.#keys()).instance(instanceId);
    const status = await this.#timed(
      "deleteSnapshot",
      this.#scripts.sayiirDeleteSnapshot(k.meta, k.ready, k.ids, k.floor, k.leased, instanceId),
    );
    const error = this.#statusError(Number(status), instanceId);
    if (error) throw error;
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
    const reply = (await this.#timed(
      "claimTask",
      this.#scripts.sayiirClaimTask(
        k.meta,
        k.floor,
        k.ready,
        k.leased,
        taskId,
        workerId,
        ttlMs === null ? "" : String(ttlMs),
        instanceId,
        requestId(),
      ),
    )) as [string, string, string] | null;
    if (reply === null) return null;
    return toClaim(instanceId, taskId, workerId, reply[0], reply[1], reply[2]);
  }

  protected async doReleaseTaskClaim(instanceId: string, taskId: string, workerId: string): Promise<void> {
    const k = (await this.#keys()).instance(instanceId);
    const status = Number(
      await this.#timed(
        "releaseTaskClaim",
        this.#scripts.sayiirReleaseClaim(k.meta, k.ready, k.leased, taskId, workerId, instanceId),
      ),
    );
    if (status === Status.notFound) throw failures.claimNotFound(instanceId, taskId);
    if (status === Status.claimLost) {
      throw failures.claimedByOther(instanceId, taskId);
    }
  }

  protected async doExtendTaskClaim(
    instanceId: string,
    taskId: string,
    workerId: string,
    durationMs: number,
  ): Promise<TaskClaim> {
    const k = (await this.#keys()).instance(instanceId);
    const reply = (await this.#timed(
      "extendTaskClaim",
      this.#scripts.sayiirExtendClaim(
        k.meta,
        k.ready,
        k.leased,
        taskId,
        workerId,
        String(durationMs),
        instanceId,
      ),
    )) as [number, string?, string?, string?];
    const status = Number(reply[0]);
    if (status === Status.notFound) throw failures.claimNotFound(instanceId, taskId);
    if (status === Status.claimLost) {
      throw failures.claimedByOther(instanceId, taskId);
    }
    if (status === Status.expired) {
      throw failures.claimExpired(instanceId, taskId);
    }
    return toClaim(instanceId, taskId, workerId, reply[1] ?? "", reply[2] ?? "", reply[3] ?? "");
  }

  /**
   * The oldest `limit` entries of each shard's ready set (one script per shard: a cluster), merged:
   * the exact global oldest first. `checked`: only tasks that are ready and unclaimed, with their
   * task ids (discovery); otherwise the entries as they are (claim-next: its claim scripts check).
   */
  async #peekShards(
    layout: KeyLayout,
    operation: string,
    limit: number,
    checked: boolean,
  ): Promise<Candidate[]> {
    const width = checked ? 3 : 2;
    const perShard = await Promise.all(
      layout.allShards().map(async (shard) => {
        const flat = (await this.#timed(
          operation,
          this.#scripts.sayiirPeek(
            layout.ready(shard),
            layout.tagStart(),
            String(limit),
            checked ? "1" : "0",
            String(shard),
          ),
        )) as string[];
        const out: Candidate[] = [];
        for (let i = 0; i + width - 1 < flat.length; i += width) {
          out.push({
            shard,
            instanceId: flat[i] as string,
            taskId: checked ? (flat[i + 1] as string) : "",
            score: Number(flat[i + width - 1]),
          });
        }
        return out;
      }),
    );
    return perShard.flat().sort(byAge).slice(0, limit);
  }

  /** One script over every shard: a standalone server (no slot rule) or a single shard. */
  #oneScript(layout: KeyLayout): boolean {
    return !this.#cluster || layout.shards === 1;
  }

  protected async doFindAvailableTasks(_workerId: string, limit: number): Promise<AvailableTask[]> {
    const layout = await this.#keys();
    if (this.#oneScript(layout)) {
      const flat = (await this.#timed(
        "findAvailableTasks",
        this.#scripts.sayiirPeekBuffer(
          layout.ready(0),
          layout.tagStart(),
          String(limit),
          "2",
          ...this.#shardArgs,
        ),
      )) as Buffer[];
      const found: AvailableTask[] = [];
      for (let i = 0; i + 4 < flat.length; i += 5) {
        found.push({
          instanceId: str(flat[i] as Buffer),
          taskId: str(flat[i + 1] as Buffer),
          workflowDefinitionHash: str(flat[i + 3] as Buffer),
          input: bytes(flat[i + 4] as Buffer),
        });
      }
      return found;
    }
    const chosen = await this.#peekShards(layout, "findAvailableTasks", limit, true);
    if (chosen.length === 0) return [];
    // Inputs only for the chosen ones (they can be MiBs each); a task that stopped being ready
    // between the two steps is left out.
    const found = new Map<string, AvailableTask>();
    await Promise.all(
      [...groupByShard(chosen)].map(async ([shard, group]) => {
        const flat = (await this.#timed(
          "findAvailableTasks",
          this.#scripts.sayiirShardInputsBuffer(
            layout.ready(shard),
            layout.base(shard),
            ...group.map((c) => c.instanceId),
          ),
        )) as Buffer[];
        for (let i = 0; i + 3 < flat.length; i += 4) {
          const instanceId = str(flat[i] as Buffer);
          found.set(instanceId, {
            instanceId,
            taskId: str(flat[i + 1] as Buffer),
            input: bytes(flat[i + 3] as Buffer),
            workflowDefinitionHash: str(flat[i + 2] as Buffer),
          });
        }
      }),
    );
    return chosen.flatMap((c) => found.get(c.instanceId) ?? []);
  }

  protected async doClaimAvailableTasks(
    workerId: string,
    limit: number,
    ttlMs: number | null,
  ): Promise<ClaimedTask[]> {
    const layout = await this.#keys();
    if (this.#oneScript(layout)) {
      // One atomic script over every shard: it takes the global oldest at that instant, so there
      // is no race to lose and nothing to merge.
      const claimed = await this.#claimNext(layout, this.#shardArgs, limit, workerId, ttlMs);
      return claimed.map(({ score: _score, ...task }) => task);
    }
    const claimed: Array<ClaimedTask & Scored> = [];
    // A cluster: each round picks the globally oldest candidates (a peek per shard), then claims
    // as many in each of their shards atomically (the shard script takes the oldest unclaimed
    // ones at that instant). A round that loses every race to other workers is retried a few
    // times. Claims that landed are always returned: a failure (of a shard, or of a later round)
    // is thrown only when nothing was claimed, since a claim the caller never hears of is held
    // until it expires (forever without ttl).
    for (let round = 0; round < 8 && claimed.length < limit; round++) {
      let candidates: Candidate[];
      try {
        candidates = await this.#peekShards(layout, "claimAvailableTasks", limit - claimed.length, false);
      } catch (error) {
        if (claimed.length > 0) break;
        throw error;
      }
      if (candidates.length === 0) break;
      const settled = await Promise.allSettled(
        [...groupByShard(candidates)].map(([shard, group]) =>
          this.#claimNext(layout, [String(shard)], group.length, workerId, ttlMs),
        ),
      );
      let failure: { reason: unknown } | undefined;
      for (const outcome of settled) {
        if (outcome.status === "fulfilled") claimed.push(...outcome.value);
        else failure ??= outcome;
      }
      if (failure !== undefined) {
        if (claimed.length > 0) break;
        throw failure.reason;
      }
    }
    return claimed.sort(byAge).map(({ score: _score, ...task }) => task);
  }

  /** One claim-next script call over `shards` (one slot on a cluster): claims up to `count` of their oldest. */
  async #claimNext(
    layout: KeyLayout,
    shards: readonly string[],
    count: number,
    workerId: string,
    ttlMs: number | null,
  ): Promise<Array<ClaimedTask & Scored>> {
    const req = requestId();
    const flat = (await this.#timed(
      "claimAvailableTasks",
      this.#scripts.sayiirClaimNextBuffer(
        `${layout.tagStart()}${shards[0]}}:q:${req}`,
        layout.tagStart(),
        String(count),
        workerId,
        ttlMs === null ? "" : String(ttlMs),
        req,
        this.#recordTtl(),
        ...shards,
      ),
    )) as Buffer[];
    return decodeClaimed(flat, workerId);
  }

  /**
   * One script per call on a standalone server; on a cluster one script per shard the batch
   * touches, sent together. Each completion is one atomic step inside its script.
   */
  protected override async doCompleteTasks(
    completions: readonly ValidCompletion[],
  ): Promise<CompletionOutcome[]> {
    const layout = await this.#keys();
    const items = completions.map((c, index) => ({ c, index, shard: layout.shardOf(c.instanceId) }));
    const outcomes: CompletionOutcome[] = new Array(completions.length).fill(null);
    if (this.#oneScript(layout)) {
      await this.#completeGroup(layout, items, outcomes);
      return outcomes;
    }
    const groups = [...groupByShard(items).values()];
    const settled = await Promise.allSettled(
      groups.map((group) => this.#completeGroup(layout, group, outcomes)),
    );
    // Every script has answered (or failed) before the call does: nothing is still in flight
    // when a caller hears of a failure.
    for (const outcome of settled) if (outcome.status === "rejected") throw outcome.reason;
    return outcomes;
  }

  async #completeGroup(
    layout: KeyLayout,
    group: ReadonlyArray<{ c: ValidCompletion; index: number; shard: number }>,
    outcomes: CompletionOutcome[],
  ): Promise<void> {
    const first = group[0] as { shard: number };
    // The small fields travel as one JSON argument (each argument costs the driver and the
    // server), the outputs as bytes.
    const fields: string[] = [];
    const outputs: Buffer[] = [];
    for (const { c, shard } of group) {
      fields.push(String(shard), c.instanceId, c.taskId, String(c.token));
      outputs.push(toArg(c.output) as Buffer);
    }
    const reply = str(
      (await this.#timed(
        "completeTasks",
        this.#scripts.sayiirCompleteTasks(
          layout.ready(first.shard),
          layout.tagStart(),
          requestId(),
          JSON.stringify(fields),
          ...outputs,
        ),
      )) as string,
    );
    if (reply.length !== group.length) {
      throw new BackendError(
        `completeTasks: the script answered ${reply.length} statuses for ${group.length}`,
      );
    }
    for (const [i, { c, index }] of group.entries()) {
      const status = reply.charCodeAt(i) - 48;
      if (status === Status.ok) continue;
      if (status === Status.claimLost) {
        outcomes[index] = failures.fenceRejected(c.instanceId, { taskId: c.taskId, token: c.token });
      } else if (status === Status.conflict) {
        outcomes[index] = failures.resultsFinal(c.instanceId);
      } else if (status === Status.notFound) {
        outcomes[index] = failures.snapshotNotFound(c.instanceId);
      } else {
        throw new BackendError(`completeTasks: unexpected status ${quote(reply[i] ?? "")}`);
      }
    }
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
