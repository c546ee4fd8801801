import { describe, expect, it } from "vitest";
import { ErrorCode } from "../../errors.js";
import { atTask, comparable } from "../fixtures.js";
import { eventually, rejection, text, uid, useSubject } from "../harness.js";
import type { ConformanceOptions } from "../types.js";

export function fencingGroup(options: ConformanceOptions): void {
  describe("fencing", () => {
    it("tokens strictly increase across successive claims of one task", async () => {
      const { backend } = await useSubject(options);
      const id = uid();
      let previous = 0;
      for (let i = 0; i < 6; i++) {
        const claim = await backend.claimTask(id, "t1", `worker-${i % 2}`, 30_000);
        expect(claim).not.toBeNull();
        expect(claim?.token).toBeGreaterThan(previous);
        previous = claim?.token ?? 0;
        await backend.releaseTaskClaim(id, "t1", `worker-${i % 2}`);
      }
    });

    it("tokens keep increasing after the instance is deleted and re-created", async () => {
      const { backend } = await useSubject(options);
      const id = uid();
      await backend.saveSnapshot(atTask(id, "t1"));
      const before = await backend.claimTask(id, "t1", "worker-1", 30_000);
      await backend.deleteSnapshot(id);
      await backend.saveSnapshot(atTask(id, "t1"));
      const after = await backend.claimTask(id, "t1", "worker-1", 30_000);
      expect(after?.token).toBeGreaterThan(before?.token ?? Number.POSITIVE_INFINITY);
      // The claim from before the delete fences nothing now.
      expect(
        await rejection(backend.saveTaskResult(id, "t1", text("x"), { claim: before ?? 1 })),
      ).toMatchObject({
        code: ErrorCode.ClaimLost,
      });
    });

    it("writes fenced with the live claim land (claim object, { taskId, token } or bare token)", async () => {
      const { backend } = await useSubject(options);
      const id = uid();
      await backend.saveSnapshot(atTask(id, "t1"));
      const claim = await backend.claimTask(id, "t1", "worker-1", 30_000);
      if (claim === null) throw new Error("claim failed");
      await backend.saveTaskResult(id, "t1", text("a"), { claim });
      await backend.saveTaskResult(id, "t1", text("b"), { claim: { taskId: "t1", token: claim.token } });
      await backend.saveTaskResult(id, "t1", text("c"), { claim: claim.token });
      const next = atTask(id, "t2", { completed: { t1: text("c") } });
      await backend.saveSnapshot(next, { claim });
      expect(comparable(await backend.loadSnapshot(id))).toEqual(comparable(next));
    });

    it("a write fenced with a released claim is refused (ClaimLostError) and changes nothing", async () => {
      const { backend } = await useSubject(options);
      const id = uid();
      const original = atTask(id, "t1");
      await backend.saveSnapshot(original);
      const claim = await backend.claimTask(id, "t1", "worker-1", 30_000);
      if (claim === null) throw new Error("claim failed");
      await backend.releaseTaskClaim(id, "t1", "worker-1");
      expect(await rejection(backend.saveTaskResult(id, "t1", text("late"), { claim }))).toMatchObject({
        code: ErrorCode.ClaimLost,
      });
      expect(await rejection(backend.saveSnapshot(atTask(id, "t2"), { claim }))).toMatchObject({
        code: ErrorCode.ClaimLost,
      });
      expect(comparable(await backend.loadSnapshot(id))).toEqual(comparable(original));
    });

    it("after a takeover, the stale holder's writes are refused and the new holder's land", async () => {
      const { backend } = await useSubject(options);
      const id = uid();
      const original = atTask(id, "t1");
      await backend.saveSnapshot(original);
      const stale = await backend.claimTask(id, "t1", "worker-1", 150);
      if (stale === null) throw new Error("claim failed");
      const fresh = await eventually(
        "takeover",
        async () => (await backend.claimTask(id, "t1", "worker-2", 30_000)) ?? undefined,
      );
      expect(
        await rejection(backend.saveTaskResult(id, "t1", text("stale"), { claim: stale })),
      ).toMatchObject({
        code: ErrorCode.ClaimLost,
      });
      expect(await rejection(backend.saveSnapshot(atTask(id, "t9"), { claim: stale }))).toMatchObject({
        code: ErrorCode.ClaimLost,
      });
      expect(comparable(await backend.loadSnapshot(id))).toEqual(comparable(original));
      await backend.saveTaskResult(id, "t1", text("fresh"), { claim: fresh });
      const loaded = await backend.loadSnapshot(id);
      expect(
        loaded.state.kind === "InProgress" && Array.from(loaded.state.completedTasks.t1?.output ?? []),
      ).toEqual(Array.from(text("fresh")));
    });

    it("an expired claim fences nothing even before anyone takes it over", async () => {
      const { backend } = await useSubject(options);
      const id = uid();
      await backend.saveSnapshot(atTask(id, "t1"));
      const claim = await backend.claimTask(id, "t1", "worker-1", 100);
      if (claim === null) throw new Error("claim failed");
      await eventually("expiry", async () => {
        try {
          await backend.extendTaskClaim(id, "t1", "worker-1", 1);
          return undefined;
        } catch {
          return true;
        }
      });
      expect(await rejection(backend.saveTaskResult(id, "t1", text("late"), { claim }))).toMatchObject({
        code: ErrorCode.ClaimLost,
      });
      const loaded = await backend.loadSnapshot(id);
      expect(loaded.state.kind === "InProgress" && Object.keys(loaded.state.completedTasks)).toEqual([]);
    });

    it("a fence with a forged token is refused", async () => {
      const { backend } = await useSubject(options);
      const id = uid();
      await backend.saveSnapshot(atTask(id, "t1"));
      const claim = await backend.claimTask(id, "t1", "worker-1", 30_000);
      if (claim === null) throw new Error("claim failed");
      expect(
        await rejection(backend.saveTaskResult(id, "t1", text("x"), { claim: claim.token + 1 })),
      ).toMatchObject({
        code: ErrorCode.ClaimLost,
      });
      expect(
        await rejection(
          backend.saveSnapshot(atTask(id, "t2"), { claim: { taskId: "other-task", token: claim.token } }),
        ),
      ).toMatchObject({ code: ErrorCode.ClaimLost });
    });

    it("a fence naming another instance or task is a ValidationError", async () => {
      const { backend } = await useSubject(options);
      const id = uid();
      await backend.saveSnapshot(atTask(id, "t1"));
      const claim = await backend.claimTask(id, "t1", "worker-1", 30_000);
      if (claim === null) throw new Error("claim failed");
      expect(await rejection(backend.saveSnapshot(atTask(uid(), "t1"), { claim }))).toMatchObject({
        code: ErrorCode.Validation,
      });
      expect(await rejection(backend.saveTaskResult(id, "t2", text("x"), { claim }))).toMatchObject({
        code: ErrorCode.Validation,
      });
    });
  });
}
