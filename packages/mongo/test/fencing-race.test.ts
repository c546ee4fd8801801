// The race a fenced write must close: a stale holder's write has passed its last fence check,
// and before it commits, its claim expires and another worker takes the task over. The commit
// must then be refused (ClaimLostError) and nothing written.
//
// Deterministic: the backend's testing-only fault seam (option `faults`) makes the stale
// holder's commit (the next update of the instance document: its compare-and-set) first run the
// takeover and only then reach the server. A build without the fix reproduces the race: where
// the commit does not compare the version it read (or a design checks the claim in one document
// and commits another, see the package README), the takeover still runs right before the commit
// and the stale write lands, so ClaimLostError and "nothing written" fail.
import { ErrorCode, type PersistentBackend, type TaskClaim } from "@sayiir/persistence-core";
import {
  atTask,
  claimOrFail,
  comparable,
  eventually,
  rejection,
  text,
  uid,
} from "@sayiir/persistence-core/conformance";
import type { MongoClient } from "mongodb";
import { describe, expect, it } from "vitest";
import { beforeNextCommit, connectForSuite, createSubject, DATABASE, faultSeam, server } from "./subject.js";

describe.skipIf(server === null)("fenced writes vs a takeover between the fence check and the commit", () => {
  let client: MongoClient;
  connectForSuite((c) => {
    client = c;
  });

  async function scenario(
    write: (stale: PersistentBackend, id: string, claim: TaskClaim) => Promise<void>,
  ): Promise<void> {
    const seam = faultSeam();
    const subject = await createSubject({}, { faults: seam });
    const other = await subject.connect();
    const snapshots = `${subject.prefix}snapshots`;
    try {
      const stale = subject.backend;
      const id = uid();
      const original = atTask(id, "t1");
      await stale.saveSnapshot(original);
      const claim = await claimOrFail(stale, id, "t1", "stale-worker", 300);
      let takeover: TaskClaim | undefined;
      const window = beforeNextCommit(seam, snapshots, async () => {
        // The stale holder has checked its fence and is about to commit. Its claim runs out and
        // another worker takes the task over, before the commit reaches the server.
        takeover = await eventually(
          "takeover",
          async () => (await other.claimTask(id, "t1", "new-worker", 60_000)) ?? undefined,
        );
      });
      const error = await rejection(write(stale, id, claim));
      expect(window.fired()).toBe(true);
      expect(takeover?.token).toBeGreaterThan(claim.token);
      expect(error).toMatchObject({ code: ErrorCode.ClaimLost });
      // Nothing was written: the snapshot is the original, no output is stored, and the new
      // holder's claim is intact and fences its own write.
      expect(comparable(await stale.loadSnapshot(id))).toEqual(comparable(original));
      expect(await client.db(DATABASE).collection(`${subject.prefix}outputs`).countDocuments({ s: id })).toBe(
        0,
      );
      await other.saveTaskResult(id, "t1", text("fresh"), { claim: takeover as TaskClaim });
      const loaded = await other.loadSnapshot(id);
      expect(loaded.state.kind === "InProgress" && Object.keys(loaded.state.completedTasks)).toEqual(["t1"]);
    } finally {
      seam.hook = null;
      await other.close();
      await subject.backend.close();
      await subject.cleanup?.();
    }
  }

  it("saveTaskResult by the stale holder: ClaimLostError, nothing written", async () => {
    await scenario((stale, id, claim) => stale.saveTaskResult(id, "t1", text("stale"), { claim }));
  });

  it("saveSnapshot by the stale holder: ClaimLostError, nothing written", async () => {
    await scenario((stale, id, claim) =>
      stale.saveSnapshot(atTask(id, "t2", { completed: { t1: text("stale") } }), { claim }),
    );
  });
});
