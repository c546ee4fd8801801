// The adapter's side of purgeFinished, loadTaskResult and loadTaskClaims (the contract is the
// conformance groups "purge", "task-result reads" and "task claims"): the finish time `fa` as
// stored, two purgers at once, the migration of finished documents without `fa`, and the one
// results entry and one blob a task-result read touches.
import type { PersistentBackend } from "@sayiir/persistence-core";
import {
  atTask,
  claimOrFail,
  finished,
  patternBytes,
  sleep,
  text,
  uid,
} from "@sayiir/persistence-core/conformance";
import type { Document, MongoClient } from "mongodb";
import { describe, expect, it } from "vitest";
import { INDEX } from "../src/index.js";
import { connectForSuite, createSubject, DATABASE, faultSeam, type MongoSubject, server } from "./subject.js";

/** How far the server's clock may be from this process's in these tests (same host or CI network). */
const CLOCK_SLACK_MS = 5_000;

/** Runs `body` over a fresh subject, then closes it and drops its collections. */
async function withSubject(body: (subject: MongoSubject) => Promise<void>): Promise<void> {
  const subject = await createSubject();
  try {
    await body(subject);
  } finally {
    await subject.backend.close();
    await subject.cleanup?.();
  }
}

/** A workflow that finishes Cancelled with two results, a claim and an event payload in a blob. */
async function cancelledWithSatellites(backend: PersistentBackend, id: string): Promise<void> {
  await backend.saveSnapshot(
    atTask(id, "t2", { completed: { t0: text("zero"), t1: patternBytes(4096, 3) } }),
  );
  await claimOrFail(backend, id, "t2", "w");
  // Over the 16 KiB inline limit of events: a blob in the outputs collection.
  await backend.sendEvent(id, "never", patternBytes(20_000, 5));
  await backend.cancelWorkflow(id, { reason: "purge me" });
}

