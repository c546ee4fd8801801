// The race a fenced write must close: a stale holder's write has passed its last fence check,
// and before it commits, its claim expires and another worker takes the task over. The commit
// must then be refused (ClaimLostError) and nothing written.
//
// Deterministic: the driver's Collection.prototype.updateOne is wrapped so that the stale
// holder's commit (the compare-and-set of the instance document) first runs the takeover and
// only then reaches the server. (A design that checks the claim in one document and commits
// another lets that write land; see the package README.)
import { ErrorCode, type PersistentBackend, type TaskClaim } from "@sayiir/persistence-core";
import { atTask, comparable, eventually, rejection, text, uid } from "@sayiir/persistence-core/conformance";
import { Collection, type Document, type MongoClient } from "mongodb";
import { afterEach, describe, expect, it } from "vitest";
import type { MongoBackend } from "../src/index.js";
import { connectForSuite, createSubject, DATABASE, server } from "./subject.js";

type UpdateOne = Collection<Document>["updateOne"];
const originalUpdateOne: UpdateOne = Collection.prototype.updateOne;

/** Runs `hook` once, right before the next conditional (`v` in the filter) update of `collection`. */
function beforeNextCommit(collection: string, hook: () => Promise<void>): { fired: () => boolean } {
  let armed = true;
  let fired = false;
  Collection.prototype.updateOne = async function (
    this: Collection<Document>,
    ...args: Parameters<UpdateOne>
  ) {
    const filter = args[0] as Document | undefined;
    if (armed && this.collectionName === collection && filter !== undefined && "v" in filter) {
      armed = false;
      await hook();
      fired = true;
    }
    return originalUpdateOne.apply(this, args);
  } as UpdateOne;
  return { fired: () => fired };
}

describe.skipIf(server === null)("fenced writes vs a takeover between the fence check and the commit", () => {
  let client: MongoClient;
  connectForSuite((c) => {
    client = c;
  });
  afterEach(() => {
    Collection.prototype.updateOne = originalUpdateOne;
  });

  async function scenario(
    write: (stale: PersistentBackend, id: string, claim: TaskClaim) => Promise<void>,
  ): Promise<void> {
    const subject = await createSubject();
    const other = (await subject.connect?.()) as MongoBackend;
    const snapshots = `${subject.prefix}snapshots`;
    try {
      const stale = subject.backend;
      const id = uid();
      const original = atTask(id, "t1");
      await stale.saveSnapshot(original);
      const claim = await stale.claimTask(id, "t1", "stale-worker", 300);
      if (claim === null) throw new Error("claim failed");
      let takeover: TaskClaim | undefined;
      const window = beforeNextCommit(snapshots, async () => {
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
      Collection.prototype.updateOne = originalUpdateOne;
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
