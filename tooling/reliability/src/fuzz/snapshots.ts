// The snapshots a fuzzed save writes, built from a Shape. updatedAt is fixed in 2100+ (so
// saveTaskResult's max(old, now) keeps it and discovery order is clock-free); a runAt, retryAt or
// wait timeout is decades ago, in 2100, or "soon": the step's `soon` (clock.ts: a short time
// ahead, the same value on both lanes, passed on every clock once an elapse has run).
import type { ExecutionPosition, NextStep, TaskResult, WorkflowSnapshot } from "@sayiir/persistence-core";
import { finished, inProgress } from "@sayiir/persistence-core/conformance";
import {
  EVENTS,
  QUEUES,
  type Schedule,
  type Shape,
  type Step,
  TASKS,
  type Task,
  type Timeout,
  type WaitPosition,
  type When,
} from "./ops.ts";

/** 2100-01-01: later than any clock a run sees, so saveTaskResult leaves updatedAt alone. */
export const FUTURE = 4_102_444_800_000;
/** A wait timeout decades in the past (due at once by any clock). */
const PAST_TIMEOUT = 1_000_000;
/** A runAt decades in the past (due at once); a future one is in 2100, never due during a run. */
const PAST_RUN_AT = 2_000_000;
/** A retryAt of failTasks decades in the past (due at once); a future one is in 2100. */
const PAST_RETRY_AT = 3_000_000;
/** When a saved earlier failure happened (fixed, long ago). */
const SAVED_FAILED_AT = 4_000_000;

/** How far past the step's `soon` a soon time may be (so that soon times of one step differ). */
export const SOON_SPREAD_MS = 80;

/** A soon time: the step's `soon` plus a few ms per `tag`, so one step's soon times differ. */
function soonAt(soon: number, tag: number): number {
  return soon + (tag % 8) * 10;
}

/** A failTasks retryAt: null, decades ago, soon or in 2100 (`tag` keeps values of one sequence apart). */
export function retryAtOf(when: When, tag: number, soon: number): number | null {
  if (when === "none") return null;
  if (when === "soon") return soonAt(soon, tag);
  return (when === "past" ? PAST_RETRY_AT : FUTURE + 3_000_000) + tag * 1000;
}

/** A runAt: decades ago, soon or in 2100. */
function runAtOf(when: Exclude<When, "none">, age: number, soon: number): number {
  if (when === "soon") return soonAt(soon, age);
  return (when === "past" ? PAST_RUN_AT : FUTURE + 2_000_000) + age * 1000;
}

/** The schedule fields of a position (only those the shape sets). */
function scheduleFields(schedule: Schedule, age: number, withRunAt: boolean, soon: number) {
  return {
    ...(withRunAt && schedule.runAt !== "none" ? { runAt: runAtOf(schedule.runAt, age, soon) } : {}),
    ...(schedule.priority === 0 ? {} : { priority: schedule.priority }),
    ...(schedule.queue === null ? {} : { queue: QUEUES[schedule.queue] }),
  };
}

export function taskId(t: Task): string {
  return TASKS[t];
}

export function outBytes(n: number, tag: number): Uint8Array {
  return Uint8Array.of(n, tag, 255 - n);
}

function timeoutAt(timeout: Timeout, age: number, soon: number): number | null {
  if (timeout === "none") return null;
  if (timeout === "soon") return soonAt(soon, age + 4);
  return (timeout === "past" ? PAST_TIMEOUT : FUTURE + 1_000_000) + age * 1000;
}

function positionOf(position: WaitPosition, age: number, soon: number): ExecutionPosition {
  if (position.at === "task") return { kind: "AtTask", taskId: taskId(position.task) };
  return {
    kind: "AwaitingEvent",
    eventName: EVENTS[position.event],
    nextTaskId: taskId(position.next),
    timeoutAt: timeoutAt(position.timeout, age, soon),
  };
}

function completedOf(done: Task[], age: number): Record<string, TaskResult> {
  const tasks: Record<string, TaskResult> = {};
  for (const t of done) tasks[taskId(t)] = { taskId: taskId(t), output: outBytes(t * 10 + age, 1) };
  return tasks;
}

