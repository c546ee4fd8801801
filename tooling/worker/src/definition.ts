/**
 * Workflow definitions for the reference worker loop.
 *
 * A workflow is a list of stages run in order: a `step` (one task), a `fanOut` (branches run
 * concurrently as child workflow instances, then a join task combines their outputs) or a
 * `waitForEvent` (the workflow waits for an external event, then runs one task on its payload, or
 * a timeout task once the wait times out). Each stage's output is the next stage's input. The
 * definition is identified by its `hash`, which is the snapshot's `definitionHash`.
 */
import type { EventRef, ExecutionPosition, TaskSchedule } from "@sayiir/persistence-core";

/** What a task function gets besides its input bytes. */
export interface TaskContext {
  instanceId: string;
  taskId: string;
  workerId: string;
  /**
   * Aborted when the task must stop: the claim is lost (heartbeat refused, e.g. the workflow was
   * cancelled), the workflow was paused (the heartbeat says so), or the worker crashes.
   */
  signal: AbortSignal;
  /** Which run of the task this is: 1 on the first, n + 1 after n failed runs (failTasks, takeovers). */
  attempt: number;
  /** The task after a wait: the event it runs on (its input is that event's payload). */
  event?: EventRef;
  /** The task after a wait: true when the wait timed out with no event. */
  timedOut?: boolean;
  /** The task after a wait: the output of the stage before the wait (or the workflow's input). */
  stageInput?: Uint8Array;
}

export type TaskFn = (input: Uint8Array, context: TaskContext) => Uint8Array | Promise<Uint8Array>;
export type JoinFn = (branchOutputs: Uint8Array[], context: TaskContext) => Uint8Array | Promise<Uint8Array>;

/**
 * Retries of a step whose function throws: up to `attempts` runs in all; after failed run n the
 * task runs again at `backoffMs * 2^(n-1)` (capped at `maxBackoffMs`) from then, a durable
 * schedule (failTasks with retryAt). After the last, the workflow fails.
 */
export interface RetryPolicy {
  attempts: number;
  backoffMs: number;
  maxBackoffMs?: number;
}

/** How a stage's tasks are scheduled: priority 1 (first) .. 5 (last) and queue (see TaskSchedule). */
export type StageSchedule = Pick<TaskSchedule, "priority" | "queue">;

export interface StepOptions extends StageSchedule {
  retry?: RetryPolicy;
}

export interface StepStage {
  kind: "step";
  id: string;
  run: TaskFn;
  options?: StepOptions;
}

/**
 * A durable sleep: the workflow moves to the next stage's first task with runAt = now + ms, so
 * the store hands it out no earlier, whatever happens to the workers meanwhile. It runs no task
 * of its own; it must be followed by a step or a fan-out.
 */
export interface SleepStage {
  kind: "sleep";
  id: string;
  ms: number;
}

export interface FanOutStage {
  kind: "fanOut";
  id: string;
  branches: TaskFn[];
  join: JoinFn;
}

/**
 * Waits for an event named `eventName` (sent with `sendEvent`), then runs `run` on its payload
 * (the previous stage's output is `context.stageInput`); if `timeoutMs` passes first (counted from
 * when the workflow reaches the wait), runs `onTimeout` on the previous stage's output instead.
 * `timeoutMs: null` waits for ever.
 */
export interface WaitStage {
  kind: "waitForEvent";
  id: string;
  eventName: string;
  timeoutMs: number | null;
  run: TaskFn;
  onTimeout: TaskFn;
}

export type Stage = StepStage | FanOutStage | WaitStage | SleepStage;

export interface WorkflowDefinition {
  hash: string;
  stages: Stage[];
  /** The schedule of every task of the workflow (a step's own options override it). */
  schedule?: StageSchedule;
}

/** What the worker does for a task id (derived from the definition). */
export type TaskAction =
  | { kind: "step"; stage: number }
  | { kind: "spawn"; stage: number }
  | { kind: "branch"; stage: number; branch: number }
  | { kind: "notify"; stage: number; branch: number }
  | { kind: "join"; stage: number }
  | { kind: "afterEvent"; stage: number };

export interface CompiledWorkflow {
  definition: WorkflowDefinition;
  actions: Map<string, TaskAction>;
}

export function step(id: string, run: TaskFn, options?: StepOptions): StepStage {
  const retry = options?.retry;
  if (
    retry !== undefined &&
    !(Number.isSafeInteger(retry.attempts) && retry.attempts >= 1 && retry.backoffMs >= 0)
  ) {
    throw new TypeError(`step ${id}: retry needs attempts >= 1 and backoffMs >= 0`);
  }
  return options === undefined ? { kind: "step", id, run } : { kind: "step", id, run, options };
}

