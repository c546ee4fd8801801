import {
  type AvailableTask,
  assertClaimHolder,
  BaseBackend,
  type BaseBackendOptions,
  type ClaimedTask,
  type CompletionOutcome,
  decodeSnapshotHeader,
  EMPTY_BYTES,
  encodeSnapshotHeader,
  type Fence,
  failures,
  isClaimLive,
  isPersistenceError,
  type SnapshotPage,
  type TaskClaim,
  type ValidCompletion,
  type WorkflowSnapshot,
} from "@sayiir/persistence-core";
import { MemoryStore, type StoredInstance } from "./store.js";

export interface InMemoryBackendOptions extends BaseBackendOptions {
  /** Share state with other backends (as several clients of one database would). */
  store?: MemoryStore;
  /** Milliseconds clock that judges claim expiry; Date.now by default. */
  clock?: () => number;
}

const copy = (bytes: Uint8Array): Uint8Array => new Uint8Array(bytes);

/**
 * The reference backend: everything in process memory, nothing durable. Each operation runs
 * synchronously between two awaits, which is what makes it atomic in one JavaScript thread.
 */
export class InMemoryBackend extends BaseBackend {
  readonly store: MemoryStore;

  constructor(options: InMemoryBackendOptions = {}) {
    super(options);
    this.store = options.store ?? new MemoryStore(options.clock);
  }

  /** Another backend over the same store. */
  connect(options: BaseBackendOptions = {}): InMemoryBackend {
    return new InMemoryBackend({
      ...options,
      maxPayloadBytes: options.maxPayloadBytes ?? this.maxPayloadBytes,
      store: this.store,
    });
  }

