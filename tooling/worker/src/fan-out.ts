// Fan-out and join across instances: creating a child under a claim on its pseudo task
// "S:create", recording a branch's result (or failure) in the parent under the parent's join lock
// (a claim on "S:lock" that fences the write), and failing a workflow (which, for a branch, fails
// the parent too). See the README's "Workflows and the fan-out model".
import {
  ClaimLostError,
  createSnapshot,
  type ExecutionPosition,
  isFinished,
  markFailed,
  NotFoundError,
  type TaskClaim,
  updatePosition,
  type WorkflowSnapshot,
} from "@sayiir/persistence-core";
import { sleep } from "./context.ts";
import {
  type FanOutStage,
  parseChildId,
  type StageSchedule,
  stageSchedule,
  type TaskAction,
  taskIds,
  type WorkflowDefinition,
} from "./definition.ts";
import type { TaskRun } from "./task-run.ts";

/** A branch's outcome, as recorded in its parent. */
export type BranchResult = { output: Uint8Array } | { error: string };

/** The fan-out stage at `index` of `definition` (throws if it is not one). */
export function fanOutStage(definition: WorkflowDefinition, index: number): FanOutStage {
  const stage = definition.stages[index];
  if (stage?.kind !== "fanOut") throw new Error(`stage ${index} of ${definition.hash} is not a fan-out`);
  return stage;
}

/** Creates fan-out child `childId` unless it exists; the create is fenced by a claim on the child. */
export async function ensureChild(
  run: TaskRun,
  childId: string,
  hash: string,
  stage: FanOutStage,
  branch: number,
): Promise<void> {
  const { backend, workerId, leaseMs } = run.worker;
  const createTask = `${stage.id}:create`;
  let claim: TaskClaim | null = null;
  while (claim === null) {
    run.checkpoint();
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
    run.checkpoint();
    const fresh = createSnapshot(childId, hash, { initialInput: run.task.input });
    const position: ExecutionPosition = {
      kind: "AtTask",
      taskId: taskIds.branch(stage.id, branch),
      ...stageSchedule(run.worker.compiled.get(hash)?.definition, stage),
    };
    await backend.saveSnapshot(updatePosition(fresh, position, fresh.createdAt), { claim });
    run.worker.emit({ type: "child-created", workerId, instanceId: childId, token: claim.token });
  } finally {
    await backend.releaseTaskClaim(childId, createTask, workerId).catch(() => {});
  }
}

/** What to do with a branch, given its parent as loaded under the join lock. */
type BranchStep =
  | { kind: "already" }
  | { kind: "retry" }
  | { kind: "write"; next: WorkflowSnapshot; joinReady: boolean };

/**
 * Decides the parent's update for branch `branch` of `stage` (no I/O). A paused parent still
 * takes a branch's output (a result landing, like saveTaskResult; it stays Paused and its join
 * runs after resume), but not a branch's failure (a paused workflow cannot be failed): that waits.
 */
function branchStep(
  parent: WorkflowSnapshot,
  stage: FanOutStage,
  branch: number,
  result: BranchResult,
  schedule: StageSchedule = {},
): BranchStep {
  if (isFinished(parent.state)) return { kind: "already" };
  const state = parent.state as Extract<WorkflowSnapshot["state"], { kind: "InProgress" | "Paused" }>;
  const position = state.position;
  const branchTaskId = taskIds.branch(stage.id, branch);
  // The parent's spawn has created us but not committed yet.
  if (position.kind === "AtTask" && position.taskId === taskIds.spawn(stage.id)) return { kind: "retry" };
  if (position.kind !== "AtJoin" || position.joinId !== stage.id) return { kind: "already" };
  if (position.completedBranches.includes(branchTaskId)) return { kind: "already" };
  if ("error" in result && state.kind === "Paused") return { kind: "retry" };
  if ("error" in result) {
    const next = markFailed(parent, `branch ${branch} of ${stage.id} failed: ${result.error}`);
    return { kind: "write", next, joinReady: false };
  }
  const completedBranches = [...position.completedBranches, branchTaskId];
  const joinReady = completedBranches.length === stage.branches.length;
  const nextPosition: ExecutionPosition = joinReady
    ? { kind: "AtTask", taskId: taskIds.join(stage.id), ...schedule }
    : { kind: "AtJoin", joinId: stage.id, completedBranches };
  // Keep lastCompletedTaskId: branch outputs are read by the join, not chained.
  const completedTasks = {
    ...state.completedTasks,
    [branchTaskId]: { taskId: branchTaskId, output: result.output },
  };
  const next = {
    ...parent,
    updatedAt: Date.now(),
    state: { ...state, position: nextPosition, completedTasks },
  };
  return { kind: "write", next, joinReady };
}

