import {
  bytesEqual,
  type ClaimedTask,
  ClaimLostError,
  createSnapshot,
  type ExecutionPosition,
  getTaskResult,
  isFinished,
  markCompleted,
  markFailed,
  markTaskCompleted,
  NotFoundError,
  nextTaskInput,
  type PersistentBackend,
  type TaskClaim,
  updatePosition,
  type WorkflowSnapshot,
} from "@sayiir/persistence-core";
import {
  type CompiledWorkflow,
  childInstanceId,
  compileWorkflow,
  type FanOutStage,
  parseChildId,
  stageEntryTaskId,
  type TaskAction,
  type TaskContext,
  taskIds,
  type WorkflowDefinition,
} from "./definition.ts";

/** Everything the loop reports, in order, synchronously (write it to a log, count it, forward it). */
export type WorkerEvent =
  | { type: "claimed"; workerId: string; instanceId: string; taskId: string; token: number; at: number }
  | {
      type: "committed";
      workerId: string;
      instanceId: string;
      taskId: string;
      token: number;
      action: TaskAction["kind"];
      /** The instance is Completed by this write. */
      finished: boolean;
      /** A top-level workflow (not a fan-out child) is Completed by this write. */
      workflowCompleted: boolean;
      ms: number;
    }
  | {
      type: "branch-recorded";
      workerId: string;
      parentId: string;
      branchTaskId: string;
      lockToken: number;
      /** This record was the last branch: the parent's join task is now ready. */
      joinReady: boolean;
    }
  | { type: "branch-already-recorded"; workerId: string; parentId: string; branchTaskId: string }
  | { type: "child-created"; workerId: string; instanceId: string; token: number }
  | {
      type: "lost";
      workerId: string;
      instanceId: string;
      taskId: string;
      token: number;
      /** heartbeat: extend refused; load: the workflow had moved on; commit / join-lock: fenced write refused. */
      during: "heartbeat" | "load" | "commit" | "join-lock";
    }
  | { type: "released"; workerId: string; instanceId: string; taskId: string; token: number }
  | {
      /** claimAvailableTasks handed out an input that is not the snapshot's (a backend bug); not committed. */
      type: "input-mismatch";
      workerId: string;
      instanceId: string;
      taskId: string;
      token: number;
      got: string;
      expected: string;
    }
  | { type: "failed"; workerId: string; instanceId: string; taskId: string; error: string }
  | { type: "error"; workerId: string; instanceId?: string; taskId?: string; error: string };

export interface WorkerOptions {
  backend: PersistentBackend;
  workerId: string;
  /** The workflow definitions this worker can run (keyed by their hash). */
  workflows: WorkflowDefinition[];
  /** Lease of every claim (ms). Default 1000. */
  leaseMs?: number;
  /** Heartbeat period (ms): extendTaskClaim by leaseMs. Default leaseMs / 3. 0 disables heartbeats. */
  heartbeatMs?: number;
  /** Tasks in flight at once (claimed in batches of the free slots). Default 4. */
  batch?: number;
  /** Longest idle sleep when nothing is ready (ms); the sleep doubles from 5 ms up to this. Default 200. */
  maxIdleMs?: number;
  /** Stop claiming, let the tasks in flight finish, then resolve. */
  signal?: AbortSignal;
  /**
   * Simulates a crash (kill -9): stop at once, abandon the tasks in flight without committing
   * or releasing them, stop the heartbeats. Their leases expire and other workers take over.
   */
  crash?: AbortSignal;
  onEvent?: (event: WorkerEvent) => void;
}

export interface WorkerStats {
  claimed: number;
  committed: number;
  lost: number;
  failed: number;
  errors: number;
}

class TaskAborted extends Error {}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * The reference worker loop: claim ready tasks with a lease, heartbeat while running them,
 * commit each result with one fenced write that also advances the workflow, release.
 * Resolves with counters when `signal` aborts (after draining) or `crash` aborts (at once).
 */
