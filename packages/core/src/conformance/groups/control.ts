import { describe, expect, it } from "vitest";
import { ErrorCode } from "../../errors.js";
import { markTaskCompleted, updatePosition } from "../../snapshot.js";
import { atTask, comparable, finished, inProgress } from "../fixtures.js";
import { claimOrFail, expectCode, text, uid, useSubject } from "../harness.js";
import type { ConformanceOptions } from "../types.js";

/** Is the task offered by discovery (to a worker that is not holding it)? */
async function discovered(
  backend: { findAvailableTasks: (w: string, n: number) => Promise<Array<{ instanceId: string }>> },
  instanceId: string,
): Promise<boolean> {
  const found = await backend.findAvailableTasks("observer", 1000);
  return found.some((t) => t.instanceId === instanceId);
}

export function controlGroup(options: ConformanceOptions): void {
  describe("control", () => {
    it("cancel turns InProgress into Cancelled, keeping results, the interrupted task, reason and requester", async () => {
      const { backend } = await useSubject(options);
      const id = uid();
      await backend.saveSnapshot(
        atTask(id, "t2", { completed: { t1: text("one") }, initialInput: text("in") }),
      );
      const before = Date.now();
      await backend.cancelWorkflow(id, { reason: "customer asked", requestedBy: "support:ana" });
      const loaded = await backend.loadSnapshot(id);
      if (loaded.state.kind !== "Cancelled") throw new Error(`expected Cancelled, got ${loaded.state.kind}`);
      expect(loaded.state.reason).toBe("customer asked");
      expect(loaded.state.requestedBy).toBe("support:ana");
      expect(loaded.state.interruptedAtTaskId).toBe("t2");
      expect(Array.from(loaded.state.completedTasks.t1?.output ?? [])).toEqual(Array.from(text("one")));
      expect(loaded.state.cancelledAt).toBeGreaterThanOrEqual(before - 2_000);
      expect(loaded.state.cancelledAt).toBeLessThanOrEqual(Date.now() + 2_000);
      expect(Array.from(loaded.initialInput ?? [])).toEqual(Array.from(text("in")));
      expect(await discovered(backend, id)).toBe(false);
      // Without a reason or requester, both are null.
      const other = uid();
      await backend.saveSnapshot(inProgress(other));
      await backend.cancelWorkflow(other);
      expect((await backend.loadSnapshot(other)).state).toMatchObject({
        kind: "Cancelled",
        reason: null,
        requestedBy: null,
        interruptedAtTaskId: null,
      });
    });

    it("cancel revokes every claim: fenced writes and heartbeats fail, later tokens stay increasing", async () => {
      const { backend } = await useSubject(options);
      const id = uid();
      await backend.saveSnapshot(atTask(id, "t1"));
      const running = await claimOrFail(backend, id, "t1", "worker-1", 60_000);
      const branch = await claimOrFail(backend, id, "side", "worker-2", null);
      await backend.cancelWorkflow(id, { reason: "stop" });
      await expectCode(backend.extendTaskClaim(id, "t1", "worker-1", 60_000), ErrorCode.ClaimLost);
      await expectCode(backend.extendTaskClaim(id, "side", "worker-2", 60_000), ErrorCode.ClaimLost);
      await expectCode(
        backend.saveTaskResult(id, "t1", text("late"), { claim: running }),
        ErrorCode.ClaimLost,
      );
      await expectCode(
        backend.saveSnapshot(markTaskCompleted(atTask(id, "t1"), "t1", text("late")), { claim: running }),
        ErrorCode.ClaimLost,
      );
      expect(await backend.completeTasks([{ claim: branch, output: text("late") }])).toMatchObject([
        { code: ErrorCode.ClaimLost },
      ]);
      expect((await backend.loadSnapshot(id)).state.kind).toBe("Cancelled");
      const again = await claimOrFail(backend, id, "t1", "worker-3", 60_000);
      expect(again.token).toBeGreaterThan(running.token);
    });

    it("a revoked claim stays a record: its holder may release it, and it never comes back to life", async () => {
      const { backend } = await useSubject(options);
      const id = uid();
      await backend.saveSnapshot(atTask(id, "t1"));
      await claimOrFail(backend, id, "t1", "worker-1", 60_000);
      await backend.cancelWorkflow(id);
      // A deleted claim would answer NotFound; a revoked one is the holder's to release.
      await backend.releaseTaskClaim(id, "t1", "worker-1");
      await expectCode(backend.releaseTaskClaim(id, "t1", "worker-1"), ErrorCode.NotFound);
    });

    it("a cancel is final: no later write but a Cancelled one, and no heartbeat, even on a claim taken after it", async () => {
      const { backend } = await useSubject(options);
      const id = uid();
      await backend.saveSnapshot(atTask(id, "t1", { completed: { t0: text("zero") } }));
      await backend.cancelWorkflow(id, { reason: "stop" });
      // claimTask does not look at the snapshot, so a claim can still be taken; it fences nothing.
      const late = await claimOrFail(backend, id, "t1", "worker-2", 60_000);
      await expectCode(backend.extendTaskClaim(id, "t1", "worker-2", 60_000), ErrorCode.ClaimLost);
      const done = finished(id, { kind: "Completed", finalOutput: text("late") });
      await expectCode(backend.saveSnapshot(done, { claim: late }), ErrorCode.Conflict);
      await expectCode(
        backend.saveSnapshot(finished(id, { kind: "Failed", error: "late" })),
        ErrorCode.Conflict,
      );
      expect((await backend.loadSnapshot(id)).state).toMatchObject({ kind: "Cancelled", reason: "stop" });
      // A Cancelled snapshot written with saveSnapshot is final too, and its claims' heartbeats fail.
      const other = uid();
      await backend.saveSnapshot(atTask(other, "t1"));
      await claimOrFail(backend, other, "t1", "worker-3", 60_000);
      const cancelled = await backend.loadSnapshot(id);
      await backend.saveSnapshot({ ...cancelled, instanceId: other });
      await expectCode(backend.extendTaskClaim(other, "t1", "worker-3", 60_000), ErrorCode.ClaimLost);
      await expectCode(backend.saveSnapshot(atTask(other, "t1")), ErrorCode.Conflict);
    });

    it("pause and resume set updatedAt to the store's now", async () => {
      const { backend } = await useSubject(options);
      const id = uid();
      await backend.saveSnapshot(atTask(id, "t1", { updatedAt: 1_700_000_000_000 }));
      const before = Date.now();
      await backend.pauseWorkflow(id);
      const paused = await backend.loadSnapshot(id);
      expect(paused.updatedAt).toBeGreaterThanOrEqual(before - 2_000);
      expect(paused.updatedAt).toBeLessThanOrEqual(Date.now() + 2_000);
      await backend.resumeWorkflow(id);
      const resumed = await backend.loadSnapshot(id);
      expect(resumed.updatedAt).toBeGreaterThanOrEqual(paused.updatedAt);
      expect(resumed.updatedAt).toBeLessThanOrEqual(Date.now() + 2_000);
    });

    it("cancel: missing is NotFound; Completed, Failed or Cancelled is Conflict; Paused can be cancelled", async () => {
      const { backend } = await useSubject(options);
      await expectCode(backend.cancelWorkflow(uid("missing")), ErrorCode.NotFound);
      const done = uid();
      await backend.saveSnapshot(finished(done, { kind: "Completed", finalOutput: text("x") }));
      await expectCode(backend.cancelWorkflow(done), ErrorCode.Conflict);
      const failed = uid();
      await backend.saveSnapshot(finished(failed, { kind: "Failed", error: "boom" }));
      await expectCode(backend.cancelWorkflow(failed), ErrorCode.Conflict);
      const paused = uid();
      await backend.saveSnapshot(atTask(paused, "t1"));
      await backend.pauseWorkflow(paused);
      await backend.cancelWorkflow(paused, { requestedBy: "ops" });
      expect((await backend.loadSnapshot(paused)).state).toMatchObject({
        kind: "Cancelled",
        requestedBy: "ops",
      });
      await expectCode(backend.cancelWorkflow(paused), ErrorCode.Conflict);
      // Terminal: never back to InProgress, and no results.
      await expectCode(backend.saveSnapshot(atTask(paused, "t1")), ErrorCode.Conflict);
      await expectCode(backend.saveTaskResult(paused, "t1", text("x")), ErrorCode.Conflict);
    });

    it("pause: missing is NotFound; anything but InProgress is Conflict; resume of anything but Paused is Conflict", async () => {
      const { backend } = await useSubject(options);
      await expectCode(backend.pauseWorkflow(uid("missing")), ErrorCode.NotFound);
      await expectCode(backend.resumeWorkflow(uid("missing")), ErrorCode.NotFound);
      const id = uid();
      await backend.saveSnapshot(atTask(id, "t1"));
      await expectCode(backend.resumeWorkflow(id), ErrorCode.Conflict);
      await backend.pauseWorkflow(id, { reason: "incident", requestedBy: "oncall" });
      await expectCode(backend.pauseWorkflow(id), ErrorCode.Conflict);
      const done = uid();
      await backend.saveSnapshot(finished(done, { kind: "Failed", error: "boom" }));
      await expectCode(backend.pauseWorkflow(done), ErrorCode.Conflict);
      await expectCode(backend.resumeWorkflow(done), ErrorCode.Conflict);
    });

    it("a paused workflow takes a running task's result but is neither moved on nor discovered", async () => {
      const { backend } = await useSubject(options);
      const id = uid();
      await backend.saveSnapshot(atTask(id, "t1", { completed: { t0: text("zero") } }));
      const claim = await claimOrFail(backend, id, "t1", "worker-1", 60_000);
      const side = await claimOrFail(backend, id, "side", "worker-2", 60_000);
      const waiting = uid();
      await backend.saveSnapshot(atTask(waiting, "t1"));
      await backend.pauseWorkflow(id, { reason: "incident" });
      await backend.pauseWorkflow(waiting);
      const paused = await backend.loadSnapshot(id);
      expect(paused.state).toMatchObject({
        kind: "Paused",
        reason: "incident",
        requestedBy: null,
        position: { kind: "AtTask", taskId: "t1" },
        lastCompletedTaskId: "t0",
      });
      // The running tasks may still record their results (fenced).
      await backend.saveTaskResult(id, "t1", text("one"), { claim });
      expect(await backend.completeTasks([{ claim: side, output: text("s") }])).toEqual([null]);
      // Nothing moves it on: not a fenced saveSnapshot, not an unfenced one.
      const moved = updatePosition(markTaskCompleted(atTask(id, "t1"), "t1", text("one")), {
        kind: "AtTask",
        taskId: "t2",
      });
      await expectCode(backend.saveSnapshot(moved, { claim }), ErrorCode.Conflict);
      await expectCode(
        backend.saveSnapshot(finished(id, { kind: "Completed", finalOutput: text("x") })),
        ErrorCode.Conflict,
      );
      expect((await backend.loadSnapshot(id)).state.kind).toBe("Paused");
      // Discovery and claim-next skip it.
      expect(await discovered(backend, waiting)).toBe(false);
      const claimed = await backend.claimAvailableTasks("worker-3", 100, 60_000);
      expect(claimed.map((t) => t.instanceId)).not.toContain(waiting);
    });

    it("resume restores the position with every result that landed meanwhile, and discovery sees it again", async () => {
      const { backend } = await useSubject(options);
      const id = uid();
      await backend.saveSnapshot(atTask(id, "t2", { completed: { t1: text("one") } }));
      const side = await claimOrFail(backend, id, "side", "worker-1", 60_000);
      await backend.pauseWorkflow(id);
      expect(await discovered(backend, id)).toBe(false);
      await backend.saveTaskResult(id, "side", text("s"), { claim: side });
      await backend.resumeWorkflow(id);
      const loaded = await backend.loadSnapshot(id);
      if (loaded.state.kind !== "InProgress")
        throw new Error(`expected InProgress, got ${loaded.state.kind}`);
      expect(loaded.state.position).toEqual({ kind: "AtTask", taskId: "t2" });
      expect(Object.keys(loaded.state.completedTasks).sort()).toEqual(["side", "t1"]);
      expect(loaded.state.lastCompletedTaskId).toBe("side");
      expect(await discovered(backend, id)).toBe(true);
      // The workflow moves on normally again.
      const claim = await claimOrFail(backend, id, "t2", "worker-2", 60_000);
      await backend.saveSnapshot(markTaskCompleted(loaded, "t2", text("two")), { claim });
    });

    it("the heartbeat says paused: extend renews the claim and reports workflowPaused until resumed", async () => {
      const { backend } = await useSubject(options);
      const id = uid();
      await backend.saveSnapshot(atTask(id, "t1"));
      const claim = await claimOrFail(backend, id, "t1", "worker-1", 60_000);
      expect((await backend.extendTaskClaim(id, "t1", "worker-1", 60_000)).workflowPaused).toBe(false);
      await backend.pauseWorkflow(id);
      const renewed = await backend.extendTaskClaim(id, "t1", "worker-1", 30_000);
      expect(renewed.workflowPaused).toBe(true);
      expect(renewed.token).toBe(claim.token);
      expect(renewed.expiresAt).toBeGreaterThan(Date.now() + 20_000);
      await backend.resumeWorkflow(id);
      expect((await backend.extendTaskClaim(id, "t1", "worker-1", 60_000)).workflowPaused).toBe(false);
    });

    it("saveSnapshot stores Paused and Cancelled snapshots as given; a paused one may be cancelled that way", async () => {
      const { backend } = await useSubject(options);
      const id = uid();
      const base = atTask(id, "t2", { completed: { t1: text("one") } });
      const paused = {
        ...base,
        state: {
          kind: "Paused" as const,
          reason: "r",
          requestedBy: null,
          pausedAt: 1_700_000_000_500,
          position: { kind: "AtTask" as const, taskId: "t2" },
          completedTasks: { t1: { taskId: "t1", output: text("one") } },
          lastCompletedTaskId: "t1",
        },
      };
      await backend.saveSnapshot(paused);
      expect(comparable(await backend.loadSnapshot(id))).toEqual(comparable(paused));
      expect(await discovered(backend, id)).toBe(false);
      const cancelled = {
        ...base,
        state: {
          kind: "Cancelled" as const,
          reason: null,
          requestedBy: "me",
          cancelledAt: 1_700_000_000_900,
          completedTasks: { t1: { taskId: "t1", output: text("one") } },
          interruptedAtTaskId: "t2",
        },
      };
      await backend.saveSnapshot(cancelled);
      expect(comparable(await backend.loadSnapshot(id))).toEqual(comparable(cancelled));
    });

    it("control requests are validated before any I/O", async () => {
      const { backend } = await useSubject(options);
      const id = uid();
      await backend.saveSnapshot(atTask(id, "t1"));
      const bad: unknown[] = [{ reason: 42 }, { requestedBy: "\u0000" }, { reason: "x".repeat(4097) }, "why"];
      for (const request of bad) {
        await expectCode(backend.cancelWorkflow(id, request as never), ErrorCode.Validation);
        await expectCode(backend.pauseWorkflow(id, request as never), ErrorCode.Validation);
      }
      await expectCode(backend.resumeWorkflow(""), ErrorCode.Validation);
      expect((await backend.loadSnapshot(id)).state.kind).toBe("InProgress");
    });
  });
}
