import { describe, expect, it } from "vitest";
import type { PersistentBackend, PurgeOptions } from "../../backend.js";
import { ErrorCode } from "../../errors.js";
import { atTask, finished } from "../fixtures.js";
import { claimOrFail, expectCode, expirySlackMs, sleep, text, uid, useSubject } from "../harness.js";
import type { ConformanceOptions } from "../types.js";

/** A moment after everything finished so far, on any store clock within the backend's slack. */
function pastEveryFinish(backend: PersistentBackend): number {
  return Date.now() + expirySlackMs(backend);
}

/**
 * Waits long enough that a cut-off taken now lies strictly between what finished before the wait
 * and what finishes after it, by a store clock up to the backend's slack away from ours.
 */
async function cutOffBetween(backend: PersistentBackend): Promise<number> {
  const slack = expirySlackMs(backend);
  await sleep(slack + 100);
  const cut = Date.now();
  await sleep(slack + 100);
  return cut;
}

export function purgeGroup(options: ConformanceOptions): void {
  describe("purge", () => {
    it("deletes Completed, Failed and Cancelled workflows with their results, claims and events; keeps the rest", async () => {
      const { backend } = await useSubject(options);
      const completed = finished(uid("completed"), { kind: "Completed", finalOutput: text("done") });
      const failed = finished(uid("failed"), { kind: "Failed", error: "boom" });
      await backend.saveSnapshot(completed);
      await backend.saveSnapshot(failed);
      const stepped = uid("stepped");
      await backend.saveSnapshot(atTask(stepped, "t1"));
      const claim = await claimOrFail(backend, stepped, "t1", "w");
      const next = { kind: "Completed" as const, finalOutput: text("final") };
      expect(await backend.completeTasks([{ claim, output: text("one"), next }])).toEqual([null]);
      const cancelled = uid("cancelled");
      await backend.saveSnapshot(atTask(cancelled, "t2", { completed: { t1: text("one") } }));
      const held = await claimOrFail(backend, cancelled, "t2", "w");
      await backend.sendEvent(cancelled, "never", text("late"));
      await backend.cancelWorkflow(cancelled, { reason: "enough" });
      const running = uid("running");
      await backend.saveSnapshot(atTask(running, "t2", { completed: { t1: text("one") } }));
      await backend.sendEvent(running, "kept", text("payload"));
      const paused = uid("paused");
      await backend.saveSnapshot(atTask(paused, "t1"));
      await backend.pauseWorkflow(paused);

      expect(await backend.purgeFinished({ finishedBefore: pastEveryFinish(backend), limit: 100 })).toBe(4);
      for (const id of [completed.instanceId, failed.instanceId, stepped, cancelled]) {
        await expectCode(backend.loadSnapshot(id), ErrorCode.NotFound);
        await expectCode(backend.loadTaskResult(id, "t1"), ErrorCode.NotFound);
        await expectCode(backend.loadPendingEvents(id), ErrorCode.NotFound);
        expect(await backend.loadTaskClaims(id)).toEqual([]);
      }
      expect((await backend.listSnapshots()).sort()).toEqual([paused, running].sort());
      expect(new TextDecoder().decode((await backend.loadTaskResult(running, "t1")) ?? undefined)).toBe(
        "one",
      );
      expect((await backend.loadPendingEvents(running)).length).toBe(1);
      expect((await backend.loadSnapshot(paused)).state.kind).toBe("Paused");
      // A purged instance's tokens are never issued again.
      await backend.saveSnapshot(atTask(cancelled, "t2"));
      expect((await claimOrFail(backend, cancelled, "t2", "w")).token).toBeGreaterThan(held.token);
      expect(await backend.purgeFinished({ finishedBefore: pastEveryFinish(backend), limit: 100 })).toBe(0);
    });

    it("keeps what finished at or after the cut-off; saving a finished workflow again keeps its first finish time", async () => {
      const { backend } = await useSubject(options);
      const early = finished(uid("early"), { kind: "Completed", finalOutput: text("early") });
      await backend.saveSnapshot(early);
      const cut = await cutOffBetween(backend);
      await backend.saveSnapshot({ ...early, updatedAt: early.updatedAt + 1 });
      const late = finished(uid("late"), { kind: "Failed", error: "late" });
      await backend.saveSnapshot(late);
      const reopened = uid("reopened");
      await backend.saveSnapshot(atTask(reopened, "t1"));
      expect(await backend.purgeFinished({ finishedBefore: cut, limit: 100 })).toBe(1);
      await expectCode(backend.loadSnapshot(early.instanceId), ErrorCode.NotFound);
      expect((await backend.loadSnapshot(late.instanceId)).state.kind).toBe("Failed");
      expect((await backend.loadSnapshot(reopened)).state.kind).toBe("InProgress");
    });

    it("a finished workflow deleted and saved again unfinished is not purged; its new finish counts", async () => {
      const { backend } = await useSubject(options);
      const id = uid();
      await backend.saveSnapshot(finished(id, { kind: "Completed", finalOutput: text("first life") }));
      await backend.deleteSnapshot(id);
      await backend.saveSnapshot(atTask(id, "t1"));
      const cut = await cutOffBetween(backend);
      expect(await backend.purgeFinished({ finishedBefore: pastEveryFinish(backend), limit: 100 })).toBe(0);
      await backend.cancelWorkflow(id);
      expect(await backend.purgeFinished({ finishedBefore: cut, limit: 100 })).toBe(0);
      expect(await backend.purgeFinished({ finishedBefore: pastEveryFinish(backend), limit: 100 })).toBe(1);
    });

    it("limit bounds each call, oldest finish first; calls repeated until 0 drain the store", async () => {
      const { backend } = await useSubject(options);
      const ids: string[] = [];
      for (let i = 0; i < 5; i++) {
        const id = `${uid("done")}-${i}`;
        ids.push(id);
        await backend.saveSnapshot(finished(id, { kind: "Completed", finalOutput: text(String(i)) }));
        // Distinct finish times, one store clock tick apart at least.
        await sleep(15);
      }
      const cutoff = pastEveryFinish(backend);
      expect(await backend.purgeFinished({ finishedBefore: cutoff, limit: 2 })).toBe(2);
      expect((await backend.listSnapshots()).sort()).toEqual(ids.slice(2).sort());
      expect(await backend.purgeFinished({ finishedBefore: cutoff, limit: 2 })).toBe(2);
      expect(await backend.listSnapshots()).toEqual(ids.slice(4));
      expect(await backend.purgeFinished({ finishedBefore: cutoff, limit: 2 })).toBe(1);
      expect(await backend.purgeFinished({ finishedBefore: cutoff, limit: 2 })).toBe(0);
      expect(await backend.listSnapshots()).toEqual([]);
    });

    it("bad options give ValidationError and delete nothing", async () => {
      const { backend } = await useSubject(options);
      const done = finished(uid(), { kind: "Completed", finalOutput: text("done") });
      await backend.saveSnapshot(done);
      const now = pastEveryFinish(backend);
      const bad: unknown[] = [
        undefined,
        null,
        { limit: 10 },
        { finishedBefore: now },
        { finishedBefore: -1, limit: 10 },
        { finishedBefore: 1.5, limit: 10 },
        { finishedBefore: Number.NaN, limit: 10 },
        { finishedBefore: String(now), limit: 10 },
        { finishedBefore: now, limit: 0 },
        { finishedBefore: now, limit: 10_001 },
        { finishedBefore: now, limit: 2.5 },
      ];
      for (const options of bad) {
        await expectCode(backend.purgeFinished(options as PurgeOptions), ErrorCode.Validation);
      }
      expect(await backend.listSnapshots()).toEqual([done.instanceId]);
    });
  });
}