  #now(): number {
    return this.store.clock();
  }

  #liveClaim(instanceId: string, taskId: string): TaskClaim | undefined {
    const claim = this.store.claims.get(instanceId)?.get(taskId);
    return claim !== undefined && isClaimLive(claim, this.#now()) ? claim : undefined;
  }

  #checkFence(instanceId: string, fence: Fence | undefined): void {
    if (fence === undefined) return;
    const live = this.#liveClaim(instanceId, fence.taskId);
    if (live === undefined || live.token !== fence.token) {
      throw failures.fenceRejected(instanceId, fence);
    }
  }

  #reindex(instanceId: string, stored: StoredInstance): void {
    const taskId = stored.positionTaskId;
    if (!stored.finished && taskId !== null && !stored.results.has(taskId)) {
      this.store.ready.set({ instanceId, taskId, updatedAt: stored.updatedAt });
    } else {
      this.store.ready.remove(instanceId);
    }
  }

  #input(stored: StoredInstance): Uint8Array {
    const last =
      stored.lastCompletedTaskId === null ? undefined : stored.results.get(stored.lastCompletedTaskId);
    return copy(last ?? stored.initialInput ?? EMPTY_BYTES);
  }

  protected async doSaveSnapshot(snapshot: WorkflowSnapshot, fence: Fence | undefined): Promise<void> {
    const id = snapshot.instanceId;
    this.#checkFence(id, fence);
    const existing = this.store.instances.get(id);
    if (existing?.finished && snapshot.state.kind === "InProgress") {
      throw failures.cannotReopen(id);
    }
    const state = snapshot.state;
    const stored: StoredInstance = {
      header: encodeSnapshotHeader(snapshot),
      finished: state.kind !== "InProgress",
      definitionHash: snapshot.definitionHash,
      initialInput: snapshot.initialInput === undefined ? undefined : copy(snapshot.initialInput),
      positionTaskId:
        state.kind === "InProgress" && state.position.kind === "AtTask" ? state.position.taskId : null,
      results: new Map(
        state.kind === "InProgress"
          ? Object.values(state.completedTasks).map((r) => [r.taskId, copy(r.output)])
          : [],
      ),
      lastCompletedTaskId: state.kind === "InProgress" ? state.lastCompletedTaskId : null,
      updatedAt: snapshot.updatedAt,
    };
    if (existing === undefined) this.store.idsChanged();
    this.store.instances.set(id, stored);
    this.#reindex(id, stored);
  }

  protected async doSaveTaskResult(
    instanceId: string,
    taskId: string,
    output: Uint8Array,
    fence: Fence | undefined,
  ): Promise<void> {
    this.#saveTaskResult(instanceId, taskId, output, fence);
  }

  // Each completion runs without an await in between, so its write and its release are one step.
  protected override async doCompleteTasks(
    completions: readonly ValidCompletion[],
  ): Promise<CompletionOutcome[]> {
    return completions.map((c) => {
      try {
        this.#saveTaskResult(c.instanceId, c.taskId, c.output, c);
      } catch (error) {
        if (isPersistenceError(error)) return error;
        throw error;
      }
      const tasks = this.store.claims.get(c.instanceId);
      tasks?.delete(c.taskId);
      if (tasks?.size === 0) this.store.claims.delete(c.instanceId);
      return null;
    });
  }

  #saveTaskResult(instanceId: string, taskId: string, output: Uint8Array, fence: Fence | undefined): void {
    const stored = this.store.instances.get(instanceId);
    if (stored === undefined) throw failures.snapshotNotFound(instanceId);
    this.#checkFence(instanceId, fence);
    if (stored.finished) {
      throw failures.resultsFinal(instanceId);
    }
    stored.results.set(taskId, copy(output));
    stored.lastCompletedTaskId = taskId;
    stored.updatedAt = Math.max(stored.updatedAt, this.#now());
    this.#reindex(instanceId, stored);
  }

  protected async doLoadSnapshot(instanceId: string): Promise<WorkflowSnapshot> {
    const stored = this.store.instances.get(instanceId);
    if (stored === undefined) throw failures.snapshotNotFound(instanceId);
    // The header is copied so that the caller mutating the loaded bytes can't reach the store.
    return decodeSnapshotHeader(copy(stored.header), instanceId, {
      results: [...stored.results].map(([taskId, output]) => ({ taskId, output: copy(output) })),
      lastCompletedTaskId: stored.lastCompletedTaskId,
      updatedAt: stored.updatedAt,
    });
  }

  protected async doDeleteSnapshot(instanceId: string): Promise<void> {
    if (!this.store.instances.delete(instanceId)) {
      throw failures.snapshotNotFound(instanceId);
    }
    this.store.idsChanged();
    this.store.claims.delete(instanceId);
    this.store.ready.remove(instanceId);
  }

  protected async doListSnapshotsPage(cursor: string | null, limit: number): Promise<SnapshotPage> {
    const ids = this.store.sortedIds();
    let start = 0;
    if (cursor !== null) {
      let hi = ids.length;
      while (start < hi) {
        const mid = (start + hi) >>> 1;
        if ((ids[mid] as string) <= cursor) start = mid + 1;
        else hi = mid;
      }
    }
    const instanceIds = ids.slice(start, start + limit);
    const more = start + limit < ids.length;
    return { instanceIds, nextCursor: more ? (instanceIds[instanceIds.length - 1] ?? null) : null };
  }

  #claim(instanceId: string, taskId: string, workerId: string, ttlMs: number | null): TaskClaim | null {
    if (this.#liveClaim(instanceId, taskId) !== undefined) return null;
    const now = this.#now();
    const claim: TaskClaim = {
      instanceId,
      taskId,
      workerId,
      claimedAt: now,
      expiresAt: ttlMs === null ? null : now + ttlMs,
      token: ++this.store.lastToken,
    };
    let tasks = this.store.claims.get(instanceId);
    if (tasks === undefined) {
      tasks = new Map();
      this.store.claims.set(instanceId, tasks);
    }
    tasks.set(taskId, claim);
    return { ...claim };
  }

  protected async doClaimTask(
    instanceId: string,
    taskId: string,
    workerId: string,
    ttlMs: number | null,
  ): Promise<TaskClaim | null> {
    return this.#claim(instanceId, taskId, workerId, ttlMs);
  }

  #ownedClaim(instanceId: string, taskId: string, workerId: string): TaskClaim {
    const claim = this.store.claims.get(instanceId)?.get(taskId);
    assertClaimHolder(instanceId, taskId, claim?.workerId, workerId);
    return claim as TaskClaim;
  }

  protected async doReleaseTaskClaim(instanceId: string, taskId: string, workerId: string): Promise<void> {
    this.#ownedClaim(instanceId, taskId, workerId);
    const tasks = this.store.claims.get(instanceId);
    tasks?.delete(taskId);
    if (tasks?.size === 0) this.store.claims.delete(instanceId);
  }

  protected async doExtendTaskClaim(
    instanceId: string,
    taskId: string,
    workerId: string,
    durationMs: number,
  ): Promise<TaskClaim> {
    const claim = this.#ownedClaim(instanceId, taskId, workerId);
    const now = this.#now();
    if (!isClaimLive(claim, now)) {
      throw failures.claimExpired(instanceId, taskId);
    }
    if (claim.expiresAt !== null) claim.expiresAt = now + durationMs;
    return { ...claim };
  }

  #ready(limit: number): Array<{ instanceId: string; taskId: string; stored: StoredInstance }> {
    const found = [];
    for (const entry of this.store.ready) {
      if (found.length >= limit) break;
      if (this.#liveClaim(entry.instanceId, entry.taskId) !== undefined) continue;
      const stored = this.store.instances.get(entry.instanceId) as StoredInstance;
      found.push({ instanceId: entry.instanceId, taskId: entry.taskId, stored });
    }
    return found;
  }

  protected async doFindAvailableTasks(_workerId: string, limit: number): Promise<AvailableTask[]> {
    return this.#ready(limit).map(({ instanceId, taskId, stored }) => ({
      instanceId,
      taskId,
      input: this.#input(stored),
      workflowDefinitionHash: stored.definitionHash,
    }));
  }

  protected async doClaimAvailableTasks(
    workerId: string,
    limit: number,
    ttlMs: number | null,
  ): Promise<ClaimedTask[]> {
    return this.#ready(limit).map(({ instanceId, taskId, stored }) => ({
      instanceId,
      taskId,
      input: this.#input(stored),
      workflowDefinitionHash: stored.definitionHash,
      claim: this.#claim(instanceId, taskId, workerId, ttlMs) as TaskClaim,
    }));
  }

  protected async doClose(): Promise<void> {
    // Nothing to release: the store lives as long as something references it.
  }
}
