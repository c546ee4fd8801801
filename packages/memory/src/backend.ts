import {
  type AvailableTask,
  type BackendCapabilities,
  BaseBackend,
  type BaseBackendOptions,
  type ClaimedTask,
  type CompletionOutcome,
  type ControlRequest,
  compareIds,
  copyBytes,
  type EventRef,
  type Fence,
  failures,
  isClaimLive,
  markCancelled,
  markPaused,
  markResumed,
  type NextStep,
  type PendingEvent,
  type PersistenceError,
  positionTaskId,
  type RenewedClaim,
  type SnapshotPage,
  type TaskClaim,
  type ValidCompletion,
  type ValidFailure,
  type WakeProbe,
  type WorkflowSnapshot,
} from "@sayiir/persistence-core";
import {
  advanceHeader,
  type ControlOperation,
  consumeRefusal,
  controlRefusal,
  extendRefusal,
  fromStoredParts,
  REVOKED_EXPIRY,
  releaseRefusal,
  resultRefusal,
  type StoredSnapshot,
  snapshotRefusal,
  stepRefusal,
  toStoredSnapshot,
  type WriteView,
} from "@sayiir/persistence-core/adapter";
import {
  availableEntries,
  availableTask,
  openWait,
  place,
  positionTask,
  unplace,
  wakeProbe,
} from "./discovery.js";
import type { IndexEntry } from "./indexes.js";
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
    // Every backend over a store hears its writes at once (an in-process emitter).
    wakeUps: "push",
    wakeBoundMs: 10_000,
    dbSystem: "memory",
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
      agingMs: options.agingMs ?? this.agingMs,
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
      cancelled: stored?.status === "Cancelled",
      paused: stored?.status === "Paused",
      claim: fence === undefined ? undefined : this.store.claim(instanceId, fence.taskId),
      now: this.#now(),
    };
  }

  /**
   * Stores a snapshot's stored form (private copies of its byte values) and indexes it. A
   * terminal snapshot (Completed, Failed, Cancelled) drops the instance's pending events: nothing
   * can consume them any more.
   */
  #put(parts: StoredSnapshot): void {
    const id = parts.instanceId;
    const stored: StoredInstance = {
      header: parts.header,
      status: parts.status,
      finished: parts.finished,
      definitionHash: parts.definitionHash,
      initialInput: parts.initialInput === null ? undefined : copyBytes(parts.initialInput),
      positionTaskId: parts.positionTaskId,
      awaiting: parts.awaiting,
      results: new Map(parts.results.map((r) => [r.taskId, copyBytes(r.output)])),
      schedule: { ...parts.schedule },
      attempts: new Map(parts.attempts.map(({ taskId, ...attempts }) => [taskId, attempts])),
      lastCompletedTaskId: parts.lastCompletedTaskId,
      updatedAt: parts.updatedAt,
    };
    if (!this.store.instances.has(id)) this.store.idsChanged();
    this.store.instances.set(id, stored);
    this.#recordFinish(id, stored);
    place(this.store, id, stored);
  }

  /** The stored snapshot, decoded (copies: the decoded byte values are views into the header). */
  #snapshot(instanceId: string, stored: StoredInstance): WorkflowSnapshot {
    return fromStoredParts({
      instanceId,
      header: copyBytes(stored.header),
      initialInput: stored.initialInput === undefined ? null : copyBytes(stored.initialInput),
      results: [...stored.results].map(([taskId, output]) => ({ taskId, output: copyBytes(output) })),
      lastCompletedTaskId: stored.lastCompletedTaskId,
      updatedAt: stored.updatedAt,
      attempts: [...stored.attempts].map(([taskId, attempts]) => ({ taskId, ...attempts })),
    });
  }

  /**
   * The fence, then the state (snapshotRefusal: no reopening, a cancel is final, a paused
   * workflow does not move), then the event it consumes (consumeRefusal): the oldest pending
   * event of its name, removed with the write. All or nothing.
   */
  protected async doSaveSnapshot(
    snapshot: WorkflowSnapshot,
    fence: Fence | undefined,
    consumeEvent: EventRef | undefined,
  ): Promise<void> {
    const id = snapshot.instanceId;
    const parts = toStoredSnapshot(snapshot);
    const refusal =
      snapshotRefusal(id, fence, this.#writeView(id, fence), parts.status) ??
      (consumeEvent === undefined
        ? null
        : consumeRefusal(id, consumeEvent, this.store.events.oldest(id, consumeEvent.eventName)?.sequence));
    if (refusal !== null) throw refusal;
    if (consumeEvent !== undefined) this.store.events.consumeOldest(id, consumeEvent.eventName);
    this.#put(parts);
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

  /**
   * The fenced write of one task result; the refusal, or null once it is written. A Paused
   * workflow takes it (and stays in no index); a Cancelled one is finished and refuses it.
   */
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
    place(this.store, instanceId, stored);
    return null;
  }

  // Each completion runs without an await in between, so its write and its release are one step.
  protected override async doCompleteTasks(
    completions: readonly ValidCompletion[],
  ): Promise<CompletionOutcome[]> {
    return completions.map((c) => {
      const refusal =
        c.next === undefined
          ? this.#saveTaskResult(c.instanceId, c.taskId, c.output, c)
          : this.#step(c, c.next);
      if (refusal !== null) return refusal;
      this.store.deleteClaim(c.instanceId, c.taskId);
      return null;
    });
  }

  /**
   * The task an InProgress position runs, whether or not it has a result: AtTask's task, or a
   * wait's next task (the stored `awaiting` is only kept for a wait whose task has none: decoded).
   */
  #positionTask(instanceId: string, stored: StoredInstance): string | null {
    if (stored.positionTaskId !== null) return stored.positionTaskId;
    if (stored.awaiting !== null) return stored.awaiting.nextTaskId;
    const header = fromStoredParts({
      instanceId,
      header: stored.header,
      initialInput: null,
      results: [],
      lastCompletedTaskId: null,
    });
    return header.state.kind === "InProgress" ? positionTaskId(header.state.position) : null;
  }

  /**
   * A completion with `next`: the kit's checks (stepRefusal), then the result, the header and
   * index fields the kit computes from the stored header (advanceHeader) and the consumed event,
   * written together. The other results are not touched; a terminal step drops them all.
   */
  #step(c: ValidCompletion, next: NextStep): PersistenceError | null {
    const id = c.instanceId;
    const stored = this.store.instances.get(id);
    const event = c.consumeEvent;
    const refusal = stepRefusal(
      id,
      c,
      {
        ...this.#writeView(id, c),
        paused: stored?.status === "Paused",
        positionTask: stored?.status === "InProgress" ? this.#positionTask(id, stored) : null,
      },
      event,
      event === undefined ? undefined : this.store.events.oldest(id, event.eventName)?.sequence,
    );
    if (refusal !== null || stored === undefined) return refusal;
    const view = {
      instanceId: id,
      header: stored.header,
      lastCompletedTaskId: stored.lastCompletedTaskId,
      hasResult: (taskId: string) => stored.results.has(taskId),
    };
    const write = advanceHeader(view, c.taskId, next, Math.max(stored.updatedAt, this.#now()));
    if (event !== undefined) this.store.events.consumeOldest(id, event.eventName);
    if (write.keepsResults) stored.results.set(c.taskId, copyBytes(c.output));
    else stored.results.clear();
    Object.assign(stored, {
      header: write.header,
      status: write.status,
      finished: write.finished,
      positionTaskId: write.positionTaskId,
      awaiting: write.awaiting,
      schedule: { ...write.schedule },
      lastCompletedTaskId: write.lastCompletedTaskId,
      updatedAt: write.updatedAt,
    });
    this.#recordFinish(id, stored);
    place(this.store, id, stored);
    return null;
  }

  /**
   * After a write: a finished instance drops its pending events (nothing can consume them) and
   * enters the finish-time index at its first finish; an unfinished one leaves it.
   */
  #recordFinish(instanceId: string, stored: StoredInstance): void {
    if (stored.finished) {
      this.store.events.drop(instanceId);
      this.store.finished.add(instanceId, this.#now());
    } else this.store.finished.remove(instanceId);
  }

  protected async doLoadSnapshot(instanceId: string): Promise<WorkflowSnapshot> {
    const stored = this.store.instances.get(instanceId);
    if (stored === undefined) throw failures.snapshotNotFound(instanceId);
    return this.#snapshot(instanceId, stored);
  }

  protected async doDeleteSnapshot(instanceId: string): Promise<void> {
    if (!this.store.instances.delete(instanceId)) {
      throw failures.snapshotNotFound(instanceId);
    }
    this.store.idsChanged();
    this.store.events.delete(instanceId);
    this.store.finished.remove(instanceId);
    unplace(this.store, instanceId);
    // Claims go, but the store-wide token counter keeps every later token larger.
    this.store.claims.delete(instanceId);
  }

  protected async doLoadTaskResult(instanceId: string, taskId: string): Promise<Uint8Array | null> {
    const stored = this.store.instances.get(instanceId);
    if (stored === undefined) throw failures.snapshotNotFound(instanceId);
    // Completed and Failed states carry no results (loadSnapshot shows none).
    if (stored.finished && stored.status !== "Cancelled") return null;
    const output = stored.results.get(taskId);
    return output === undefined ? null : copyBytes(output);
  }

  protected async doPurgeFinished(finishedBefore: number, limit: number): Promise<number> {
    const ids = this.store.finished.before(finishedBefore, limit);
    for (const id of ids) await this.doDeleteSnapshot(id);
    return ids.length;
  }

  /** Claims revoked by a cancel keep their record (and token) with the epoch as expiry: not listed. */
  protected async doLoadTaskClaims(instanceId: string): Promise<TaskClaim[]> {
    const claims = [...(this.store.claims.get(instanceId)?.values() ?? [])];
    return claims
      .filter((claim) => claim.expiresAt !== REVOKED_EXPIRY)
      .sort((a, b) => compareIds(a.taskId, b.taskId))
      .map((claim) => ({ ...claim }));
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

  /**
   * Claim-next taking over an expired claim on the task the position offers counts a failed run
   * of it (its holder crashed or hung): count + 1, the last error stays. (claimTask does not:
   * the fencing group requires a takeover by claimTask to leave the snapshot as it was.)
   */
  #countTakeover(instanceId: string, taskId: string): void {
    if (this.store.claim(instanceId, taskId) === undefined) return; // no claim: not a takeover
    const stored = this.store.instances.get(instanceId);
    if (stored === undefined || positionTask(stored) !== taskId) return;
    const before = stored.attempts.get(taskId) ?? { count: 0, lastError: null, lastFailedAt: null };
    stored.attempts.set(taskId, { ...before, count: before.count + 1 });
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

  /**
   * Renews the claim and says, from the same step, whether its workflow is paused. On a cancelled
   * workflow the heartbeat fails (ClaimLost), whether cancelWorkflow revoked the claim or it was
   * taken after the cancel, or the Cancelled snapshot came from saveSnapshot.
   */
  protected async doExtendTaskClaim(
    instanceId: string,
    taskId: string,
    workerId: string,
    durationMs: number,
  ): Promise<RenewedClaim> {
    const claim = this.store.claim(instanceId, taskId);
    const now = this.#now();
    const status = this.store.instances.get(instanceId)?.status;
    const refusal = extendRefusal(instanceId, taskId, claim, workerId, now, status);
    if (refusal !== null) throw refusal;
    const held = claim as TaskClaim;
    if (held.expiresAt !== null) held.expiresAt = now + durationMs;
    return { ...held, workflowPaused: status === "Paused" };
  }

  /** The index entries discovery hands out now: the queues' ready and due lists, by effective time. */
  #available(limit: number, queues: readonly string[]): IndexEntry[] {
    return availableEntries(this.store, queues, { now: this.#now(), agingMs: this.agingMs, limit });
  }

  protected async doFindAvailableTasks(
    _workerId: string,
    limit: number,
    queues: readonly string[],
  ): Promise<AvailableTask[]> {
    return this.#available(limit, queues).map((entry) => availableTask(this.store, entry));
  }

  /** Finds and claims in one step; the task is read after its claim, so a takeover shows in `attempt`. */
  protected async doClaimAvailableTasks(
    workerId: string,
    limit: number,
    ttlMs: number | null,
    queues: readonly string[],
  ): Promise<ClaimedTask[]> {
    return this.#available(limit, queues).map((entry) => {
      this.#countTakeover(entry.instanceId, entry.taskId);
      const claim = this.#claim(entry.instanceId, entry.taskId, workerId, ttlMs) as TaskClaim;
      return { ...availableTask(this.store, entry), claim };
    });
  }

  protected async doFailTasks(failed: readonly ValidFailure[]): Promise<CompletionOutcome[]> {
    return failed.map((failure) => this.#failTask(failure));
  }

  /**
   * One failed run, one step, fenced like a completion (resultRefusal: NotFound, then ClaimLost,
   * then Conflict on a finished workflow): the task's attempts get count + 1, the error, the
   * store's now and retryAt, beside the header (which is not rewritten); the claim is released;
   * the task goes into the due index at retryAt, or into no index when retryAt is null (held
   * until a saveSnapshot changes the position or the attempts).
   */
  #failTask(failure: ValidFailure): PersistenceError | null {
    const { instanceId, taskId, error, retryAt } = failure;
    const refusal = resultRefusal(instanceId, failure, this.#writeView(instanceId, failure));
    if (refusal !== null) return refusal;
    const stored = this.store.instances.get(instanceId) as StoredInstance;
    const count = (stored.attempts.get(taskId)?.count ?? 0) + 1;
    stored.attempts.set(taskId, { count, lastError: error, lastFailedAt: this.#now(), retryAt });
    this.store.deleteClaim(instanceId, taskId);
    place(this.store, instanceId, stored);
    return null;
  }

  /** The stored instance a control operation or an event applies to, once controlRefusal allows it. */
  #controlled(operation: ControlOperation, instanceId: string): StoredInstance {
    const stored = this.store.instances.get(instanceId);
    const refusal = controlRefusal(operation, instanceId, stored?.status);
    if (refusal !== null) throw refusal;
    return stored as StoredInstance;
  }

  /**
   * InProgress or Paused -> Cancelled (results kept), its pending events dropped (the write is
   * terminal) and every claim on the instance revoked.
   */
  protected async doCancelWorkflow(instanceId: string, request: Required<ControlRequest>): Promise<void> {
    const stored = this.#controlled("cancel", instanceId);
    this.#put(toStoredSnapshot(markCancelled(this.#snapshot(instanceId, stored), request, this.#now())));
    this.#revokeClaims(instanceId);
  }

  /**
   * Revoking a claim sets its expiry to the epoch (REVOKED_EXPIRY), so no clock stepping back can
   * make it live again: the record and its token stay, so later claims get larger tokens, its
   * holder's extend and fenced writes get ClaimLost, and the holder may still release it.
   */
  #revokeClaims(instanceId: string): void {
    for (const claim of this.store.claims.get(instanceId)?.values() ?? []) {
      claim.expiresAt = REVOKED_EXPIRY;
    }
  }

  /** InProgress -> Paused at the same position: out of both indexes; claims stay. */
  protected async doPauseWorkflow(instanceId: string, request: Required<ControlRequest>): Promise<void> {
    const stored = this.#controlled("pause", instanceId);
    this.#put(toStoredSnapshot(markPaused(this.#snapshot(instanceId, stored), request, this.#now())));
  }

  /** Paused -> InProgress at the same position, with every result: indexed again (ready, or a wait). */
  protected async doResumeWorkflow(instanceId: string): Promise<void> {
    const stored = this.#controlled("resume", instanceId);
    this.#put(toStoredSnapshot(markResumed(this.#snapshot(instanceId, stored), this.#now())));
  }

  /**
   * Appends the event to the FIFO of (instance, name) with the instance's next sequence and the
   * store's clock as sentAt. A workflow waiting for that name becomes ready in the same step.
   */
  protected async doSendEvent(instanceId: string, eventName: string, payload: Uint8Array): Promise<number> {
    const stored = this.#controlled("sendEvent", instanceId);
    const sequence = this.store.events.append(instanceId, eventName, copyBytes(payload), this.#now());
    if (openWait(stored)?.eventName === eventName) place(this.store, instanceId, stored);
    return sequence;
  }

  protected async doLoadPendingEvents(instanceId: string): Promise<PendingEvent[]> {
    if (!this.store.instances.has(instanceId)) throw failures.snapshotNotFound(instanceId);
    return this.store.events
      .pending(instanceId)
      .map((event) => ({ ...event, payload: copyBytes(event.payload) }));
  }

  protected override async doProbeWakeUp(queues: readonly string[]): Promise<WakeProbe> {
    return wakeProbe(this.store, queues, { now: this.#now(), agingMs: this.agingMs });
  }

  protected override async doListenForWakeUps(
    notify: (queue: string | null, readyNow?: boolean) => void,
  ): Promise<() => Promise<void>> {
    const listener = (queue: string, readyNow: boolean): void => notify(queue, readyNow);
    this.store.wakeListeners.add(listener);
    return async () => {
      this.store.wakeListeners.delete(listener);
    };
  }

  protected async doClose(): Promise<void> {
    // Nothing to release: the store lives as long as something references it.
  }
}