describe.skipIf(server === null)("retention", () => {
  let admin: MongoClient;
  connectForSuite((client) => {
    admin = client;
  });
  const snapshots = (prefix: string) =>
    admin.db(DATABASE).collection<{ _id: string; fa?: number; u?: number }>(`${prefix}snapshots`);
  const outputs = (prefix: string) => admin.db(DATABASE).collection<Document>(`${prefix}outputs`);
  const finishTime = async (prefix: string, id: string): Promise<unknown> =>
    (await snapshots(prefix).findOne({ _id: id }, { projection: { fa: 1 } }))?.fa;

  it("the finish time is stamped on the store's clock by the write that finishes, and kept by later finished saves", async () => {
    await withSubject(async ({ backend, prefix }) => {
      const before = Date.now();
      const saved = finished(uid("saved"), { kind: "Completed", finalOutput: text("done") });
      await backend.saveSnapshot(saved);
      const stepped = uid("stepped");
      await backend.saveSnapshot(atTask(stepped, "t1"));
      const claim = await claimOrFail(backend, stepped, "t1", "w");
      const next = { kind: "Failed" as const, error: "boom" };
      expect(await backend.completeTasks([{ claim, output: text("one"), next }])).toEqual([null]);
      const cancelled = uid("cancelled");
      await backend.saveSnapshot(atTask(cancelled, "t1"));
      await backend.cancelWorkflow(cancelled);
      const after = Date.now();
      for (const id of [saved.instanceId, stepped, cancelled]) {
        const at = await finishTime(prefix, id);
        // The store's clock, not the snapshot's updatedAt (2023 in the fixtures).
        expect(typeof at, id).toBe("number");
        expect(at as number).toBeGreaterThanOrEqual(before - CLOCK_SLACK_MS);
        expect(at as number).toBeLessThanOrEqual(after + CLOCK_SLACK_MS);
      }
      const first = await finishTime(prefix, saved.instanceId);
      await sleep(20);
      await backend.saveSnapshot({ ...saved, updatedAt: saved.updatedAt + 1 });
      await backend.saveSnapshot({
        ...saved,
        state: { kind: "Failed", error: "changed its mind" },
        updatedAt: saved.updatedAt + 2,
      });
      expect(await finishTime(prefix, saved.instanceId)).toBe(first);
      // Unfinished snapshots (and a paused one) carry none; a deleted one's next life starts without.
      const running = uid("running");
      await backend.saveSnapshot(atTask(running, "t1"));
      const paused = uid("paused");
      await backend.saveSnapshot(atTask(paused, "t1"));
      await backend.pauseWorkflow(paused);
      await backend.deleteSnapshot(cancelled);
      await backend.saveSnapshot(atTask(cancelled, "t1"));
      for (const id of [running, paused, cancelled]) expect(await finishTime(prefix, id), id).toBeUndefined();
      const index = (await snapshots(prefix).indexes()).find((i) => i.name === INDEX.finished);
      const { partialIndexes } = await backend.serverFeatures();
      expect(index).toMatchObject(
        partialIndexes
          ? { key: { fa: 1, _id: 1 }, partialFilterExpression: { fa: { $exists: true } } }
          : { key: { fa: 1, _id: 1 }, sparse: true },
      );
    });
  });

  it("two clients purging at once: every workflow is counted by exactly one, and nothing is left behind", async () => {
    await withSubject(async (subject) => {
      const { backend, prefix } = subject;
      const other = await subject.connect();
      try {
        const ids: string[] = [];
        for (let i = 0; i < 24; i++) {
          const id = `${uid("done")}-${i}`;
          ids.push(id);
          if (i % 3 === 2) await cancelledWithSatellites(backend, id);
          else {
            const state =
              i % 3 === 0
                ? { kind: "Completed" as const, finalOutput: text(`out ${i}`) }
                : { kind: "Failed" as const, error: "x" };
            await backend.saveSnapshot(finished(id, state));
          }
        }
        const running = uid("running");
        await backend.saveSnapshot(atTask(running, "t2", { completed: { t1: text("kept") } }));
        expect(await outputs(prefix).countDocuments({ s: { $in: ids } })).toBeGreaterThan(0);
        const cutoff = Date.now() + CLOCK_SLACK_MS;
        const drain = async (purger: PersistentBackend): Promise<number[]> => {
          const counts: number[] = [];
          for (;;) {
            const n = await purger.purgeFinished({ finishedBefore: cutoff, limit: 3 });
            counts.push(n);
            if (n === 0) return counts;
          }
        };
        const [mine, theirs] = await Promise.all([drain(backend), drain(other)]);
        const sum = (counts: number[]) => counts.reduce((a, b) => a + b, 0);
        expect(sum(mine ?? []) + sum(theirs ?? [])).toBe(ids.length);
        for (const count of [...(mine ?? []), ...(theirs ?? [])]) expect(count).toBeLessThanOrEqual(3);
        // Nothing of them left: no document (claims and events were inside it), no chunk.
        expect(await snapshots(prefix).countDocuments({ _id: { $in: ids } })).toBe(0);
        expect(await outputs(prefix).countDocuments({ s: { $in: ids } })).toBe(0);
        for (const id of ids.filter((_, i) => i % 3 === 2))
          expect(await backend.loadTaskClaims(id)).toEqual([]);
        expect(await backend.listSnapshots()).toEqual([running]);
        expect(new TextDecoder().decode((await backend.loadTaskResult(running, "t1")) ?? undefined)).toBe(
          "kept",
        );
      } finally {
        await other.close();
      }
    });
  });

  it("migrate gives finished documents of an older store their updatedAt as finish time, once", async () => {
    await withSubject(async ({ backend, prefix }) => {
      const [early, late] = [1_700_000_000_000, 1_700_000_100_000];
      const a = { ...finished(uid("a"), { kind: "Completed", finalOutput: text("a") }), updatedAt: early };
      const b = { ...finished(uid("b"), { kind: "Failed", error: "b" }), updatedAt: late };
      await backend.saveSnapshot(a);
      await backend.saveSnapshot(b);
      const cancelled = uid("cancelled");
      await backend.saveSnapshot(atTask(cancelled, "t1"));
      await backend.cancelWorkflow(cancelled);
      const running = uid("running");
      await backend.saveSnapshot(atTask(running, "t1"));
      // The store as version 3 left it: no finish times, no finish index, version 3 recorded.
      await snapshots(prefix).updateMany({}, { $unset: { fa: "" } });
      await snapshots(prefix).dropIndex(INDEX.finished);
      await admin
        .db(DATABASE)
        .collection<{ _id: string; n: number }>(`${prefix}meta`)
        .updateOne({ _id: "schema" }, { $set: { n: 3 } });
      expect(await backend.purgeFinished({ finishedBefore: Date.now() + CLOCK_SLACK_MS, limit: 10 })).toBe(0);

      const reports = await Promise.all([backend.migrate(), backend.migrate()]);
      expect(reports.flatMap((r) => r.applied)).toEqual([4]);
      expect(reports.map((r) => r.version)).toEqual([4, 4]);
      expect(await finishTime(prefix, a.instanceId)).toBe(early);
      expect(await finishTime(prefix, b.instanceId)).toBe(late);
      const cancelledAt = (await snapshots(prefix).findOne({ _id: cancelled }, { projection: { u: 1 } }))?.u;
      expect(await finishTime(prefix, cancelled)).toBe(cancelledAt);
      expect(await finishTime(prefix, running)).toBeUndefined();
      expect((await snapshots(prefix).indexes()).map((i) => i.name)).toContain(INDEX.finished);
      expect(await backend.migrate()).toEqual({ applied: [], version: 4 });
      expect(await finishTime(prefix, a.instanceId)).toBe(early);

      // The estimates order the purge: `early` only, then `late`, then the cancel of today.
      expect(await backend.purgeFinished({ finishedBefore: late, limit: 10 })).toBe(1);
      expect(await backend.purgeFinished({ finishedBefore: late + 1, limit: 10 })).toBe(1);
      expect((await backend.listSnapshots()).sort()).toEqual([cancelled, running].sort());
      expect(await backend.purgeFinished({ finishedBefore: Date.now() + CLOCK_SLACK_MS, limit: 10 })).toBe(1);
    });
  });

  it("loadTaskResult reads one results entry and one blob: never the header, the input or other outputs", async () => {
    const seam = faultSeam();
    const subject = await createSubject({}, { faults: seam });
    try {
      const { backend, prefix } = subject;
      const id = uid();
      const others = Object.fromEntries(
        Array.from({ length: 20 }, (_, i) => [`o${i}`, patternBytes(50_000, i)]),
      );
      await backend.saveSnapshot(
        atTask(id, "t9", {
          completed: { ...others, wanted: text("one") },
          initialInput: patternBytes(100_000, 9),
        }),
      );
      const calls: Array<{ collection: string; method: string; args: readonly unknown[] }> = [];
      seam.hook = (call, proceed) => {
        calls.push(call);
        return proceed();
      };
      expect(new TextDecoder().decode((await backend.loadTaskResult(id, "wanted")) ?? undefined)).toBe("one");
      seam.hook = null;
      expect(calls.map((c) => [c.collection.slice(prefix.length), c.method])).toEqual([
        ["snapshots", "findOne"],
        ["outputs", "find"],
      ]);
      const [, options] = (calls[0]?.args ?? []) as [Document, { projection: Document }];
      // An inclusion projection of a few state fields and the one matching results entry.
      const { r, ...rest } = options.projection;
      expect(r).toEqual({ $elemMatch: { t: "wanted" } });
      expect(Object.values(rest).every((v) => v === 1)).toBe(true);
      for (const field of ["h", "hg", "i", "ig", "e", "c"]) expect(rest).not.toHaveProperty(field);
      const [filter] = (calls[1]?.args ?? []) as [{ g: { $in: string[] } }];
      expect(filter.g.$in).toHaveLength(1);
    } finally {
      await subject.backend.close();
      await subject.cleanup?.();
    }
  });
});
