// Found by the 30-minute crash soak's linearizability check (issue 20), NOT FIXED: a heartbeat
// judges the claim live on the document it read and commits its compare-and-set later; if the
// claim's end passes in between, and a second heartbeat of the same holder reads the document
// before that commit, the second one answers ClaimLostError (expired) while the first one renews
// the claim, and the holder's fenced write then lands. Linearizably, a claim refused as expired
// stays dead (an expired claim is not revived, conformance: expiry), so that write must be refused.
// No other worker is involved: a takeover changes the document and fails the first commit.
//
// Deterministic with the backend's fault seam: the first heartbeat's commit waits until the claim
// has run out and the second heartbeat has been answered. `it.fails` while the bug stands (the
// suite's rule for a known bug): it turns red once it is fixed, to be made a plain `it` then.
import { ErrorCode, type PersistentBackend } from "@sayiir/persistence-core";
import { atTask, claimOrFail, sleep, text, uid } from "@sayiir/persistence-core/conformance";
import { describe, expect, it } from "vitest";
import { beforeNextCommit, createSubject, faultSeam, server } from "./subject.js";

describe.skipIf(server === null)("two heartbeats of one holder around the claim's end", () => {
  it.fails("a claim refused as expired is not renewed by a heartbeat already in flight", async () => {
    const seam = faultSeam();
    const subject = await createSubject({}, { faults: seam });
    const second: PersistentBackend = await subject.connect();
    try {
      const holder = subject.backend;
      const id = uid();
      await holder.saveSnapshot(atTask(id, "t1"));
      const claim = await claimOrFail(holder, id, "t1", "holder", 300);
      let refusal: unknown;
      const window = beforeNextCommit(seam, `${subject.prefix}snapshots`, async () => {
        // The first heartbeat has judged the claim live; before its commit the claim runs out and
        // the holder's second heartbeat (another connection) reads the unrenewed claim.
        await sleep(Math.max(0, claim.expiresAt! - Date.now()) + 500);
        refusal = await second.extendTaskClaim(id, "t1", "holder", 60_000).catch((e: unknown) => e);
      });
      const first = await holder.extendTaskClaim(id, "t1", "holder", 60_000).catch((e: unknown) => e);
      expect(window.fired()).toBe(true);
      const codes = [first, refusal].map((r) => (r as { code?: string }).code ?? "renewed");
      if (codes.includes(ErrorCode.ClaimLost)) {
        // Refused as expired: the claim is dead, and the holder's fenced write must not land.
        const write = await holder
          .saveTaskResult(id, "t1", text("late"), { claim })
          .then(() => "landed")
          .catch((e: unknown) => (e as { code?: string }).code);
        expect(write).toBe(ErrorCode.ClaimLost);
      }
    } finally {
      seam.hook = null;
      await second.close();
      await subject.backend.close();
      await subject.cleanup?.();
    }
  });
});
