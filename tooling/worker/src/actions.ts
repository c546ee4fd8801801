// What the worker does for each kind of task (see TaskAction): run the function, then the fenced
// commit that records the result and advances the workflow. Steps, branches, joins and the task
// after a wait commit with one completeTasks item carrying the next step (which also releases the
// claim: their handlers resolve "released"); the fan-out's spawn and notify, which write other
// instances too, load and save the snapshot.
import {
  getTaskResult,
  markCompleted,
  type NextStep,
  nextTaskInput,
  updatePosition,
} from "@sayiir/persistence-core";
import { commit, commitStep, loadForCommit } from "./commit.ts";
import {
  childInstanceId,
  entryPosition,
  parseChildId,
  stageSchedule,
  type TaskAction,
  taskIds,
  type WorkflowDefinition,
} from "./definition.ts";
import { ensureChild, fanOutStage, recordBranch } from "./fan-out.ts";
import { callTask, type TaskRun } from "./task-run.ts";

/** Resolves "released" when its commit released the claim (completeTasks), else the caller releases it. */
type Handler<K extends TaskAction["kind"]> = (
  run: TaskRun,
  definition: WorkflowDefinition,
  action: Extract<TaskAction, { kind: K }>,
) => Promise<"released" | undefined>;

/** A step: run it, commit its output and the next stage (or completion) in one write. */
const step: Handler<"step"> = async (run, definition, action) => {
  const stage = definition.stages[action.stage];
  if (stage?.kind !== "step") throw new Error(`bad stage for ${run.task.taskId}`);
  const output = await callTask(() => stage.run(run.task.input, run.context));
  await commitStep(run, action, output, nextStep(definition, action.stage, output));
  return "released";
};

/** A fan-out's spawn: create every child (idempotent), then move the parent to its join. */
const spawn: Handler<"spawn"> = async (run, definition, action) => {
  const stage = fanOutStage(definition, action.stage);
  const snapshot = await loadForCommit(run);
  for (let i = 0; i < stage.branches.length; i++) {
    await ensureChild(run, childInstanceId(run.task.instanceId, stage.id, i), definition.hash, stage, i);
  }
  await commit(
    run,
    action,
    updatePosition(snapshot, { kind: "AtJoin", joinId: stage.id, completedBranches: [] }),
  );
  return undefined;
};

/** A branch (in its child instance): run it, commit its output and move the child to notify. */
const branch: Handler<"branch"> = async (run, definition, action) => {
  const stage = fanOutStage(definition, action.stage);
  const branchFn = stage.branches[action.branch]!;
  const output = await callTask(() => branchFn(run.task.input, run.context));
  const notify = {
    kind: "AtTask" as const,
    taskId: taskIds.notify(stage.id),
    ...stageSchedule(definition, stage),
  };
  await commitStep(run, action, output, notify);
  return "released";
};

/** A child's notify: record the branch output in the parent, then complete the child. */
const notify: Handler<"notify"> = async (run, definition, action) => {
  const { instanceId } = run.task;
  const stage = fanOutStage(definition, action.stage);
  const child = parseChildId(instanceId);
  if (child === undefined) throw new Error(`${instanceId} is not a fan-out child`);
  // The input of notify is the branch's committed output (checked against the snapshot by load).
  const snapshot = await loadForCommit(run);
  await recordBranch(run, child.parentId, stage, child.branch, { output: run.task.input });
  await commit(run, action, markCompleted(snapshot, run.task.input));
  return undefined;
};

/** A fan-out's join: run it on the recorded branch outputs, commit and move on. */
const join: Handler<"join"> = async (run, definition, action) => {
  const { instanceId } = run.task;
  const stage = fanOutStage(definition, action.stage);
  const snapshot = await loadForCommit(run);
  const outputs = stage.branches.map((_, i) => {
    const output = getTaskResult(snapshot, taskIds.branch(stage.id, i));
    if (output === undefined) throw new Error(`${instanceId}: branch ${i} of ${stage.id} has no output`);
    return output;
  });
  const output = await callTask(() => stage.join(outputs, run.context));
  await commitStep(run, action, output, nextStep(definition, action.stage, output));
  return "released";
};

/**
 * The task after a wait, ready because its event arrived or its wait timed out: run the stage's
 * function on the event's payload (or its timeout function on the stage input), then one fenced
 * write that records the output, moves on and consumes the event (the event is consumed exactly
 * when the workflow moves past the wait; a worker that dies before consumes nothing). The
 * snapshot is loaded first for the stage input (the output before the wait) and the input check.
 */
const afterEvent: Handler<"afterEvent"> = async (run, definition, action) => {
  const stage = definition.stages[action.stage];
  if (stage?.kind !== "waitForEvent") throw new Error(`bad stage for ${run.task.taskId}`);
  // Loaded first: the timeout path's input, and the previous output for the event path, are in it.
  const stageInput = nextTaskInput(await loadForCommit(run));
  const context = { ...run.context, stageInput };
  const output =
    run.task.event !== undefined
      ? await callTask(() => stage.run(run.task.input, context))
      : await callTask(() => stage.onTimeout(stageInput, context));
  await commitStep(run, action, output, nextStep(definition, action.stage, output));
  return "released";
};

const HANDLERS: { [K in TaskAction["kind"]]: Handler<K> } = { step, spawn, branch, notify, join, afterEvent };

/** Runs the task's action to its commit (throws what the action or the backend threw). */
export function runAction(
  run: TaskRun,
  definition: WorkflowDefinition,
  action: TaskAction,
): Promise<"released" | undefined> {
  return (HANDLERS[action.kind] as Handler<TaskAction["kind"]>)(run, definition, action);
}

/**
 * After stage `index` produced `output`: the next stage's position (its first task, or the wait,
 * whose timeout counts from now), or completion with that output.
 */
function nextStep(definition: WorkflowDefinition, index: number, output: Uint8Array): NextStep {
  const next = definition.stages[index + 1];
  if (next === undefined) return { kind: "Completed", finalOutput: output };
  return entryPosition(next, Date.now(), definition, index + 1);
}
