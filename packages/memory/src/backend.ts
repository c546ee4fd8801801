import {
  type AvailableTask,
  type BackendCapabilities,
  BaseBackend,
  type BaseBackendOptions,
  type ClaimedTask,
  type CompletionOutcome,
  copyBytes,
  EMPTY_BYTES,
  type Fence,
  failures,
  isClaimLive,
  type PersistenceError,
  type SnapshotPage,
  type TaskClaim,
  type ValidCompletion,
  type WorkflowSnapshot,
} from "@sayiir/persistence-core";
import {
  extendRefusal,
  fromStoredParts,
  releaseRefusal,
  resultRefusal,
  snapshotRefusal,
  toStoredSnapshot,
  type WriteView,
} from "@sayiir/persistence-core/adapter";
import type { MemoryStore, StoredInstance } from "./layout.js";
import { type InMemoryBackendOptions, storeOf } from "./options.js";

/**
 * The reference backend: everything in process memory, nothing durable. Each operation runs
 * synchronously between two awaits, which is what makes it atomic in one JavaScript thread. It is
 * written to read like the contract: every refusal is the adapter kit's, asked in the kit's order.
 */
export class InMemoryBackend extends BaseBackend {
  readonly capabilities: BackendCapabilities = {
    durable: false,
    clock: "client",
    clockSkewMs: 0,
    shards: 1,
    wakeUps: "poll",
  };
  readonly store: MemoryStore;

  constructor(options: InMemoryBackendOptions = {}) {
    super(options);
    this.store = storeOf(options);
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
    const claim = this.store.claim(instanceId, taskId);
    return claim !== undefined && isClaimLive(claim, this.#now()) ? claim : undefined;
  }

  /** What a write is checked against: the stored snapshot and the claim on the fence's task. */
  #writeView(instanceId: string, fence: Fence | undefined): WriteView {
    const stored = this.store.instances.get(instanceId);
    return {
      found: stored !== undefined,
      finished: stored?.finished ?? false,
      claim: fence === undefined ? undefined : this.store.claim(instanceId, fence.taskId),
      now: this.#now(),
    };
  }

  /** The ready task: InProgress at a task that has no result yet (claims aside), else null. */
  #readyTask(stored: StoredInstance): string | null {
    const taskId = stored.positionTaskId;
    return !stored.finished && taskId !== null && !stored.results.has(taskId) ? taskId : null;
  }

  #reindex(instanceId: string, stored: StoredInstance, readyTaskId = this.#readyTask(stored)): void {
    if (readyTaskId !== null) {
      this.store.ready.set({ instanceId, taskId: readyTaskId, updatedAt: stored.updatedAt });
    } else {
      this.store.ready.remove(instanceId);
    }
  }

  /** Input of the ready task: the last completed output, else the initial input, else empty bytes. */
  #input(stored: StoredInstance): Uint8Array {
    const last =
      stored.lastCompletedTaskId === null ? undefined : stored.results.get(stored.lastCompletedTaskId);
    return copyBytes(last ?? stored.initialInput ?? EMPTY_BYTES);
  }

  protected async doSaveSnapshot(snapshot: WorkflowSnapshot, fence: Fence | undefined): Promise<void> {
    const id = snapshot.instanceId;
    const parts = toStoredSnapshot(snapshot);
    const refusal = snapshotRefusal(id, fence, this.#writeView(id, fence), parts.finished);
    if (refusal !== null) throw refusal;
    const stored: StoredInstance = {
      header: parts.header,
      finished: parts.finished,
      definitionHash: parts.definitionHash,
      initialInput: parts.initialInput === null ? undefined : copyBytes(parts.initialInput),
      positionTaskId: parts.positionTaskId,
      results: new Map(parts.results.map((r) => [r.taskId, copyBytes(r.output)])),
      lastCompletedTaskId: parts.lastCompletedTaskId,
      updatedAt: parts.updatedAt,
    };
    if (!this.store.instances.has(id)) this.store.idsChanged();
    this.store.instances.set(id, stored);
    this.#reindex(id, stored, parts.readyTaskId);
  }

  protected async doSaveTaskResult(
    instanceId: string,
    taskId: string,
    output: Uint8Array,
    fence: Fence | undefined,
  ): Promise<void> {
    const refusal = this.#saveTaskResult(instanceId, taskId, output, fence);
    if (refusal !== null) throw refusal;
  }

  /** The fenced write of one task result; the refusal, or null once it is written. */
  #saveTaskResult(
    instanceId: string,
    taskId: string,
    output: Uint8Array,
    fence: Fence | undefined,
  ): PersistenceError | null {
    const refusal = resultRefusal(instanceId, fence, this.#writeView(instanceId, fence));
    if (refusal !== null) return refusal;
    const stored = this.store.instances.get(instanceId) as StoredInstance;
    stored.results.set(taskId, copyBytes(output));
    stored.lastCompletedTaskId = taskId;
    stored.updatedAt = Math.max(stored.updatedAt, this.#now());
    this.#reindex(instanceId, stored);
    return null;
  }

  // Each completion runs without an await in between, so its write and its release are one step.
  protected override async doCompleteTasks(
    completions: readonly ValidCompletion[],
  ): Promise<CompletionOutcome[]> {
    return completions.map((c) => {
      const refusal = this.#saveTaskResult(c.instanceId, c.taskId, c.output, c);
      if (refusal !== null) return refusal;
      this.store.deleteClaim(c.instanceId, c.taskId);
      return null;
    });
  }

  protected async doLoadSnapshot(instanceId: string): Promise<WorkflowSnapshot> {
    const stored = this.store.instances.get(instanceId);
    if (stored === undefined) throw failures.snapshotNotFound(instanceId);
    // Copies, so that the caller mutating the loaded bytes can't reach the store (the decoded
    // snapshot's byte values are views into the header).
    return fromStoredParts({
      instanceId,
      header: copyBytes(stored.header),
      initialInput: stored.initialInput === undefined ? null : copyBytes(stored.initialInput),
      results: [...stored.results].map(([taskId, output]) => ({ taskId, output: copyBytes(output) })),
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
    this.store.setClaim(claim);
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

  protected async doReleaseTaskClaim(instanceId: string, taskId: string, workerId: string): Promise<void> {
    const refusal = releaseRefusal(instanceId, taskId, this.store.claim(instanceId, taskId), workerId);
    if (refusal !== null) throw refusal;
    this.store.deleteClaim(instanceId, taskId);
  }

  protected async doExtendTaskClaim(
    instanceId: string,
    taskId: string,
    workerId: string,
    durationMs: number,
  ): Promise<TaskClaim> {
    const claim = this.store.claim(instanceId, taskId);
    const now = this.#now();
    const refusal = extendRefusal(instanceId, taskId, claim, workerId, now);
    if (refusal !== null) throw refusal;
    const held = claim as TaskClaim;
    if (held.expiresAt !== null) held.expiresAt = now + durationMs;
    return { ...held };
  }

  /** Up to `limit` ready tasks nobody holds a live claim on, oldest first. */
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