/** The snapshot a save of `shape` writes; `soon`: the step's soon time (clock.ts). */
export function buildSnapshot(instanceId: string, shape: Shape, age: number, soon: number): WorkflowSnapshot {
  const updatedAt = FUTURE + age * 1000;
  const completed = (done: Task[], position?: { task: Task; spent: boolean }) =>
    Object.fromEntries(
      done
        .filter((t) => position === undefined || position.spent || t !== position.task)
        .map((t) => [taskId(t), outBytes(t * 10 + age, 1)] as const),
    );
  const input = (yes: boolean) => (yes ? { initialInput: outBytes(age, 9) } : {});
  switch (shape.kind) {
    case "notStarted":
      return inProgress(instanceId, { updatedAt, definitionHash: `h-${age}` });
    case "atTask": {
      const snapshot = inProgress(instanceId, {
        updatedAt,
        completed: completed(shape.done, { task: shape.task, spent: shape.spent }),
        definitionHash: `h-${age}`,
        position: {
          kind: "AtTask",
          taskId: taskId(shape.task),
          ...scheduleFields(shape.schedule, age, true, soon),
        },
        ...input(shape.input),
      });
      if (shape.attempts === 0) return snapshot;
      const attempts = { count: shape.attempts, lastError: `saved ${age}`, lastFailedAt: SAVED_FAILED_AT };
      return { ...snapshot, attempts: { [taskId(shape.task)]: attempts } };
    }
    case "awaiting":
      return inProgress(instanceId, {
        updatedAt,
        completed: completed(shape.done, { task: shape.next, spent: shape.spent }),
        definitionHash: `h-${age}`,
        position: {
          kind: "AwaitingEvent",
          eventName: EVENTS[shape.event],
          nextTaskId: taskId(shape.next),
          timeoutAt: timeoutAt(shape.timeout, age, soon),
          ...scheduleFields(shape.schedule, age, false, soon),
        },
        ...input(shape.input),
      });
    case "fork":
      return inProgress(instanceId, {
        updatedAt,
        completed: completed(shape.done),
        position: { kind: "AtFork", branchId: "fork", completedBranches: shape.done.map(taskId) },
      });
    case "paused": {
      const base = inProgress(instanceId, { updatedAt, definitionHash: `h-${age}` });
      const last = shape.done[shape.done.length - 1];
      return {
        ...base,
        state: {
          kind: "Paused",
          reason: shape.reason ? `why ${age}` : null,
          requestedBy: shape.reason ? "ops" : null,
          pausedAt: updatedAt - 500,
          position: positionOf(shape.position, age, soon),
          completedTasks: completedOf(shape.done, age),
          lastCompletedTaskId: last === undefined ? null : taskId(last),
        },
      };
    }
    case "cancelled": {
      const base = inProgress(instanceId, { updatedAt, definitionHash: `h-${age}` });
      return {
        ...base,
        state: {
          kind: "Cancelled",
          reason: shape.reason ? `stop ${age}` : null,
          requestedBy: shape.reason ? "api" : null,
          cancelledAt: updatedAt - 500,
          completedTasks: completedOf(shape.done, age),
          interruptedAtTaskId: shape.interrupted === null ? null : taskId(shape.interrupted),
        },
      };
    }
    case "completed":
      return {
        ...finished(instanceId, { kind: "Completed", finalOutput: outBytes(shape.out, 2) }),
        updatedAt,
      };
    case "failed":
      return { ...finished(instanceId, { kind: "Failed", error: shape.message }), updatedAt };
  }
}

/** The `next` of a fuzzed completion (the same times as the shapes: runAt, timeoutAt). */
export function nextOf(step: Step, age: number, soon: number): NextStep {
  switch (step.to) {
    case "task":
      return { kind: "AtTask", taskId: taskId(step.task), ...scheduleFields(step.schedule, age, true, soon) };
    case "wait":
      return {
        kind: "AwaitingEvent",
        eventName: EVENTS[step.event],
        nextTaskId: taskId(step.next),
        timeoutAt: timeoutAt(step.timeout, age, soon),
        ...scheduleFields(step.schedule, age, false, soon),
      };
    case "completed":
      return { kind: "Completed", finalOutput: outBytes(step.out, 2) };
    case "failed":
      return { kind: "Failed", error: step.message };
  }
}

/** The shape a landed step leaves (what the lane remembers of the last write: its wait's name). */
export function stepShape(step: Step): Shape {
  const none = { done: [], spent: false, input: false };
  switch (step.to) {
    case "task":
      return { kind: "atTask", task: step.task, schedule: step.schedule, attempts: 0, ...none };
    case "wait":
      return {
        kind: "awaiting",
        event: step.event,
        next: step.next,
        timeout: step.timeout,
        schedule: step.schedule,
        ...none,
      };
    case "completed":
      return { kind: "completed", out: step.out };
    case "failed":
      return { kind: "failed", message: step.message };
  }
}
