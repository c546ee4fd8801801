import { describe, expect, it } from "vitest";
import {
  createSnapshot,
  getLastTaskOutput,
  getTaskResult,
  isFinished,
  markCompleted,
  markTaskCompleted,
  nextTaskInput,
  readyTaskId,
  updatePosition,
} from "../src/index.js";

describe("snapshot helpers", () => {
  it("build a workflow step by step without mutating earlier versions", () => {
    const created = createSnapshot("i", "h", { now: 10 });
    expect(nextTaskInput(created)).toEqual(new Uint8Array(0));
    const atA = updatePosition(created, { kind: "AtTask", taskId: "a" }, 11);
    expect(readyTaskId(atA)).toBe("a");
    const doneA = markTaskCompleted(atA, "a", Uint8Array.of(1), 12);
    expect(readyTaskId(doneA)).toBeUndefined();
    expect(getTaskResult(doneA, "a")).toEqual(Uint8Array.of(1));
    expect(getLastTaskOutput(doneA)).toEqual(Uint8Array.of(1));
    expect(nextTaskInput(doneA)).toEqual(Uint8Array.of(1));
    expect(getTaskResult(atA, "a")).toBeUndefined();
    expect(created.state).toEqual({
      kind: "InProgress",
      position: { kind: "NotStarted" },
      completedTasks: {},
      lastCompletedTaskId: null,
    });
    const done = markCompleted(doneA, Uint8Array.of(9), 13);
    expect(isFinished(done.state)).toBe(true);
    expect(done.updatedAt).toBe(13);
    expect(() => updatePosition(done, { kind: "NotStarted" })).toThrow(TypeError);
  });

  it("uses the initial input until a task completes, and lastCompletedTaskId rather than map order", () => {
    let s = createSnapshot("i", "h", { initialInput: Uint8Array.of(5) });
    expect(nextTaskInput(s)).toEqual(Uint8Array.of(5));
    s = markTaskCompleted(s, "z", Uint8Array.of(26));
    s = markTaskCompleted(s, "a", Uint8Array.of(1));
    expect(nextTaskInput(s)).toEqual(Uint8Array.of(1));
    expect(getTaskResult(s, "toString")).toBeUndefined();
  });
});
