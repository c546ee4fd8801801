import { describe, expect, it } from "vitest";
import { ErrorCode } from "../../errors.js";
import { rejection, uid, useSubject } from "../harness.js";
import type { ConformanceOptions } from "../types.js";

const SKEW_MS = 2_000;

export function claimsGroup(options: ConformanceOptions): void {
  describe("claims", () => {
    it("a claim carries the ids, timestamps in epoch ms and a positive safe-integer token", async () => {
      const { backend } = await useSubject(options);
      const id = uid();
      const before = Date.now();
      const claim = await backend.claimTask(id, "t1", "worker-1", 30_000);
      expect(claim).not.toBeNull();
      if (claim === null) return;
      expect(claim).toMatchObject({ instanceId: id, taskId: "t1", workerId: "worker-1" });
      expect(Number.isSafeInteger(claim.token) && claim.token > 0).toBe(true);
      expect(Math.abs(claim.claimedAt - before)).toBeLessThan(SKEW_MS);
      expect(claim.expiresAt).not.toBeNull();
      expect((claim.expiresAt ?? 0) - claim.claimedAt).toBeGreaterThanOrEqual(29_000);
      expect((claim.expiresAt ?? 0) - claim.claimedAt).toBeLessThanOrEqual(31_000);
    });

    it("a claim without ttl has expiresAt null", async () => {
      const { backend } = await useSubject(options);
      const claim = await backend.claimTask(uid(), "t1", "worker-1");
      expect(claim?.expiresAt).toBeNull();
    });

    it("a second claimer gets null, the holder included, until the claim is released", async () => {
      const { backend } = await useSubject(options);
      const id = uid();
      const first = await backend.claimTask(id, "t1", "worker-1", 30_000);
      expect(first).not.toBeNull();
      expect(await backend.claimTask(id, "t1", "worker-2", 30_000)).toBeNull();
      expect(await backend.claimTask(id, "t1", "worker-1", 30_000)).toBeNull();
      await backend.releaseTaskClaim(id, "t1", "worker-1");
      const second = await backend.claimTask(id, "t1", "worker-2", 30_000);
      expect(second?.workerId).toBe("worker-2");
      expect(second?.token).toBeGreaterThan(first?.token ?? Number.POSITIVE_INFINITY);
    });

    it("one winner among 20 concurrent claimers of one task", async () => {
      const { backend, connect } = await useSubject(options);
      const clients = [backend, await connect(), await connect()];
      const id = uid();
      const results = await Promise.all(
        Array.from({ length: 20 }, (_, i) =>
          clients[i % clients.length]!.claimTask(id, "t1", `worker-${i}`, 30_000),
        ),
      );
      const winners = results.filter((r) => r !== null);
      expect(winners).toHaveLength(1);
    });

    it("claims are per (instance, task): other tasks and instances are unaffected", async () => {
      const { backend } = await useSubject(options);
      const id = uid();
      expect(await backend.claimTask(id, "t1", "w", 30_000)).not.toBeNull();
      expect(await backend.claimTask(id, "t2", "w", 30_000)).not.toBeNull();
      expect(await backend.claimTask(uid(), "t1", "w", 30_000)).not.toBeNull();
    });

    it("ids that collide under a naive instance:task key stay distinct", async () => {
      const { backend } = await useSubject(options);
      const pairs: Array<[string, string]> = [
        ["a:b", "c"],
        ["a", "b:c"],
        ["a/b", "c"],
        ["a", "b/c"],
        ["a|b", "c"],
        ["a", "b|c"],
        ["a\u0001b", "c"],
        ["a", "b\u0001c"],
        ["{a}", "b"],
        ["{a", "}b"],
      ];
      const prefix = uid("p");
      for (const [instance, task] of pairs) {
        const claim = await backend.claimTask(prefix + instance, task, "worker", 30_000);
        expect(claim, `${instance} / ${task}`).not.toBeNull();
      }
    });

    it("a claim is its own record: it needs no snapshot, and does not create one", async () => {
      const { backend } = await useSubject(options);
      const id = uid();
      expect(await backend.claimTask(id, "t1", "w", 30_000)).not.toBeNull();
      expect(await backend.listSnapshots()).toEqual([]);
    });

    it("release by another worker gives ClaimLostError and the claim stays", async () => {
      const { backend } = await useSubject(options);
      const id = uid();
      await backend.claimTask(id, "t1", "worker-1", 30_000);
      expect(await rejection(backend.releaseTaskClaim(id, "t1", "worker-2"))).toMatchObject({
        code: ErrorCode.ClaimLost,
      });
      expect(await backend.claimTask(id, "t1", "worker-3", 30_000)).toBeNull();
    });

    it("release of a missing claim gives NotFoundError (also after a release)", async () => {
      const { backend } = await useSubject(options);
      const id = uid();
      expect(await rejection(backend.releaseTaskClaim(id, "t1", "worker-1"))).toMatchObject({
        code: ErrorCode.NotFound,
      });
      await backend.claimTask(id, "t1", "worker-1", 30_000);
      await backend.releaseTaskClaim(id, "t1", "worker-1");
      expect(await rejection(backend.releaseTaskClaim(id, "t1", "worker-1"))).toMatchObject({
        code: ErrorCode.NotFound,
      });
    });

    // Found by the 30-minute crash soak's linearizability check (issue 20): DynamoDB answered both
    // of two concurrent releases of one claim by its holder with success, taking the other's
    // tombstone for its own retried write.
    it("two concurrent releases of one claim by its holder: one succeeds, the other gets NotFoundError", async () => {
      const { backend } = await useSubject(options);
      for (let round = 0; round < 5; round++) {
        const id = uid();
        await backend.claimTask(id, "t1", "worker-1", 30_000);
        const outcomes = await Promise.allSettled([
          backend.releaseTaskClaim(id, "t1", "worker-1"),
          backend.releaseTaskClaim(id, "t1", "worker-1"),
        ]);
        const codes = outcomes.map((o) =>
          o.status === "fulfilled" ? "released" : ((o.reason as { code?: string }).code ?? String(o.reason)),
        );
        expect(codes.sort()).toEqual([ErrorCode.NotFound, "released"].sort());
      }
    });

    it("extend by another worker gives ClaimLostError; extend of a missing claim gives NotFoundError", async () => {
      const { backend } = await useSubject(options);
      const id = uid();
      expect(await rejection(backend.extendTaskClaim(id, "t1", "worker-1", 1000))).toMatchObject({
        code: ErrorCode.NotFound,
      });
      await backend.claimTask(id, "t1", "worker-1", 30_000);
      expect(await rejection(backend.extendTaskClaim(id, "t1", "worker-2", 1000))).toMatchObject({
        code: ErrorCode.ClaimLost,
      });
    });

    it("extend of a claim without ttl keeps it without ttl and keeps its token", async () => {
      const { backend } = await useSubject(options);
      const id = uid();
      const claim = await backend.claimTask(id, "t1", "worker-1");
      const extended = await backend.extendTaskClaim(id, "t1", "worker-1", 5_000);
      expect(extended.expiresAt).toBeNull();
      expect(extended.token).toBe(claim?.token);
      expect(extended.workerId).toBe("worker-1");
    });
  });
}
