import { describe, expect, it } from "vitest";
import type { ClaimedTask } from "../../claims.js";
import { atTask } from "../fixtures.js";
import { eventually, text, uid, useSubject } from "../harness.js";
import type { ConformanceOptions } from "../types.js";

const T0 = 1_700_000_000_000;

export function claimNextGroup(options: ConformanceOptions): void {
  describe("claim-next", () => {
    it("claims the oldest ready tasks with their inputs and live, fenceable claims", async () => {
      const { backend } = await useSubject(options);
      const p = uid("cn");
      for (let i = 0; i < 5; i++) {
        await backend.saveSnapshot(
          atTask(`${p}-${i}`, "t1", { initialInput: text(`in-${i}`), updatedAt: T0 + (5 - i) }),
        );
      }
      const claimed = await backend.claimAvailableTasks("worker-1", 2, 30_000);
      expect(claimed.map((c) => c.instanceId)).toEqual([`${p}-4`, `${p}-3`]);
      for (const task of claimed) {
        expect(task.claim).toMatchObject({ instanceId: task.instanceId, taskId: "t1", workerId: "worker-1" });
        expect(task.claim.token).toBeGreaterThan(0);
        expect(task.claim.expiresAt).not.toBeNull();
        expect(new TextDecoder().decode(task.input)).toBe(`in-${task.instanceId.slice(-1)}`);
        expect(task.workflowDefinitionHash).toBe("def-hash-1");
      }
      expect((await backend.findAvailableTasks("w", 10)).map((t) => t.instanceId)).toEqual([
        `${p}-2`,
        `${p}-1`,
        `${p}-0`,
      ]);
      // The claims are the live ones: a fenced write lands, another claimer is refused.
      const first = claimed[0] as ClaimedTask;
      await backend.saveTaskResult(first.instanceId, "t1", text("done"), { claim: first.claim });
      expect(await backend.claimTask(first.instanceId, "t1", "worker-2", 1000)).toBeNull();
      const rest = await backend.claimAvailableTasks("worker-2", 10);
      expect(rest.map((c) => c.instanceId)).toEqual([`${p}-2`, `${p}-1`, `${p}-0`]);
      expect(rest.every((c) => c.claim.expiresAt === null)).toBe(true);
      expect(await backend.claimAvailableTasks("worker-3", 10, 1000)).toEqual([]);
    });

    it("skips claimed, completed and non-ready tasks", async () => {
      const { backend } = await useSubject(options);
      const p = uid("s");
      await backend.saveSnapshot(atTask(`${p}-claimed`, "t1"));
      await backend.saveSnapshot(atTask(`${p}-done`, "t1", { completed: { t1: text("x") } }));
      await backend.saveSnapshot(atTask(`${p}-ready`, "t1"));
      await backend.claimTask(`${p}-claimed`, "t1", "other", 60_000);
      const claimed = await backend.claimAvailableTasks("w", 10, 30_000);
      expect(claimed.map((c) => c.instanceId)).toEqual([`${p}-ready`]);
    });

    it("a task whose claim expired is claimed again with a larger token", async () => {
      const { backend } = await useSubject(options);
      const id = uid();
      await backend.saveSnapshot(atTask(id, "t1"));
      const [first] = await backend.claimAvailableTasks("worker-1", 1, 150);
      expect(first).toBeDefined();
      const again = await eventually("re-claim after expiry", async () => {
        const got = await backend.claimAvailableTasks("worker-2", 1, 30_000);
        return got.length > 0 ? got : undefined;
      });
      expect(again[0]?.claim.workerId).toBe("worker-2");
      expect(again[0]?.claim.token).toBeGreaterThan(first?.claim.token ?? Number.POSITIVE_INFINITY);
    });

    it(
      "10 concurrent workers over 200 ready tasks claim each exactly once",
      async () => {
        const { backend, connect } = await useSubject(options);
        const clients = [backend, await connect(), await connect()];
        const p = uid("race");
        const ids = Array.from({ length: 200 }, (_, i) => `${p}-${String(i).padStart(3, "0")}`);
        for (let i = 0; i < ids.length; i += 20) {
          await Promise.all(
            ids
              .slice(i, i + 20)
              .map((id, j) => backend.saveSnapshot(atTask(id, "t1", { updatedAt: T0 + i + j }))),
          );
        }
        const byWorker = await Promise.all(
          Array.from({ length: 10 }, async (_, w) => {
            const client = clients[w % clients.length]!;
            const mine: string[] = [];
            for (let round = 0; round < 400; round++) {
              const got = await client.claimAvailableTasks(`worker-${w}`, 7, 60_000);
              if (got.length === 0) break;
              mine.push(...got.map((c) => c.instanceId));
            }
            return mine;
          }),
        );
        const all = byWorker.flat();
        expect(all.length).toBe(200);
        expect(new Set(all).size).toBe(200);
        expect([...all].sort()).toEqual(ids);
        expect(await backend.findAvailableTasks("w", 10)).toEqual([]);
      },
      options.slowTestTimeoutMs ?? 60_000,
    );
  });
}
