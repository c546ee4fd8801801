import { describe, expect, it } from "vitest";
import type { PersistentBackend } from "../../backend.js";
import { ErrorCode } from "../../errors.js";
import { completedTasksOf } from "../../snapshot.js";
import { atTask, finished } from "../fixtures.js";
import { allByteValues, claimOrFail, expectCode, patternBytes, text, uid, useSubject } from "../harness.js";
import type { ConformanceOptions } from "../types.js";

/** loadTaskResult must answer, for every task, what loadSnapshot shows of it. */
async function expectReadsMatchSnapshot(
  backend: PersistentBackend,
  instanceId: string,
  taskIds: readonly string[],
): Promise<void> {
  const results = completedTasksOf((await backend.loadSnapshot(instanceId)).state) ?? {};
  for (const taskId of taskIds) {
    const read = await backend.loadTaskResult(instanceId, taskId);
    const shown = results[taskId]?.output ?? null;
    expect({ taskId, read: read === null ? null : Array.from(read) }).toEqual({
      taskId,
      read: shown === null ? null : Array.from(shown),
    });
  }
}

export function taskResultReadsGroup(options: ConformanceOptions): void {
  describe("task-result reads", () => {
    it("reads one output as loadSnapshot shows it: every byte value, empty bytes (not null), none (null)", async () => {
      const { backend } = await useSubject(options);
      const id = uid();
      await backend.saveSnapshot(
        atTask(id, "t3", { completed: { t1: allByteValues(), empty: new Uint8Array(0) }, last: "t1" }),
      );
      await backend.saveTaskResult(id, "t2", text("two"));
      expect(Array.from((await backend.loadTaskResult(id, "t1")) ?? [])).toEqual(Array.from(allByteValues()));
      expect(await backend.loadTaskResult(id, "empty")).toEqual(new Uint8Array(0));
      expect(new TextDecoder().decode((await backend.loadTaskResult(id, "t2")) ?? undefined)).toBe("two");
      expect(await backend.loadTaskResult(id, "t3")).toBeNull();
      await expectReadsMatchSnapshot(backend, id, ["t1", "t2", "t3", "empty", "never"]);
    });

    it("sees results written by completeTasks (with and without next) and keeps them while paused and after a cancel", async () => {
      const { backend } = await useSubject(options);
      const id = uid();
      await backend.saveSnapshot(atTask(id, "t1"));
      const first = await claimOrFail(backend, id, "t1", "w");
      const next = { kind: "AtTask" as const, taskId: "t2" };
      expect(await backend.completeTasks([{ claim: first, output: text("one"), next }])).toEqual([null]);
      const side = await claimOrFail(backend, id, "side", "w");
      expect(await backend.completeTasks([{ claim: side, output: text("side") }])).toEqual([null]);
      await expectReadsMatchSnapshot(backend, id, ["t1", "side", "t2"]);
      await backend.pauseWorkflow(id);
      await expectReadsMatchSnapshot(backend, id, ["t1", "side", "t2"]);
      await backend.resumeWorkflow(id);
      await backend.cancelWorkflow(id, { reason: "enough" });
      expect(new TextDecoder().decode((await backend.loadTaskResult(id, "t1")) ?? undefined)).toBe("one");
      await expectReadsMatchSnapshot(backend, id, ["t1", "side", "t2"]);
    });

    it("Completed and Failed workflows read null for every task, as their state carries no results", async () => {
      const { backend } = await useSubject(options);
      const done = uid("done");
      await backend.saveSnapshot(atTask(done, "t2", { completed: { t1: text("one") } }));
      const claim = await claimOrFail(backend, done, "t2", "w");
      const next = { kind: "Completed" as const, finalOutput: text("final") };
      expect(await backend.completeTasks([{ claim, output: text("two"), next }])).toEqual([null]);
      await expectReadsMatchSnapshot(backend, done, ["t1", "t2"]);
      expect(await backend.loadTaskResult(done, "t1")).toBeNull();
      const failed = finished(uid("failed"), { kind: "Failed", error: "boom" });
      await backend.saveSnapshot(failed);
      expect(await backend.loadTaskResult(failed.instanceId, "t1")).toBeNull();
    });

    it("one large output among others comes back whole, and the bytes returned are the caller's own", async () => {
      const { backend } = await useSubject(options);
      const id = uid();
      const big = patternBytes(1 << 20, 7);
      await backend.saveSnapshot(atTask(id, "t3", { completed: { t1: text("small"), t2: big }, last: "t2" }));
      const read = await backend.loadTaskResult(id, "t2");
      expect(read?.byteLength).toBe(big.byteLength);
      expect(Buffer.from(read ?? new Uint8Array(0)).equals(Buffer.from(big))).toBe(true);
      read?.fill(0);
      const again = await backend.loadTaskResult(id, "t2");
      expect(Buffer.from(again ?? new Uint8Array(0)).equals(Buffer.from(big))).toBe(true);
    });

    it("a missing or deleted instance gives NotFoundError; bad ids give ValidationError", async () => {
      const { backend } = await useSubject(options);
      await expectCode(backend.loadTaskResult(uid("missing"), "t1"), ErrorCode.NotFound);
      const id = uid();
      await backend.saveSnapshot(atTask(id, "t2", { completed: { t1: text("one") } }));
      await backend.deleteSnapshot(id);
      await expectCode(backend.loadTaskResult(id, "t1"), ErrorCode.NotFound);
      for (const [instanceId, taskId] of [
        ["", "t1"],
        [id, ""],
        [42, "t1"],
        [id, null],
      ] as const) {
        await expectCode(
          backend.loadTaskResult(instanceId as unknown as string, taskId as unknown as string),
          ErrorCode.Validation,
        );
      }
    });
  });
}
