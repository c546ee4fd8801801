import { randomBytes } from "node:crypto";
import {
  type AvailableTask,
  BackendError,
  BaseBackend,
  type ClaimedTask,
  ClaimLostError,
  ConflictError,
  compareIds,
  decodeSnapshotHeader,
  encodeSnapshotHeader,
  type Fence,
  failures,
  type SnapshotPage,
  type TaskClaim,
  type TaskResult,
  ValidationError,
  type WorkflowSnapshot,
} from "@sayiir/persistence-core";
import type { Cluster, Redis } from "ioredis";
import { decodeCursor, encodeCursor, KeyLayout, MetaField } from "./layout.js";
import { normalizeOptions, type RedisBackendOptions } from "./options.js";
import { defineScripts, type ScriptClient, Status } from "./scripts.js";

/**
 * A driver Buffer as a plain Uint8Array: a view when the Buffer has its memory mostly to itself,
 * a copy when it is a small slice of a larger read buffer (so it does not keep that alive).
 */
function bytes(buf: Buffer): Uint8Array {
  if (buf.buffer.byteLength > 2 * buf.byteLength + 1024) return new Uint8Array(buf);
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
}
const str = (value: Buffer | string | number): string => (typeof value === "string" ? value : String(value));
const quote = JSON.stringify;

interface Candidate {
  shard: number;
  instanceId: string;
  taskId: string;
  score: number;
}

/**
 * Oldest updatedAt first, ties by instance id in code point (UTF-8 byte) order: the order ZRANGE
 * gives within a shard, so the merge across shards agrees with it.
 */
function byAge(a: { score: number; instanceId: string }, b: { score: number; instanceId: string }): number {
  if (a.score !== b.score) return a.score - b.score;
  return compareIds(a.instanceId, b.instanceId);
}

/**
 * A fresh id for one claim call, stored in the claims it makes: a script that runs a second time
 * for the same call (its first reply lost, the command sent again) returns those claims.
 */
function requestId(): string {
  return randomBytes(12).toString("hex");
}

function groupByShard<T extends { shard: number }>(items: T[]): Map<number, T[]> {
  const groups = new Map<number, T[]>();
  for (const item of items) {
    const group = groups.get(item.shard);
    if (group === undefined) groups.set(item.shard, [item]);
    else group.push(item);
  }
  return groups;
}

function toClaim(
  instanceId: string,
  taskId: string,
  workerId: string,
  token: Buffer | string,
  at: Buffer | string,
  exp: Buffer | string,
): TaskClaim {
  const expires = str(exp);
  return {
    instanceId,
    taskId,
    workerId,
    claimedAt: Number(str(at)),
    expiresAt: expires === "" ? null : Number(expires),
    token: Number(str(token)),
  };
}

/**
 * Persistence backend over Redis (standalone or Cluster) through ioredis. Every state change is
 * one Lua script on the keys of one slot; claim expiry is judged by Redis's own clock.
 */
export class RedisBackend extends BaseBackend {
  /** The ioredis client in use (owned by the backend unless it was passed in as `client`). */
  readonly client: Redis | Cluster;
  readonly layout: KeyLayout;
  readonly #owned: boolean;
  readonly #secrets: string[];
  readonly #timeoutMs: number;
  readonly #scripts: ScriptClient;

  constructor(options: RedisBackendOptions) {
    super(options);
    const normalized = normalizeOptions(options ?? {});
    this.client = normalized.client;
    this.#owned = normalized.owned;
    this.#secrets = normalized.secrets;
    this.#timeoutMs = normalized.operationTimeoutMs;
    this.layout = new KeyLayout(normalized.keyPrefix, normalized.shards);
    this.#scripts = defineScripts(this.client);
    if (this.#owned) {
      // Connection errors surface through the commands that fail; keep them off the process's
      // unhandled 'error' event.
      this.client.on("error", () => {});
    }
  }

