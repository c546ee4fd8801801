import { describe, expect, it } from "vitest";
import type { TaskClaim } from "../../claims.js";
import { ErrorCode } from "../../errors.js";
import { compareIds } from "../../validation.js";
import { atTask, queued } from "../fixtures.js";
import {
  claimOrFail,
  eventually,
  expectCode,
  expirySlackMs,
  sleep,
  text,
  uid,
  useSubject,
} from "../harness.js";
import type { ConformanceOptions } from "../types.js";

/** The fields of a claim the store holds, for equality (a RenewedClaim carries one more). */
function held(claim: TaskClaim): TaskClaim {
  const { instanceId, taskId, workerId, claimedAt, expiresAt, token } = claim;
  return { instanceId, taskId, workerId, claimedAt, expiresAt, token };
}

export function taskClaimsGroup(options: ConformanceOptions): void {
  describe("task claims", () => {
    it("lists each claim of the instance, from claimTask and from claim-next, with holder, token and expiry, by task id", async () => {
      const { backend } = await useSubject(options);
      const q = uid("q");
      const id = uid();
      await backend.saveSnapshot(queued(id, q));
      const [next] = await backend.claimAvailableTasks("w-next", 1, 60_000, { queues: [q] });
      if (next === undefined) throw new Error("claim-next found nothing");
      const forever = await claimOrFail(backend, id, "side-a", "w-a", null);
      const leased = await claimOrFail(backend, id, "side-b", "w-b", 60_000);
      const other = uid("other");
      await backend.saveSnapshot(atTask(other, "t1"));
      await claimOrFail(backend, other, "t1", "w-other");
      expect((await backend.loadTaskClaims(id)).map(held)).toEqual(
        [forever, leased, next.claim].map(held).sort((a, b) => compareIds(a.taskId, b.taskId)),
      );
    });

    it("an extended claim shows its new expiry; a released or completed one is gone", async () => {
      const { backend } = await useSubject(options);
      const id = uid();
      await backend.saveSnapshot(atTask(id, "t1"));
      const extended = await claimOrFail(backend, id, "t1", "w", 10_000);
      const renewed = await backend.extendTaskClaim(id, "t1", "w", 120_000);
      const released = await claimOrFail(backend, id, "t2", "w");
      const completed = await claimOrFail(backend, id, "t3", "w");
      await backend.releaseTaskClaim(id, "t2", "w");
      expect(await backend.completeTasks([{ claim: completed, output: text("three") }])).toEqual([null]);
      const listed = await backend.loadTaskClaims(id);
      expect(listed.map(held)).toEqual([held(renewed)]);
      expect(listed[0]?.token).toBe(extended.token);
      expect(released.token).toBeGreaterThan(0);
    });

    it("an expired claim stays listed (stuck work) until it is taken over, then the new holder's is", async () => {
      const { backend } = await useSubject(options);
      const id = uid();
      await backend.saveSnapshot(atTask(id, "t1"));
      const ttl = 400;
      const crashed = await claimOrFail(backend, id, "t1", "crashed", ttl);
      await sleep(ttl + expirySlackMs(backend));
      expect((await backend.loadTaskClaims(id)).map(held)).toEqual([held(crashed)]);
      const taker = await eventually(
        "the takeover of the expired claim",
        async () => (await backend.claimTask(id, "t1", "taker", 60_000)) ?? undefined,
      );
      expect(taker.token).toBeGreaterThan(crashed.token);
      expect((await backend.loadTaskClaims(id)).map(held)).toEqual([held(taker)]);
    });

    it("a cancel revokes every claim (none listed); a deleted or unknown instance has none", async () => {
      const { backend } = await useSubject(options);
      const id = uid();
      await backend.saveSnapshot(atTask(id, "t1"));
      await claimOrFail(backend, id, "t1", "w");
      await claimOrFail(backend, id, "t2", "w");
      // A claim that lapsed before the cancel is revoked too (found by the fuzzer: Redis, MongoDB).
      const lapsed = await claimOrFail(backend, id, "t3", "w", 200);
      await sleep(200 + expirySlackMs(backend));
      expect((await backend.loadTaskClaims(id)).map((c) => c.taskId)).toContain(lapsed.taskId);
      await backend.cancelWorkflow(id);
      expect(await backend.loadTaskClaims(id)).toEqual([]);
      const deleted = uid();
      await backend.saveSnapshot(atTask(deleted, "t1"));
      await claimOrFail(backend, deleted, "t1", "w");
      await backend.deleteSnapshot(deleted);
      expect(await backend.loadTaskClaims(deleted)).toEqual([]);
      expect(await backend.loadTaskClaims(uid("never"))).toEqual([]);
      await expectCode(backend.loadTaskClaims(""), ErrorCode.Validation);
      await expectCode(backend.loadTaskClaims(7 as unknown as string), ErrorCode.Validation);
    });
  });
}
