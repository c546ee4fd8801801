import { describe, expect, it } from "vitest";
import { markTaskCompleted } from "../../snapshot.js";
import { atTask, comparable } from "../fixtures.js";
import { text, uid, useSubject } from "../harness.js";
import type { ConformanceOptions } from "../types.js";

export function durabilityGroup(options: ConformanceOptions): void {
  describe("durability", () => {
    it("snapshots, task results and claims survive close() and a new backend instance", async (ctx) => {
      const { backend, connect } = await useSubject(options);
      if (!backend.capabilities.durable) return ctx.skip("the backend declares durable: false");
      const id = uid();
      const snapshot = atTask(id, "t2", { completed: { t1: text("one") }, initialInput: text("in") });
      await backend.saveSnapshot(snapshot);
      await backend.saveTaskResult(id, "side", text("side-output"));
      const claim = await backend.claimTask(id, "t2", "worker-1", 60_000);
      await backend.close();

      const reopened = await connect();
      const loaded = await reopened.loadSnapshot(id);
      const expected = markTaskCompleted(snapshot, "side", text("side-output"), loaded.updatedAt);
      expect(comparable(loaded)).toEqual(comparable(expected));
      expect(await reopened.listSnapshots()).toEqual([id]);
      expect(await reopened.claimTask(id, "t2", "worker-2", 60_000)).toBeNull();
      await reopened.saveTaskResult(id, "t2", text("two"), { claim: claim ?? 0 });
      await reopened.releaseTaskClaim(id, "t2", "worker-1");
      const next = await reopened.claimTask(id, "t2", "worker-2", 60_000);
      expect(next?.token).toBeGreaterThan(claim?.token ?? Number.POSITIVE_INFINITY);
    });
  });
}