export async function runWorker(options: WorkerOptions): Promise<WorkerStats> {
  const { backend, workerId } = options;
  const leaseMs = options.leaseMs ?? 1000;
  const heartbeatMs = options.heartbeatMs ?? Math.max(1, Math.floor(leaseMs / 3));
  const batch = options.batch ?? 4;
  const maxIdleMs = options.maxIdleMs ?? 200;
  const compiled = new Map<string, CompiledWorkflow>();
  for (const definition of options.workflows) compiled.set(definition.hash, compileWorkflow(definition));
  const stats: WorkerStats = { claimed: 0, committed: 0, lost: 0, failed: 0, errors: 0 };
  const crashed = () => options.crash?.aborted === true;
  const stopping = () => options.signal?.aborted === true || crashed();
  const emit = (event: WorkerEvent) => {
    if (event.type === "error") stats.errors++;
    if (crashed()) return;
    options.onEvent?.(event);
  };
  const errorText = (error: unknown) =>
    error instanceof Error ? `${error.name}: ${error.message}` : String(error);

  // Resolves when the crash signal fires, so waits can be cut short.
  const crashPromise = new Promise<void>((resolve) => {
    if (options.crash === undefined) return;
    if (options.crash.aborted) resolve();
    else options.crash.addEventListener("abort", () => resolve(), { once: true });
  });
  const stopPromise = new Promise<void>((resolve) => {
    if (options.signal === undefined) return;
    if (options.signal.aborted) resolve();
    else options.signal.addEventListener("abort", () => resolve(), { once: true });
  });

  const inFlight = new Set<Promise<void>>();
  let idleMs = 5;
  while (!stopping()) {
    const free = batch - inFlight.size;
    let claimed: ClaimedTask[] = [];
    if (free > 0) {
      try {
        claimed = await backend.claimAvailableTasks(workerId, free, leaseMs);
      } catch (error) {
        emit({ type: "error", workerId, error: `claimAvailableTasks: ${errorText(error)}` });
      }
      if (crashed()) break;
    }
    for (const task of claimed) {
      stats.claimed++;
      emit({
        type: "claimed",
        workerId,
        instanceId: task.instanceId,
        taskId: task.taskId,
        token: task.claim.token,
        at: task.claim.claimedAt,
      });
      const run = runTask(task).finally(() => inFlight.delete(run));
      inFlight.add(run);
    }
    if (claimed.length > 0) {
      idleMs = 5;
      continue;
    }
    // Nothing new: wait for a task in flight to finish (its successor may be ready now), and when
    // slots are free, at most the idle backoff (5 ms doubling to maxIdleMs while nothing is ready).
    const waits: Promise<unknown>[] = [...inFlight, crashPromise, stopPromise];
    if (free > 0) {
      waits.push(sleep(idleMs));
      idleMs = Math.min(maxIdleMs, idleMs * 2);
    }
    await Promise.race(waits);
  }
  if (!crashed()) await Promise.all(inFlight);
  return stats;

  async function runTask(task: ClaimedTask): Promise<void> {
    const { instanceId, taskId, claim } = task;
    const started = Date.now();
    const controller = new AbortController();
    const onCrash = () => controller.abort(new TaskAborted("crashed"));
    options.crash?.addEventListener("abort", onCrash, { once: true });
    let lostDuring: "heartbeat" | "load" | "commit" | "join-lock" | undefined;
    const lost = (during: typeof lostDuring) => {
      lostDuring ??= during;
      controller.abort(new TaskAborted(`claim lost during ${during}`));
    };
    const heartbeat =
      heartbeatMs > 0
        ? setInterval(() => {
            if (controller.signal.aborted || crashed()) return;
            backend.extendTaskClaim(instanceId, taskId, workerId, leaseMs).catch((error: unknown) => {
              if (error instanceof ClaimLostError || error instanceof NotFoundError) lost("heartbeat");
              else
                emit({
                  type: "error",
                  workerId,
                  instanceId,
                  taskId,
                  error: `heartbeat: ${errorText(error)}`,
                });
            });
          }, heartbeatMs)
        : undefined;
    const checkpoint = () => {
      if (crashed()) controller.abort(new TaskAborted("crashed"));
      if (controller.signal.aborted) throw new TaskAborted(String(controller.signal.reason));
    };
    const context: TaskContext = { instanceId, taskId, workerId, signal: controller.signal };
    let release = true;
    try {
      const workflow = compiled.get(task.workflowDefinitionHash);
      const action = workflow?.actions.get(taskId);
      if (workflow === undefined || action === undefined) {
        emit({
          type: "error",
          workerId,
          instanceId,
          taskId,
          error: `no definition for ${task.workflowDefinitionHash} / ${taskId}`,
        });
        return;
      }
      const definition = workflow.definition;
      const commit = async (snapshot: WorkflowSnapshot) => {
        checkpoint();
        try {
          await backend.saveSnapshot(snapshot, { claim });
        } catch (error) {
          if (error instanceof ClaimLostError) lost("commit");
          throw error;
        }
        stats.committed++;
        const finished = snapshot.state.kind === "Completed";
        emit({
          type: "committed",
          workerId,
          instanceId,
          taskId,
          token: claim.token,
          action: action.kind,
          finished,
          workflowCompleted: finished && parseChildId(instanceId) === undefined,
          ms: Date.now() - started,
        });
      };
      const load = async () => {
        checkpoint();
        const snapshot = await backend.loadSnapshot(instanceId);
        const position = snapshot.state.kind === "InProgress" ? snapshot.state.position : undefined;
        if (position?.kind !== "AtTask" || position.taskId !== taskId) {
          // Another worker took the task over and moved the workflow on: our claim is gone.
          lost("load");
          checkpoint();
        }
        // The contract: a claimed task's input is the last completed task's output, else the
        // initial input. A backend that hands out another input has a bug; refuse to build on it.
        const expectedInput = nextTaskInput(snapshot);
        if (!bytesEqual(expectedInput, task.input)) {
          emit({
            type: "input-mismatch",
            workerId,
            instanceId,
            taskId,
            token: claim.token,
            got: preview(task.input),
            expected: preview(expectedInput),
          });
          throw new InputMismatch();
        }
        return snapshot;
      };
      try {
        switch (action.kind) {
          case "step": {
            const stage = definition.stages[action.stage];
            if (stage?.kind !== "step") throw new Error(`bad stage for ${taskId}`);
            const output = await callTask(() => stage.run(task.input, context));
            const snapshot = await load();
            await commit(
              advance(definition, action.stage, markTaskCompleted(snapshot, taskId, output), output),
            );
            break;
          }
          case "spawn": {
            const stage = fanOutStage(definition, action.stage);
            const snapshot = await load();
            for (let i = 0; i < stage.branches.length; i++) {
              await ensureChild(
                childInstanceId(instanceId, stage.id, i),
                definition.hash,
                stage,
                i,
                task.input,
                checkpoint,
              );
            }
            await commit(
              updatePosition(snapshot, { kind: "AtJoin", joinId: stage.id, completedBranches: [] }),
            );
            break;
          }
          case "branch": {
            const stage = fanOutStage(definition, action.stage);
            const branchFn = stage.branches[action.branch]!;
            const output = await callTask(() => branchFn(task.input, context));
            const snapshot = await load();
            const done = markTaskCompleted(snapshot, taskId, output);
            await commit(updatePosition(done, { kind: "AtTask", taskId: taskIds.notify(stage.id) }));
            break;
          }
          case "notify": {
            const stage = fanOutStage(definition, action.stage);
            const child = parseChildId(instanceId);
            if (child === undefined) throw new Error(`${instanceId} is not a fan-out child`);
            // The input of notify is the branch's committed output (checked against the snapshot by load).
            const snapshot = await load();
            await recordBranch(child.parentId, stage, child.branch, { output: task.input }, checkpoint, lost);
            await commit(markCompleted(snapshot, task.input));
            break;
          }
          case "join": {
            const stage = fanOutStage(definition, action.stage);
            const snapshot = await load();
            const outputs = stage.branches.map((_, i) => {
              const output = getTaskResult(snapshot, taskIds.branch(stage.id, i));
              if (output === undefined)
                throw new Error(`${instanceId}: branch ${i} of ${stage.id} has no output`);
              return output;
            });
            const output = await callTask(() => stage.join(outputs, context));
            await commit(
              advance(definition, action.stage, markTaskCompleted(snapshot, taskId, output), output),
            );
            break;
          }
        }
      } catch (error) {
        if (error instanceof TaskAborted || controller.signal.aborted) {
          release = false;
          if (!crashed() && lostDuring !== undefined) {
            stats.lost++;
            emit({ type: "lost", workerId, instanceId, taskId, token: claim.token, during: lostDuring });
          }
          return;
        }
        if (error instanceof ClaimLostError) {
          release = false;
          return;
        }
        if (error instanceof InputMismatch) {
          stats.errors++;
          return; // released: the task is retried, hopefully with its right input
        }
        const text = errorText(error);
        if (error instanceof TaskFunctionError) {
          await failWorkflow(task, definition, action, text, claim, checkpoint, lost);
          stats.failed++;
          emit({ type: "failed", workerId, instanceId, taskId, error: text });
        } else {
          // A backend problem: leave the claim to expire so that another attempt happens later.
          release = false;
          emit({ type: "error", workerId, instanceId, taskId, error: text });
        }
      }
    } finally {
      if (heartbeat !== undefined) clearInterval(heartbeat);
      options.crash?.removeEventListener("abort", onCrash);
      if (release && !crashed()) {
        try {
          await backend.releaseTaskClaim(instanceId, taskId, workerId);
          emit({ type: "released", workerId, instanceId, taskId, token: claim.token });
        } catch (error) {
          if (!(error instanceof ClaimLostError || error instanceof NotFoundError)) {
            emit({ type: "error", workerId, instanceId, taskId, error: `release: ${errorText(error)}` });
          }
        }
      }
    }
  }

  /** Creates fan-out child `childId` unless it exists; the create is fenced by a claim on the child. */
  async function ensureChild(
    childId: string,
    hash: string,
    stage: FanOutStage,
    branch: number,
    input: Uint8Array,
    checkpoint: () => void,
  ): Promise<void> {
    const createTask = `${stage.id}:create`;
    let claim: TaskClaim | null = null;
    while (claim === null) {
      checkpoint();
      claim = await backend.claimTask(childId, createTask, workerId, leaseMs);
      if (claim === null) await sleep(5 + Math.random() * 20);
    }
    try {
      try {
        await backend.loadSnapshot(childId);
        return; // created by an earlier attempt
      } catch (error) {
        if (!(error instanceof NotFoundError)) throw error;
      }
      checkpoint();
      const fresh = createSnapshot(childId, hash, { initialInput: input });
      await backend.saveSnapshot(
        updatePosition(fresh, { kind: "AtTask", taskId: taskIds.branch(stage.id, branch) }, fresh.createdAt),
        { claim },
      );
      emit({ type: "child-created", workerId, instanceId: childId, token: claim.token });
    } finally {
      await backend.releaseTaskClaim(childId, createTask, workerId).catch(() => {});
    }
  }

  /**
   * Adds a child's result (or failure) to its parent under the parent's join lock (a claim on
   * "S:lock"; the write is fenced by it). Idempotent: a branch already recorded is skipped. The
   * writer of the last branch moves the parent to its join task. If the parent has not reached
   * the join yet (its spawn commit is still in flight), waits and retries.
   */
  async function recordBranch(
    parentId: string,
    stage: FanOutStage,
    branch: number,
    result: { output: Uint8Array } | { error: string },
    checkpoint: () => void,
    lost: (during: "join-lock") => void,
  ): Promise<void> {
    const lockTask = taskIds.lock(stage.id);
    const branchTaskId = taskIds.branch(stage.id, branch);
    for (let attempt = 0; ; attempt++) {
      checkpoint();
      const lock = await backend.claimTask(parentId, lockTask, workerId, leaseMs);
      if (lock === null) {
        await sleep(2 + Math.random() * 10);
        continue;
      }
      let retry = false;
      try {
        checkpoint();
        const parent = await backend.loadSnapshot(parentId);
        if (isFinished(parent.state)) {
          emit({ type: "branch-already-recorded", workerId, parentId, branchTaskId });
          return;
        }
        const state = parent.state as Extract<WorkflowSnapshot["state"], { kind: "InProgress" }>;
        const position = state.position;
        if (position.kind === "AtTask" && position.taskId === taskIds.spawn(stage.id)) {
          retry = true; // the parent's spawn has created us but not committed yet
        } else if (position.kind !== "AtJoin" || position.joinId !== stage.id) {
          emit({ type: "branch-already-recorded", workerId, parentId, branchTaskId });
          return;
        } else if (position.completedBranches.includes(branchTaskId)) {
          emit({ type: "branch-already-recorded", workerId, parentId, branchTaskId });
          return;
        } else {
          let next: WorkflowSnapshot;
          let joinReady = false;
          if ("error" in result) {
            next = markFailed(parent, `branch ${branch} of ${stage.id} failed: ${result.error}`);
          } else {
            const completedBranches = [...position.completedBranches, branchTaskId];
            joinReady = completedBranches.length === stage.branches.length;
            const nextPosition: ExecutionPosition = joinReady
              ? { kind: "AtTask", taskId: taskIds.join(stage.id) }
              : { kind: "AtJoin", joinId: stage.id, completedBranches };
            // Keep lastCompletedTaskId: branch outputs are read by the join, not chained.
            next = {
              ...parent,
              updatedAt: Date.now(),
              state: {
                ...state,
                position: nextPosition,
                completedTasks: {
                  ...state.completedTasks,
                  [branchTaskId]: { taskId: branchTaskId, output: result.output },
                },
              },
            };
          }
          checkpoint();
          try {
            await backend.saveSnapshot(next, { claim: lock });
          } catch (error) {
            if (error instanceof ClaimLostError) lost("join-lock");
            throw error;
          }
          emit({
            type: "branch-recorded",
            workerId,
            parentId,
            branchTaskId,
            lockToken: lock.token,
            joinReady,
          });
          return;
        }
      } finally {
        await backend.releaseTaskClaim(parentId, lockTask, workerId).catch(() => {});
      }
      if (retry) await sleep(Math.min(200, 5 * 2 ** Math.min(attempt, 6)));
    }
  }

  async function failWorkflow(
    task: ClaimedTask,
    definition: WorkflowDefinition,
    action: TaskAction,
    error: string,
    claim: TaskClaim,
    checkpoint: () => void,
    lost: (during: "join-lock") => void,
  ): Promise<void> {
    checkpoint();
    const snapshot = await backend.loadSnapshot(task.instanceId);
    await backend.saveSnapshot(markFailed(snapshot, `${task.taskId}: ${error}`), { claim });
    const child = parseChildId(task.instanceId);
    if (action.kind === "branch" && child !== undefined) {
      const stage = fanOutStage(definition, action.stage);
      await recordBranch(child.parentId, stage, child.branch, { error }, checkpoint, lost);
    }
  }
}

