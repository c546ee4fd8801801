import { describe, expect, it } from "vitest";
import { ErrorCode } from "../../errors.js";
import { atTask, comparable, finished, inProgress } from "../fixtures.js";
import { allByteValues, rejection, text, uid, useSubject } from "../harness.js";
import type { ConformanceOptions } from "../types.js";

export function taskResultsGroup(options: ConformanceOptions): void {
  describe("task results", () => {
    it("adds one result, sets lastCompletedTaskId and keeps the others", async () => {
      const { backend } = await useSubject(options);
      const id = uid();
      const before = atTask(id, "t2", { completed: { t1: text("one") }, updatedAt: 1_700_000_000_000 });
      await backend.saveSnapshot(before);
      const startedAt = Date.now();
      await backend.saveTaskResult(id, "t2", allByteValues());
      const loaded = await backend.loadSnapshot(id);
      expect(loaded.state.kind).toBe("InProgress");
      if (loaded.state.kind !== "InProgress") return;
      expect(loaded.state.lastCompletedTaskId).toBe("t2");
      expect(Object.keys(loaded.state.completedTasks).sort()).toEqual(["t1", "t2"]);
      expect(Array.from(loaded.state.completedTasks.t1?.output ?? [])).toEqual(Array.from(text("one")));
      expect(Array.from(loaded.state.completedTasks.t2?.output ?? [])).toEqual(Array.from(allByteValues()));
      expect(loaded.state.completedTasks.t2?.taskId).toBe("t2");
      expect(loaded.state.position).toEqual({ kind: "AtTask", taskId: "t2" });
      // updatedAt moves to the backend's now (a clock that may differ from ours by a little).
      expect(loaded.updatedAt).toBeGreaterThanOrEqual(startedAt - 2_000);
      expect(loaded.updatedAt).toBeLessThanOrEqual(Date.now() + 2_000);
      expect(loaded.createdAt).toBe(before.createdAt);
    });

    it("saving the same task again replaces its output", async () => {
      const { backend } = await useSubject(options);
      const id = uid();
      await backend.saveSnapshot(atTask(id, "t1"));
      await backend.saveTaskResult(id, "t1", text("first"));
      await backend.saveTaskResult(id, "t1", new Uint8Array(0));
      const loaded = await backend.loadSnapshot(id);
      expect(loaded.state.kind === "InProgress" && loaded.state.completedTasks.t1?.output.byteLength).toBe(0);
    });

    it("a missing instance gives NotFoundError and creates nothing", async () => {
      const { backend } = await useSubject(options);
      const id = uid();
      expect(await rejection(backend.saveTaskResult(id, "t1", text("x")))).toMatchObject({
        code: ErrorCode.NotFound,
      });
      expect(await backend.listSnapshots()).toEqual([]);
      expect(await rejection(backend.loadSnapshot(id))).toMatchObject({ code: ErrorCode.NotFound });
    });

    it("a finished workflow gives ConflictError and nothing is written", async () => {
      const { backend } = await useSubject(options);
      for (const state of [
        { kind: "Completed" as const, finalOutput: text("done") },
        { kind: "Failed" as const, error: "failed" },
      ]) {
        const done = finished(uid(), state);
        await backend.saveSnapshot(done);
        expect(await rejection(backend.saveTaskResult(done.instanceId, "late", text("x")))).toMatchObject({
          code: ErrorCode.Conflict,
        });
        expect(comparable(await backend.loadSnapshot(done.instanceId))).toEqual(comparable(done));
      }
    });

    it("saveSnapshot after saveTaskResult replaces the stored results with the snapshot's own", async () => {
      const { backend } = await useSubject(options);
      const id = uid();
      await backend.saveSnapshot(inProgress(id, { completed: { a: text("a") } }));
      await backend.saveTaskResult(id, "b", text("b"));
      const replacement = atTask(id, "c", { completed: { a: text("a2") }, last: "a" });
      await backend.saveSnapshot(replacement);
      expect(comparable(await backend.loadSnapshot(id))).toEqual(comparable(replacement));
    });

    it("a result for a task that is not the current position is stored too", async () => {
      const { backend } = await useSubject(options);
      const id = uid();
      await backend.saveSnapshot(
        inProgress(id, { position: { kind: "AtJoin", joinId: "j", completedBranches: [] } }),
      );
      await backend.saveTaskResult(id, "branch-left", text("L"));
      await backend.saveTaskResult(id, "branch-right", text("R"));
      const loaded = await backend.loadSnapshot(id);
      expect(loaded.state.kind === "InProgress" && Object.keys(loaded.state.completedTasks).sort()).toEqual([
        "branch-left",
        "branch-right",
      ]);
      expect(loaded.state.kind === "InProgress" && loaded.state.lastCompletedTaskId).toBe("branch-right");
    });
  });
}