/** A durable sleep of `ms` before the next stage (see SleepStage). */
export function sleep(id: string, ms: number): SleepStage {
  if (!(Number.isSafeInteger(ms) && ms >= 0))
    throw new TypeError(`sleep ${id}: ms must be a non-negative integer`);
  return { kind: "sleep", id, ms };
}

/** When failed run `attempt` (1-based) of a step may run again, from `now`. */
export function retryAt(policy: RetryPolicy, attempt: number, now: number): number {
  const backoff = policy.backoffMs * 2 ** Math.max(0, attempt - 1);
  return now + Math.min(policy.maxBackoffMs ?? Number.POSITIVE_INFINITY, backoff);
}

export function fanOut(id: string, branches: TaskFn[], join: JoinFn): FanOutStage {
  return { kind: "fanOut", id, branches, join };
}

/**
 * "Wait for event `eventName`, timeout `timeoutMs`, then run `run`": `run` gets the event's payload
 * (and `context.event`, `context.stageInput`); `onTimeout` (default: pass the previous output
 * through) gets the previous stage's output (and `context.timedOut`) when the wait times out first.
 */
export function waitForEvent(
  id: string,
  eventName: string,
  options: { timeoutMs: number | null; onTimeout?: TaskFn },
  run: TaskFn,
): WaitStage {
  const { timeoutMs, onTimeout = (input) => input } = options;
  if (timeoutMs !== null && !(Number.isSafeInteger(timeoutMs) && timeoutMs >= 0)) {
    throw new TypeError(`wait ${id}: timeoutMs must be a non-negative integer or null`);
  }
  return { kind: "waitForEvent", id, eventName, timeoutMs, run, onTimeout };
}