class InputMismatch extends Error {}

const previewDecoder = new TextDecoder();
/** The first bytes of a value, as text, for events. */
function preview(bytes: Uint8Array): string {
  const head = previewDecoder.decode(bytes.subarray(0, 120));
  return bytes.length > 120 ? `${head}... (${bytes.length} bytes)` : head;
}

/** What a task function threw: fails the workflow (a backend error is retried instead). */
class TaskFunctionError extends Error {}

async function callTask(fn: () => Uint8Array | Promise<Uint8Array>): Promise<Uint8Array> {
  try {
    return await fn();
  } catch (error) {
    if (error instanceof TaskAborted) throw error;
    throw new TaskFunctionError(error instanceof Error ? error.message : String(error), { cause: error });
  }
}

function fanOutStage(definition: WorkflowDefinition, index: number): FanOutStage {
  const stage = definition.stages[index];
  if (stage?.kind !== "fanOut") throw new Error(`stage ${index} of ${definition.hash} is not a fan-out`);
  return stage;
}

/** After stage `index` produced `output` (already recorded in `snapshot`): the next stage, or completion. */
function advance(
  definition: WorkflowDefinition,
  index: number,
  snapshot: WorkflowSnapshot,
  output: Uint8Array,
): WorkflowSnapshot {
  const next = definition.stages[index + 1];
  if (next === undefined) return markCompleted(snapshot, output, snapshot.updatedAt);
  return updatePosition(snapshot, { kind: "AtTask", taskId: stageEntryTaskId(next) }, snapshot.updatedAt);
}
