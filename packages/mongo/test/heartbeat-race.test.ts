// Found by the 30-minute crash soak's linearizability check (issue 20): a heartbeat judged the
// claim live on the document it read and committed its compare-and-set later; when the claim's
// end passed in between and a second call of the same holder read the document before that
// commit, the second call answered ClaimLostError (expired) while the first one renewed the
// claim, and the holder's next fenced write landed. Linearizably a claim refused as expired
// stays dead (an expired claim is not revived, conformance: expiry). No other worker is involved:
// a takeover changes the document and fails the first commit. The fix: a refusal by expiry
// commits a mark on the version it judged (`d`, lapsed), so the call in flight loses its
// compare-and-set, judges again and is refused too.
//
// Deterministic with the backend's fault seam: the in-flight call's commit waits until the claim
// has run out and the holder's other call (another connection) has been answered. Every pair of
// an in-flight call (heartbeat, fenced write) and a refused one (heartbeat, each fenced write).
// Red before the fix for every pair: the in-flight call succeeded after the refusal.
import { ErrorCode, type PersistentBackend, type TaskClaim } from "@sayiir/persistence-core";
import { atTask, claimOrFail, sleep, text, uid } from "@sayiir/persistence-core/conformance";
import { describe, expect, it } from "vitest";
import { beforeNextCommit, createSubject, faultSeam, server } from "./subject.js";

type Call = (backend: PersistentBackend, id: string, claim: TaskClaim) => Promise<unknown>;

const IN_FLIGHT: Record<string, Call> = {
  heartbeat: (b, id) => b.extendTaskClaim(id, "t1", "holder", 60_000),
  saveTaskResult: (b, id, claim) => b.saveTaskResult(id, "t1", text("in flight"), { claim }),
  completeTasks: async (b, _id, claim) => {
    const [outcome] = await b.completeTasks([{ claim, output: text("in flight") }]);
    if (outcome) throw outcome;
  },
};

const REFUSED: Record<string, Call> = {
  ...IN_FLIGHT,
  saveSnapshot: (b, id, claim) => b.saveSnapshot(atTask(id, "t1"), { claim }),
  failTasks: async (b, _id, claim) => {
    const [outcome] = await b.failTasks([{ claim, error: "boom", retryAt: null }]);
    if (outcome) throw outcome;
  },
  completeStep: async (b, id, claim) => {
    const [outcome] = await b.completeTasks([
      { claim, output: text("step"), next: { kind: "AtTask", taskId: "t2" } },
    ]);
    if (outcome) throw outcome;
  },
};

const codeOf = (outcome: unknown): string =>
  outcome instanceof Error ? ((outcome as { code?: string }).code ?? outcome.message) : "ok";

describe.skipIf(server === null)("a call of the holder in flight across its claim's end", () => {
  for (const [flying, inFlight] of Object.entries(IN_FLIGHT)) {
    for (const [refusing, refused] of Object.entries(REFUSED)) {
      it(`${flying} in flight, ${refusing} refused as expired: both refused, nothing renewed or written`, async () => {
        const seam = faultSeam();
        const subject = await createSubject({}, { faults: seam });
        const other: PersistentBackend = await subject.connect();
        try {
          const holder = subject.backend;
          const id = uid();
          await holder.saveSnapshot(atTask(id, "t1"));
          const claim = await claimOrFail(holder, id, "t1", "holder", 300);
          let second: unknown;
          const window = beforeNextCommit(seam, `${subject.prefix}snapshots`, async () => {
            // The in-flight call has judged the claim live; before its commit the claim runs out
            // and the holder's other call reads the unchanged claim and is refused.
            await sleep(Math.max(0, claim.expiresAt! - Date.now()) + 500);
            second = await refused(other, id, claim).then(
              () => "ok",
              (e: unknown) => e,
            );
          });
          const first = await inFlight(holder, id, claim).then(
            () => "ok",
            (e: unknown) => e,
          );
          expect(window.fired()).toBe(true);
          expect([codeOf(first), codeOf(second)]).toEqual([ErrorCode.ClaimLost, ErrorCode.ClaimLost]);
          // The claim stays dead: a heartbeat and a fenced write of the holder are refused.
          expect(codeOf(await holder.extendTaskClaim(id, "t1", "holder", 60_000).catch((e) => e))).toBe(
            ErrorCode.ClaimLost,
          );
          expect(codeOf(await holder.saveTaskResult(id, "t1", text("late"), { claim }).catch((e) => e))).toBe(
            ErrorCode.ClaimLost,
          );
          // Nothing was written, and the holder may still release its expired claim.
          const stored = await holder.loadSnapshot(id);
          expect(stored.state.kind === "InProgress" && stored.state.completedTasks.t1).toBeFalsy();
          await holder.releaseTaskClaim(id, "t1", "holder");
          expect(await holder.claimTask(id, "t1", "next", 60_000)).not.toBeNull();
        } finally {
          seam.hook = null;
          await other.close();
          await subject.backend.close();
          await subject.cleanup?.();
        }
      });
    }
  }
});
