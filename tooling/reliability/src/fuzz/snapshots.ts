// The snapshots a fuzzed save writes, built from a Shape. Every timestamp is fixed and far from
// the clock (updatedAt in 2100+, so saveTaskResult's max(old, now) keeps it and discovery order is
// clock-free; wait timeouts decades ago or in 2100), so results never depend on timing.
import type { ExecutionPosition, TaskResult, WorkflowSnapshot } from "@sayiir/persistence-core";
import { atTask, awaiting, finished, inProgress } from "@sayiir/persistence-core/conformance";
import { EVENTS, type Shape, TASKS, type Task, type Timeout, type WaitPosition } from "./ops.ts";

/** 2100-01-01: later than any clock a run sees, so saveTaskResult leaves updatedAt alone. */
export const FUTURE = 4_102_444_800_000;
/** A wait timeout decades in the past (due at once by any clock). */
const PAST_TIMEOUT = 1_000_000;

export function taskId(t: Task): string {
  return TASKS[t];
}

export function outBytes(n: number, tag: number): Uint8Array {
  return Uint8Array.of(n, tag, 255 - n);
}

function timeoutAt(timeout: Timeout, age: number): number | null {
  if (timeout === "none") return null;
  return (timeout === "past" ? PAST_TIMEOUT : FUTURE + 1_000_000) + age * 1000;
}

function positionOf(position: WaitPosition, age: number): ExecutionPosition {
  if (position.at === "task") return { kind: "AtTask", taskId: taskId(position.task) };
  return {
    kind: "AwaitingEvent",
    eventName: EVENTS[position.event],
    nextTaskId: taskId(position.next),
    timeoutAt: timeoutAt(position.timeout, age),
  };
}

function completedOf(done: Task[], age: number): Record<string, TaskResult> {
  const tasks: Record<string, TaskResult> = {};
  for (const t of done) tasks[taskId(t)] = { taskId: taskId(t), output: outBytes(t * 10 + age, 1) };
  return tasks;
}

export function buildSnapshot(instanceId: string, shape: Shape, age: number): WorkflowSnapshot {
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
    case "atTask":
      return atTask(instanceId, taskId(shape.task), {
        updatedAt,
        completed: completed(shape.done, { task: shape.task, spent: shape.spent }),
        definitionHash: `h-${age}`,
        ...input(shape.input),
      });
    case "awaiting":
      return awaiting(instanceId, EVENTS[shape.event], taskId(shape.next), {
        updatedAt,
        completed: completed(shape.done, { task: shape.next, spent: shape.spent }),
        definitionHash: `h-${age}`,
        timeoutAt: timeoutAt(shape.timeout, age),
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
          position: positionOf(shape.position, age),
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