export function defineWorkflow(hash: string, stages: Stage[], schedule?: StageSchedule): WorkflowDefinition {
  if (stages.length === 0) throw new TypeError(`workflow ${hash}: at least one stage`);
  const ids = new Set<string>();
  stages.forEach((stage, index) => {
    const next = stages[index + 1];
    if (stage.kind === "sleep" && next?.kind !== "step" && next?.kind !== "fanOut") {
      throw new TypeError(`workflow ${hash}: sleep ${stage.id} must be followed by a step or a fan-out`);
    }
  });
  for (const stage of stages) {
    if (stage.id === "" || /[#:]/.test(stage.id)) {
      throw new TypeError(
        `workflow ${hash}: stage id ${JSON.stringify(stage.id)} must be non-empty without '#' or ':'`,
      );
    }
    if (ids.has(stage.id)) throw new TypeError(`workflow ${hash}: duplicate stage id ${stage.id}`);
    ids.add(stage.id);
    if (stage.kind === "fanOut" && stage.branches.length === 0) {
      throw new TypeError(`workflow ${hash}: fan-out ${stage.id} needs at least one branch`);
    }
  }
  return schedule === undefined ? { hash, stages } : { hash, stages, schedule };
}

// Task ids. Steps use their stage id; fan-out stage S uses "S:spawn" and "S:join" on the parent
// and "S:branch:i" then "S:notify" on child i; "S:lock" is the parent's join lock (a claim only).
export const taskIds = {
  spawn: (stage: string) => `${stage}:spawn`,
  join: (stage: string) => `${stage}:join`,
  lock: (stage: string) => `${stage}:lock`,
  branch: (stage: string, i: number) => `${stage}:branch:${i}`,
  notify: (stage: string) => `${stage}:notify`,
};

/** Child instance i of fan-out stage S of `parentId`. Parsed back with parseChildId. */
export function childInstanceId(parentId: string, stage: string, branch: number): string {
  return `${parentId}#${stage}:${branch}`;
}

export function parseChildId(
  childId: string,
): { parentId: string; stage: string; branch: number } | undefined {
  const hash = childId.lastIndexOf("#");
  if (hash < 0) return undefined;
  const [stage, branch] = childId.slice(hash + 1).split(":");
  if (stage === undefined || branch === undefined || !/^\d+$/.test(branch)) return undefined;
  return { parentId: childId.slice(0, hash), stage, branch: Number(branch) };
}

/** The task id a workflow starts at. */
export function firstTaskId(definition: WorkflowDefinition): string {
  return stageEntryTaskId(definition.stages.find((stage) => stage.kind !== "sleep")!);
}

export function stageEntryTaskId(stage: Stage): string {
  return stage.kind === "fanOut" ? taskIds.spawn(stage.id) : stage.id;
}

/** The priority and queue of a stage's tasks: the step's own, else the workflow's (absent fields stay absent). */
export function stageSchedule(
  definition: WorkflowDefinition | undefined,
  stage: Stage | undefined,
): StageSchedule {
  const own = stage?.kind === "step" ? stage.options : undefined;
  const priority = own?.priority ?? definition?.schedule?.priority;
  const queue = own?.queue ?? definition?.schedule?.queue;
  return { ...(priority === undefined ? {} : { priority }), ...(queue === undefined ? {} : { queue }) };
}

/**
 * The position a workflow takes when it reaches `stage` at `now`: its first task, or for a wait
 * the AwaitingEvent position whose timeout counts from now; with the stage's priority and queue.
 * A sleep: the next stage's first task with runAt = now + ms (pass `definition` and the index of
 * the stage: `entryPosition(definition.stages[i], now, definition, i)`).
 */
export function entryPosition(
  stage: Stage,
  now: number,
  definition?: WorkflowDefinition,
  index?: number,
): ExecutionPosition {
  if (stage.kind === "sleep") {
    const next = index === undefined ? undefined : definition?.stages[index + 1];
    if (next === undefined || next.kind === "sleep" || next.kind === "waitForEvent") {
      throw new TypeError(`sleep ${stage.id}: entryPosition needs the definition and the stage's index`);
    }
    return {
      ...entryPosition(next, now, definition, index! + 1),
      runAt: now + stage.ms,
    } as ExecutionPosition;
  }
  const schedule = stageSchedule(definition, stage);
  if (stage.kind !== "waitForEvent") return { kind: "AtTask", taskId: stageEntryTaskId(stage), ...schedule };
  return {
    kind: "AwaitingEvent",
    eventName: stage.eventName,
    nextTaskId: stage.id,
    timeoutAt: stage.timeoutMs === null ? null : now + stage.timeoutMs,
    ...schedule,
  };
}

export function compileWorkflow(definition: WorkflowDefinition): CompiledWorkflow {
  const actions = new Map<string, TaskAction>();
  definition.stages.forEach((stage, index) => {
    if (stage.kind === "sleep") return; // no task: the next stage's first task waits for its runAt
    if (stage.kind === "step") {
      actions.set(stage.id, { kind: "step", stage: index });
    } else if (stage.kind === "waitForEvent") {
      actions.set(stage.id, { kind: "afterEvent", stage: index });
    } else {
      actions.set(taskIds.spawn(stage.id), { kind: "spawn", stage: index });
      actions.set(taskIds.join(stage.id), { kind: "join", stage: index });
      actions.set(taskIds.notify(stage.id), { kind: "notify", stage: index, branch: -1 });
      stage.branches.forEach((_, branch) => {
        actions.set(taskIds.branch(stage.id, branch), { kind: "branch", stage: index, branch });
      });
    }
  });
  return { definition, actions };
}

/**
 * What the waits of a workflow get in `evaluate`: per event name, the payload of the event it
 * receives, or null when the wait times out. A wait whose name is missing times out.
 */
export type EvaluatedEvents = Readonly<Record<string, Uint8Array | null>>;

/**
 * Runs a definition directly, without a backend: the output a worker fleet must produce.
 * Task functions must be deterministic for this to be the expected output.
 */
export async function evaluate(
  definition: WorkflowDefinition,
  input: Uint8Array,
  events: EvaluatedEvents = {},
): Promise<Uint8Array> {
  const signal = new AbortController().signal;
  let current = input;
  for (const stage of definition.stages) {
    const context = {
      instanceId: "(evaluate)",
      taskId: stage.id,
      workerId: "(evaluate)",
      signal,
      attempt: 1,
    };
    if (stage.kind === "sleep") continue;
    if (stage.kind === "step") {
      current = await evaluateStep(stage, current, context);
    } else if (stage.kind === "waitForEvent") {
      const payload = events[stage.eventName] ?? null;
      const waited = { ...context, stageInput: current };
      current =
        payload === null
          ? await stage.onTimeout(current, { ...waited, timedOut: true })
          : await stage.run(payload, { ...waited, event: { eventName: stage.eventName, sequence: 1 } });
    } else {
      const branchInput = current;
      const outputs = await Promise.all(stage.branches.map((branch) => branch(branchInput, context)));
      current = await stage.join(outputs, context);
    }
  }
  return current;
}

/** A step with its retries: runs 1.. up to the policy's attempts until one succeeds (the last error is thrown). */
async function evaluateStep(stage: StepStage, input: Uint8Array, context: TaskContext): Promise<Uint8Array> {
  const attempts = stage.options?.retry?.attempts ?? 1;
  for (let attempt = 1; ; attempt++) {
    try {
      return await stage.run(input, { ...context, attempt });
    } catch (error) {
      if (attempt >= attempts) throw error;
    }
  }
}

/** Number of tasks a workflow runs (parent and children, system tasks included). */
export function taskCount(definition: WorkflowDefinition): number {
  let count = 0;
  for (const stage of definition.stages) {
    // spawn + join on the parent, branch + notify on each child; a sleep runs no task
    count += stage.kind === "fanOut" ? 2 + 2 * stage.branches.length : stage.kind === "sleep" ? 0 : 1;
  }
  return count;
}
