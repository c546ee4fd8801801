import { describe, expect, it } from "vitest";
import type { AvailableTask } from "../../claims.js";
import { compareIds } from "../../validation.js";
import { atTask, finished, inProgress } from "../fixtures.js";
import { eventually, text, uid, useSubject } from "../harness.js";
import type { ConformanceOptions } from "../types.js";

const T0 = 1_700_000_000_000;

function summary(tasks: AvailableTask[]): Array<[string, string, number[], string]> {
  return tasks.map((t) => [t.instanceId, t.taskId, Array.from(t.input), t.workflowDefinitionHash]);
}

export function discoveryGroup(options: ConformanceOptions): void {
  describe("discovery", () => {
    it("finds exactly the ready tasks (InProgress, AtTask, not completed, not claimed) with their input", async () => {
      const { backend } = await useSubject(options);
      const p = uid("d");
      const ready = [
        atTask(`${p}-initial`, "t1", {
          initialInput: text("init"),
          updatedAt: T0 + 1,
          definitionHash: "hash-A",
        }),
        atTask(`${p}-after`, "t3", {
          initialInput: text("init"),
          completed: { t2: text("two"), t1: text("one") },
          last: "t2",
          updatedAt: T0 + 2,
          definitionHash: "hash-B",
        }),
        atTask(`${p}-empty`, "t1", { updatedAt: T0 + 3 }),
      ];
      const notReady = [
        inProgress(`${p}-not-started`, { updatedAt: T0 }),
        atTask(`${p}-done-task`, "t1", { completed: { t1: text("x") }, updatedAt: T0 }),
        atTask(`${p}-claimed`, "t1", { updatedAt: T0 }),
        inProgress(`${p}-fork`, {
          position: { kind: "AtFork", branchId: "b", completedBranches: [] },
          updatedAt: T0,
        }),
        inProgress(`${p}-join`, {
          position: { kind: "AtJoin", joinId: "j", completedBranches: [] },
          updatedAt: T0,
        }),
        finished(`${p}-completed`, { kind: "Completed", finalOutput: text("out") }),
        finished(`${p}-failed`, { kind: "Failed", error: "e" }),
      ];
      for (const s of [...notReady, ...ready]) await backend.saveSnapshot(s);
      expect(await backend.claimTask(`${p}-claimed`, "t1", "other-worker", 60_000)).not.toBeNull();
      const found = await backend.findAvailableTasks("worker-1", 100);
      expect(summary(found)).toEqual([
        [`${p}-initial`, "t1", Array.from(text("init")), "hash-A"],
        [`${p}-after`, "t3", Array.from(text("two")), "hash-B"],
        [`${p}-empty`, "t1", [], "def-hash-1"],
      ]);
      for (const task of found) expect(Object.getPrototypeOf(task.input)).toBe(Uint8Array.prototype);
    });

    it("returns the oldest updatedAt first and honours limit", async () => {
      const { backend } = await useSubject(options);
      const order = [5, 2, 9, 1, 7, 3, 8, 4, 6, 0];
      for (const n of order) await backend.saveSnapshot(atTask(`i-${n}`, "t", { updatedAt: T0 + n * 1000 }));
      expect((await backend.findAvailableTasks("w", 3)).map((t) => t.instanceId)).toEqual([
        "i-0",
        "i-1",
        "i-2",
      ]);
      expect((await backend.findAvailableTasks("w", 1)).map((t) => t.instanceId)).toEqual(["i-0"]);
      expect((await backend.findAvailableTasks("w", 100)).map((t) => t.instanceId)).toEqual(
        [...order].sort((a, b) => a - b).map((n) => `i-${n}`),
      );
      expect(await backend.findAvailableTasks("w", 100)).toHaveLength(10);
    });

    it("breaks updatedAt ties by instance id in code point (UTF-8 byte) order, at every limit", async () => {
      const { backend } = await useSubject(options);
      // UTF-16 order would put "\uFF21" after "\u{1F600}"; code point order puts it before.
      const ids = ["tie-\u{1F600}", "tie-b", "tie-\uFF21", "tie-a", "tie-\u00E9", "tie-\u{10FFFD}"];
      for (const id of ids) await backend.saveSnapshot(atTask(id, "t", { updatedAt: T0 }));
      const expected = [...ids].sort(compareIds);
      expect(expected).toEqual([
        "tie-a",
        "tie-b",
        "tie-\u00E9",
        "tie-\uFF21",
        "tie-\u{1F600}",
        "tie-\u{10FFFD}",
      ]);
      for (let limit = 1; limit <= ids.length; limit++) {
        const found = (await backend.findAvailableTasks("w", limit)).map((t) => t.instanceId);
        expect(found, `limit ${limit}`).toEqual(expected.slice(0, limit));
      }
      const claimed = await backend.claimAvailableTasks("w", 2, 60_000);
      expect(claimed.map((t) => t.instanceId)).toEqual(expected.slice(0, 2));
    });

    it("finding does not claim: repeated calls return the same tasks", async () => {
      const { backend } = await useSubject(options);
      await backend.saveSnapshot(atTask(uid(), "t1"));
      expect(await backend.findAvailableTasks("w1", 10)).toHaveLength(1);
      expect(await backend.findAvailableTasks("w2", 10)).toHaveLength(1);
    });

    it("follows every write: result saved, moved on, completed, deleted", async () => {
      const { backend } = await useSubject(options);
      const id = uid();
      const ids = async () =>
        (await backend.findAvailableTasks("w", 100)).map((t) => `${t.instanceId}/${t.taskId}`);
      await backend.saveSnapshot(atTask(id, "t1"));
      expect(await ids()).toEqual([`${id}/t1`]);
      await backend.saveTaskResult(id, "t1", text("one"));
      expect(await ids()).toEqual([]);
      await backend.saveSnapshot(atTask(id, "t2", { completed: { t1: text("one") } }));
      const found = await backend.findAvailableTasks("w", 100);
      expect(summary(found)).toEqual([[id, "t2", Array.from(text("one")), "def-hash-1"]]);
      await backend.saveTaskResult(id, "other", text("side"));
      expect((await backend.findAvailableTasks("w", 100)).map((t) => Array.from(t.input))).toEqual([
        Array.from(text("side")),
      ]);
      await backend.saveSnapshot(finished(id, { kind: "Completed", finalOutput: text("done") }));
      expect(await ids()).toEqual([]);
      const other = uid();
      await backend.saveSnapshot(atTask(other, "t1"));
      expect(await ids()).toEqual([`${other}/t1`]);
      await backend.deleteSnapshot(other);
      expect(await ids()).toEqual([]);
    });

    it("a released or expired claim makes the task available again", async () => {
      const { backend } = await useSubject(options);
      const a = uid("a");
      const b = uid("b");
      await backend.saveSnapshot(atTask(a, "t1", { updatedAt: T0 }));
      await backend.saveSnapshot(atTask(b, "t1", { updatedAt: T0 + 1 }));
      await backend.claimTask(a, "t1", "w1", 60_000);
      await backend.claimTask(b, "t1", "w1", 150);
      expect(await backend.findAvailableTasks("w2", 10)).toEqual([]);
      await backend.releaseTaskClaim(a, "t1", "w1");
      expect((await backend.findAvailableTasks("w2", 10)).map((t) => t.instanceId)).toEqual([a]);
      await eventually("the expired claim's task to be available", async () => {
        const found = (await backend.findAvailableTasks("w2", 10)).map((t) => t.instanceId);
        return found.length === 2 ? found : undefined;
      });
    });

    it("a claim on a task other than the position does not hide the ready task", async () => {
      const { backend } = await useSubject(options);
      const id = uid();
      await backend.saveSnapshot(atTask(id, "t2"));
      await backend.claimTask(id, "t1", "w1", 60_000);
      expect((await backend.findAvailableTasks("w", 10)).map((t) => t.taskId)).toEqual(["t2"]);
    });
  });
}
