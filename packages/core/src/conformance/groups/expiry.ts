import { describe, expect, it } from "vitest";
import { ErrorCode } from "../../errors.js";
import { atTask, awaiting } from "../fixtures.js";
import { beforeDeadline, eventually, expirySlackMs, rejection, sleep, uid, useSubject } from "../harness.js";
import type { ConformanceOptions } from "../types.js";
import { inFlightCases } from "./in-flight.js";

export function expiryGroup(options: ConformanceOptions): void {
  describe("expiry", () => {
    it("another worker takes over a claim after its 200 ms ttl, with a larger token", async () => {
      const { backend } = await useSubject(options);
      const SKEW_MS = expirySlackMs(backend);
      const id = uid();
      const first = await backend.claimTask(id, "t1", "worker-1", 200);
      expect(first).not.toBeNull();
      await beforeDeadline(
        first?.expiresAt ?? 0,
        () => backend.claimTask(id, "t1", "worker-2", 200),
        (taken) => expect(taken).toBeNull(),
      );
      const second = await eventually("the expired claim to be taken over", async () => {
        return (await backend.claimTask(id, "t1", "worker-2", 10_000)) ?? undefined;
      });
      expect(Date.now() - (first?.claimedAt ?? 0)).toBeGreaterThanOrEqual(200 - SKEW_MS);
      expect(second.workerId).toBe("worker-2");
      expect(second.token).toBeGreaterThan(first?.token ?? Number.POSITIVE_INFINITY);
      // The former holder has lost it for good.
      expect(await rejection(backend.releaseTaskClaim(id, "t1", "worker-1"))).toMatchObject({
        code: ErrorCode.ClaimLost,
      });
    });

    it("a claim without ttl never expires", async () => {
      const { backend } = await useSubject(options);
      const id = uid();
      expect(await backend.claimTask(id, "t1", "worker-1")).not.toBeNull();
      await sleep(400);
      expect(await backend.claimTask(id, "t1", "worker-2", 1000)).toBeNull();
    });

    it("extend renews to now + duration (not old expiry + duration) and keeps the claim alive", async () => {
      const { backend } = await useSubject(options);
      const SKEW_MS = expirySlackMs(backend);
      const id = uid();
      // 600 ms: long enough that a loaded machine still extends before it lapses.
      const claim = await backend.claimTask(id, "t1", "worker-1", 600);
      await sleep(150);
      const requested = Date.now();
      const extended = await backend.extendTaskClaim(id, "t1", "worker-1", 1_000);
      expect(extended.token).toBe(claim?.token);
      const expiresAt = extended.expiresAt ?? 0;
      expect(expiresAt).toBeGreaterThanOrEqual(requested + 1_000 - SKEW_MS);
      expect(expiresAt).toBeLessThanOrEqual(Date.now() + 1_000 + SKEW_MS);
      // Past the original 600 ms ttl, the claim is still held.
      await sleep(600);
      await beforeDeadline(
        expiresAt,
        () => backend.claimTask(id, "t1", "worker-2", 1000),
        (taken) => expect(taken).toBeNull(),
      );
      // Renewal, not addition: a short extension can shorten the lease.
      const shortened = await backend.extendTaskClaim(id, "t1", "worker-1", 100);
      expect(shortened.expiresAt ?? 0).toBeLessThan(expiresAt);
      await eventually("the shortened claim to lapse", async () =>
        (await backend.claimTask(id, "t1", "worker-2", 10_000)) ? true : undefined,
      );
    });

    it("an expired claim is not revived by extend (ClaimLostError), even if nobody took it", async () => {
      const { backend } = await useSubject(options);
      const SKEW_MS = expirySlackMs(backend);
      const id = uid();
      await backend.claimTask(id, "t1", "worker-1", 150);
      await sleep(150 + SKEW_MS + 100);
      expect(await rejection(backend.extendTaskClaim(id, "t1", "worker-1", 10_000))).toMatchObject({
        code: ErrorCode.ClaimLost,
      });
      expect(await backend.claimTask(id, "t1", "worker-2", 10_000)).not.toBeNull();
    });

    it("the holder may release its own expired claim that nobody took over", async () => {
      const { backend } = await useSubject(options);
      const SKEW_MS = expirySlackMs(backend);
      const id = uid();
      await backend.claimTask(id, "t1", "worker-1", 150);
      await sleep(150 + SKEW_MS + 100);
      await backend.releaseTaskClaim(id, "t1", "worker-1");
      expect(await rejection(backend.releaseTaskClaim(id, "t1", "worker-1"))).toMatchObject({
        code: ErrorCode.NotFound,
      });
    });

    // Found by the differential fuzzer (issue 20): DynamoDB kept a claim-next lease keyed at its
    // first end, so a task whose holder shortened its lease and crashed waited for that first end.
    it("a claim-next lease shortened by a renewal can be taken over when the renewed lease ends", async () => {
      const { backend } = await useSubject(options);
      const id = uid();
      await backend.saveSnapshot(atTask(id, "t1"));
      const [held] = await backend.claimAvailableTasks("crashed", 1, 60_000);
      expect(held?.instanceId).toBe(id);
      await backend.extendTaskClaim(id, "t1", "crashed", 300);
      await sleep(300 + expirySlackMs(backend));
      const taken = await eventually("the takeover of the shortened lease", async () => {
        const [task] = await backend.claimAvailableTasks("taker", 1, 60_000);
        return task;
      });
      expect({ id: taken.instanceId, attempt: taken.attempt }).toEqual({ id, attempt: 2 });
      expect(taken.claim.token).toBeGreaterThan(held?.claim.token ?? 0);
    });

    // Found by the differential fuzzer (issue 20): on DynamoDB a result written for another task
    // moved a leased head back among the ready tasks keyed by the time of that write, so once the
    // lease ended a wait that had timed out long ago was served after tasks that came due later.
    it("an ended claim-next lease keeps its task's order when a result of another task was written meanwhile", async () => {
      const { backend } = await useSubject(options);
      const wait = uid("timed-out");
      const later = uid("later");
      await backend.saveSnapshot(awaiting(wait, "approval", "t1", { timeoutAt: 1_000 }));
      await backend.saveSnapshot(atTask(later, "t1", { updatedAt: 1_700_000_000_000 }));
      const [held] = await backend.claimAvailableTasks("crashed", 1, 300);
      expect(held?.instanceId).toBe(wait);
      await backend.saveTaskResult(wait, "side", new TextEncoder().encode("side effect"));
      await sleep(300 + expirySlackMs(backend));
      const found = await eventually("the ended lease to be found", async () => {
        const tasks = await backend.findAvailableTasks("taker", 2);
        return tasks.length === 2 ? tasks : undefined;
      });
      expect(found.map((t) => [t.instanceId, t.timedOut === true])).toEqual([
        [wait, true],
        [later, false],
      ]);
    });

    inFlightCases(options);
  });
}