/**
 * Adds a child's result (or failure) to its parent under the parent's join lock (a claim on
 * "S:lock"; the write is fenced by it). Idempotent: a branch already recorded is skipped. The
 * writer of the last branch moves the parent to its join task. If the parent has not reached
 * the join yet (its spawn commit is still in flight), waits and retries.
 */
export async function recordBranch(
  run: TaskRun,
  parentId: string,
  stage: FanOutStage,
  branch: number,
  result: BranchResult,
): Promise<void> {
  const { backend, workerId, leaseMs } = run.worker;
  const lockTask = taskIds.lock(stage.id);
  const branchTaskId = taskIds.branch(stage.id, branch);
  for (let attempt = 0; ; attempt++) {
    run.checkpoint();
    const lock = await backend.claimTask(parentId, lockTask, workerId, leaseMs);
    if (lock === null) {
      await sleep(2 + Math.random() * 10);
      continue;
    }
    let retry = false;
    try {
      run.checkpoint();
      const parent = await backend.loadSnapshot(parentId);
      const schedule = stageSchedule(run.worker.compiled.get(parent.definitionHash)?.definition, stage);
      const step = branchStep(parent, stage, branch, result, schedule);
      if (step.kind === "retry") retry = true;
      else if (step.kind === "already") {
        run.worker.emit({ type: "branch-already-recorded", workerId, parentId, branchTaskId });
        return;
      } else {
        await writeBranch(run, parentId, branchTaskId, lock, step);
        return;
      }
    } finally {
      await backend.releaseTaskClaim(parentId, lockTask, workerId).catch(() => {});
    }
    if (retry) await sleep(Math.min(200, 5 * 2 ** Math.min(attempt, 6)));
  }
}

/** The fenced write of the parent under the join lock. */
async function writeBranch(
  run: TaskRun,
  parentId: string,
  branchTaskId: string,
  lock: TaskClaim,
  step: Extract<BranchStep, { kind: "write" }>,
): Promise<void> {
  run.checkpoint();
  try {
    await run.worker.backend.saveSnapshot(step.next, { claim: lock });
  } catch (error) {
    if (error instanceof ClaimLostError) run.lost("join-lock");
    throw error;
  }
  run.worker.emit({
    type: "branch-recorded",
    workerId: run.worker.workerId,
    parentId,
    branchTaskId,
    lockToken: lock.token,
    joinReady: step.joinReady,
  });
}

/** Fails the task's workflow (fenced by its claim); a failed branch also fails its parent. */
export async function failWorkflow(
  run: TaskRun,
  definition: WorkflowDefinition,
  action: TaskAction,
  error: string,
): Promise<void> {
  const { backend } = run.worker;
  const { task } = run;
  run.checkpoint();
  const snapshot = await backend.loadSnapshot(task.instanceId);
  if (snapshot.state.kind === "Paused") {
    // A paused workflow cannot be failed (nor moved on): stop; the task runs again after resume.
    run.paused("load");
    run.checkpoint();
  }
  await backend.saveSnapshot(markFailed(snapshot, `${task.taskId}: ${error}`), { claim: task.claim });
  const child = parseChildId(task.instanceId);
  if (action.kind === "branch" && child !== undefined) {
    const stage = fanOutStage(definition, action.stage);
    await recordBranch(run, child.parentId, stage, child.branch, { error });
  }
}