  protected override secrets(): readonly string[] {
    return this.#secrets;
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
    const k = this.layout.instance(id);
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
      for (const result of Object.values(state.completedTasks)) args.push(result.taskId, result.output);
    }
    const status = await this.#timed(
      "saveSnapshot",
      this.#scripts.sayiirSaveSnapshot(
        k.meta,
        k.results,
        k.claims,
        k.ready,
        k.ids,
        k.leased,
        ...args.map(toArg),
      ),
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
    const k = this.layout.instance(instanceId);
    const status = await this.#timed(
      "saveTaskResult",
      this.#scripts.sayiirSaveTaskResult(
        k.meta,
        k.results,
        k.claims,
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
    const k = this.layout.instance(instanceId);
    const reply = (await this.#timed(
      "loadSnapshot",
      this.#scripts.sayiirLoadSnapshotBuffer(k.meta, k.results),
    )) as [Buffer[], Buffer[]] | null;
    if (reply === null) throw failures.snapshotNotFound(instanceId);
    const [metaPairs, resultPairs] = reply;
    const meta = new Map<string, Buffer>();
    for (let i = 0; i + 1 < metaPairs.length; i += 2)
      meta.set(str(metaPairs[i] as Buffer), metaPairs[i + 1] as Buffer);
    const results: TaskResult[] = [];
    for (let i = 0; i + 1 < resultPairs.length; i += 2) {
      results.push({ taskId: str(resultPairs[i] as Buffer), output: bytes(resultPairs[i + 1] as Buffer) });
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
    const k = this.layout.instance(instanceId);
    const status = await this.#timed(
      "deleteSnapshot",
      this.#scripts.sayiirDeleteSnapshot(
        k.meta,
        k.results,
        k.claims,
        k.counters,
        k.ready,
        k.ids,
        k.floor,
        k.leased,
        instanceId,
      ),
    );
    const error = this.#statusError(Number(status), instanceId);
    if (error) throw error;
  }

  protected async doListSnapshotsPage(cursor: string | null, limit: number): Promise<SnapshotPage> {
    let shard = 0;
    let after: string | null = null;
    if (cursor !== null) {
      const decoded = decodeCursor(cursor, this.layout.shards);
      if (decoded === undefined)
        throw new ValidationError("cursor must be a string returned by listSnapshotsPage");
      shard = decoded.shard;
      after = decoded.after;
    }
    const found: Array<{ shard: number; id: string }> = [];
    for (; shard < this.layout.shards; shard++, after = null) {
      // One more than needed tells whether another page exists.
      const want = limit - found.length + 1;
      const ids = await this.#timed(
        "listSnapshotsPage",
        this.client.zrangebylex(
          this.layout.ids(shard),
          after === null ? "-" : `(${after}`,
          "+",
          "LIMIT",
          0,
          want,
        ),
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
    const k = this.layout.instance(instanceId);
    const reply = (await this.#timed(
      "claimTask",
      this.#scripts.sayiirClaimTask(
        k.claims,
        k.counters,
        k.floor,
        k.meta,
        k.results,
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
    const k = this.layout.instance(instanceId);
    const status = Number(
      await this.#timed(
        "releaseTaskClaim",
        this.#scripts.sayiirReleaseClaim(
          k.claims,
          k.meta,
          k.results,
          k.ready,
          k.leased,
          taskId,
          workerId,
          instanceId,
        ),
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
    const k = this.layout.instance(instanceId);
    const reply = (await this.#timed(
      "extendTaskClaim",
      this.#scripts.sayiirExtendClaim(
        k.claims,
        k.meta,
        k.results,
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

  /** The oldest `limit` unclaimed ready tasks of every shard, merged: the exact global oldest first. */
  async #peek(operation: string, limit: number): Promise<Candidate[]> {
    const perShard = await Promise.all(
      this.layout.allShards().map(async (shard) => {
        const flat = (await this.#timed(
          operation,
          this.#scripts.sayiirPeekShard(
            this.layout.ready(shard),
            this.layout.leased(shard),
            this.layout.base(shard),
            String(limit),
          ),
        )) as string[];
        const out: Candidate[] = [];
        for (let i = 0; i + 2 < flat.length; i += 3) {
          out.push({
            shard,
            instanceId: flat[i] as string,
            taskId: flat[i + 1] as string,
            score: Number(flat[i + 2]),
          });
        }
        return out;
      }),
    );
    return perShard.flat().sort(byAge).slice(0, limit);
  }

  protected async doFindAvailableTasks(_workerId: string, limit: number): Promise<AvailableTask[]> {
    const chosen = await this.#peek("findAvailableTasks", limit);
    if (chosen.length === 0) return [];
    // Inputs only for the chosen ones (they can be MiBs each); a task that stopped being ready
    // between the two steps is left out.
    const found = new Map<string, AvailableTask>();
    await Promise.all(
      [...groupByShard(chosen)].map(async ([shard, group]) => {
        const flat = (await this.#timed(
          "findAvailableTasks",
          this.#scripts.sayiirShardInputsBuffer(
            this.layout.ready(shard),
            this.layout.base(shard),
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
    const claimed: Array<ClaimedTask & { score: number }> = [];
    // Each round picks the globally oldest candidates, then claims as many in each of their
    // shards atomically (the shard script takes the oldest unclaimed ones at that instant). A
    // round that loses every race to other workers is retried a few times. Claims that landed
    // are always returned: a failure (of a shard, or of a later round) is thrown only when
    // nothing was claimed, since a claim the caller never hears of is held until it expires
    // (forever without ttl).
    for (let round = 0; round < 8 && claimed.length < limit; round++) {
      let candidates: Candidate[];
      try {
        candidates = await this.#peek("claimAvailableTasks", limit - claimed.length);
      } catch (error) {
        if (claimed.length > 0) break;
        throw error;
      }
      if (candidates.length === 0) break;
      const settled = await Promise.allSettled(
        [...groupByShard(candidates)].map(([shard, group]) =>
          this.#claimShard(shard, group.length, workerId, ttlMs),
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

  /** One claim-shard script call: claims up to `count` of the shard's oldest unclaimed ready tasks. */
  async #claimShard(
    shard: number,
    count: number,
    workerId: string,
    ttlMs: number | null,
  ): Promise<Array<ClaimedTask & { score: number }>> {
    const flat = (await this.#timed(
      "claimAvailableTasks",
      this.#scripts.sayiirClaimShardBuffer(
        this.layout.ready(shard),
        this.layout.leased(shard),
        this.layout.floor(shard),
        this.layout.base(shard),
        String(count),
        workerId,
        ttlMs === null ? "" : String(ttlMs),
        requestId(),
        String(Math.max(60_000, 2 * this.#timeoutMs)),
      ),
    )) as Buffer[];
    const out: Array<ClaimedTask & { score: number }> = [];
    for (let i = 0; i + 7 < flat.length; i += 8) {
      const instanceId = str(flat[i] as Buffer);
      const taskId = str(flat[i + 1] as Buffer);
      out.push({
        instanceId,
        taskId,
        score: Number(str(flat[i + 2] as Buffer)),
        workflowDefinitionHash: str(flat[i + 3] as Buffer),
        input: bytes(flat[i + 4] as Buffer),
        claim: toClaim(
          instanceId,
          taskId,
          workerId,
          flat[i + 5] as Buffer,
          flat[i + 6] as Buffer,
          flat[i + 7] as Buffer,
        ),
      });
    }
    return out;
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

function toArg(value: string | Uint8Array): string | Buffer {
  if (typeof value === "string") return value;
  return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
}
