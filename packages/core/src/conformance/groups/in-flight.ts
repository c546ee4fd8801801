import { expect, it } from "vitest";
import type { PersistentBackend } from "../../backend.js";
import type { TaskClaim } from "../../claims.js";
import { ErrorCode } from "../../errors.js";
import { atTask } from "../fixtures.js";
import { claimOrFail, sleep, text, uid, useSubject } from "../harness.js";
import type { ConformanceOptions } from "../types.js";

/*
 * A call of a claim's holder in flight across the claim's end (found by the 30-minute crash soak
 * on MongoDB, issue 20): it judged the claim live on what it read, and its write reaches the store
 * only after the claim has expired and another call of the same holder, on another connection,
 * was refused as expired. Linearizably the refusal came first and an expired claim is never
 * revived, so the call in flight must be refused too, and the claim stay dead: no renewal, no
 * write. A store that judges on the version read must make the refusal durable (or judge again at
 * commit time). Every pair of a call in flight and a refused one.
 */

type Call = (backend: PersistentBackend, id: string, claim: TaskClaim) => Promise<unknown>;

const throwOutcome = ([outcome]: readonly (Error | null)[]) => {
  if (outcome) throw outcome;
};

const IN_FLIGHT: Record<string, Call> = {
  heartbeat: (b, id) => b.extendTaskClaim(id, "t1", "holder", 60_000),
  saveTaskResult: (b, id, claim) => b.saveTaskResult(id, "t1", text("in flight"), { claim }),
  completeTasks: (b, _id, claim) =>
    b.completeTasks([{ claim, output: text("in flight") }]).then(throwOutcome),
};

const REFUSED: Record<string, Call> = {
  ...IN_FLIGHT,
  saveSnapshot: (b, id, claim) => b.saveSnapshot(atTask(id, "t1"), { claim }),
  failTasks: (b, _id, claim) => b.failTasks([{ claim, error: "boom", retryAt: null }]).then(throwOutcome),
  "completeTasks with next": (b, _id, claim) =>
    b
      .completeTasks([{ claim, output: text("step"), next: { kind: "AtTask", taskId: "t2" } }])
      .then(throwOutcome),
};

/** The error code of a call's outcome, or "ok". */
const settle = (call: Promise<unknown>): Promise<string> =>
  call.then(
    () => "ok",
    (e: unknown) => (e as { code?: string }).code ?? String(e),
  );

export function inFlightCases(options: ConformanceOptions): void {
  for (const [flying, inFlight] of Object.entries(IN_FLIGHT)) {
    for (const [refusing, refused] of Object.entries(REFUSED)) {
      it(`${flying} in flight across the claim's end while ${refusing} is refused as expired: both refused, the claim stays dead`, async (ctx) => {
        const subject = await useSubject(options);
        const { backend: holder, beforeNextWrite } = subject;
        if (beforeNextWrite === undefined) return ctx.skip("the subject gives no beforeNextWrite hook");
        const other = await subject.connect();
        const id = uid();
        await holder.saveSnapshot(atTask(id, "t1"));
        const claim = await claimOrFail(holder, id, "t1", "holder", 200);
        let second = "not called";
        const window = beforeNextWrite(async () => {
          // The call in flight judged the claim live; the claim runs out, and the holder's
          // other call reads it unchanged and is refused.
          await sleep(Math.max(0, (claim.expiresAt ?? 0) - Date.now()) + 250);
          second = await settle(refused(other, id, claim));
        });
        const first = await settle(inFlight(holder, id, claim));
        expect(window.fired()).toBe(true);
        expect([first, second]).toEqual([ErrorCode.ClaimLost, ErrorCode.ClaimLost]);
        // The claim stays dead: a heartbeat and a fenced write of the holder are refused.
        expect(await settle(holder.extendTaskClaim(id, "t1", "holder", 60_000))).toBe(ErrorCode.ClaimLost);
        expect(await settle(holder.saveTaskResult(id, "t1", text("late"), { claim }))).toBe(
          ErrorCode.ClaimLost,
        );
        const stored = await holder.loadSnapshot(id);
        expect(stored.state.kind === "InProgress" && stored.state.completedTasks.t1).toBeFalsy();
        // It is still listed, with the expiry it was refused by; its holder may still release it,
        // and another worker claim the task.
        expect(await holder.loadTaskClaims(id)).toEqual([
          expect.objectContaining({ token: claim.token, workerId: "holder", expiresAt: claim.expiresAt }),
        ]);
        await holder.releaseTaskClaim(id, "t1", "holder");
        expect(await holder.claimTask(id, "t1", "next", 60_000)).not.toBeNull();
      });
    }
  }
}
