// Scheduling on MongoDB: where schedules, attempts and the queue-led index fields live in the
// instance document, failTasks as ONE compare-and-set per instance, a lost race re-judged, and
// takeovers by claim-next counted in the document.
import { ErrorCode } from "@sayiir/persistence-core";
import { atTask, claimOrFail, inProgress, sleep, uid } from "@sayiir/persistence-core/conformance";
import type { Document, MongoClient } from "mongodb";
import { describe, expect, it } from "vitest";
import { type InstanceDoc, orderKey } from "../src/layout.js";
import { beforeNextCommit, connectForSuite, createSubject, DATABASE, faultSeam, server } from "./subject.js";

const T0 = 1_700_000_000_000;
const INDEX_FIELDS = { sc: 1, at: 1, qn: 1, qa: 1, qi: 1, qe: 1, tn: 1, tp: 1, ta: 1, ti: 1, te: 1 };

describe.skipIf(server === null)("scheduling in the instance document", () => {
  let client: MongoClient;
  connectForSuite((c) => {
    client = c;
  });

  const fields = (prefix: string, id: string): Promise<Document | null> =>
    client
      .db(DATABASE)
      .collection<{ _id: string }>(`${prefix}snapshots`)
      .findOne({ _id: id }, { projection: INDEX_FIELDS });

  it("the ready fields carry the queue and the effective time; a runAt goes to the timer fields", async () => {
    const subject = await createSubject({ agingMs: 1_000 });
    try {
      const { backend, prefix } = subject;
      const [a, b] = [uid(), uid()];
      await backend.saveSnapshot(
        inProgress(a, {
          position: { kind: "AtTask", taskId: "t1", priority: 5, queue: "gpu" },
          updatedAt: T0,
        }),
      );
      expect(await fields(prefix, a)).toEqual({
        _id: a,
        sc: { r: null, p: 5, n: "gpu" },
        qn: "gpu",
        qa: T0 + 4 * 1_000,
        qi: orderKey(a),
        qe: null,
      });
      await backend.saveSnapshot(
        inProgress(b, { position: { kind: "AtTask", taskId: "t1", runAt: T0 + 5, priority: 1 } }),
      );
      expect(await fields(prefix, b)).toEqual({
        _id: b,
        sc: { r: T0 + 5, p: 1, n: "default" },
        tn: "default",
        tp: 1,
        ta: T0 + 5,
        ti: orderKey(b),
        te: null,
      });
    } finally {
      await subject.backend.close();
      await subject.cleanup?.();
    }
  });

  it("failTasks: the failures of one instance are one update; attempts beside the header, the timer at retryAt", async () => {
    const seam = faultSeam();
    const subject = await createSubject({}, { faults: seam });
    try {
      const { backend, prefix } = subject;
      const id = uid();
      await backend.saveSnapshot(atTask(id, "a", { updatedAt: T0 }));
      const claims = [
        await claimOrFail(backend, id, "a", "worker-a", 60_000),
        await claimOrFail(backend, id, "b", "worker-b", 60_000),
      ];
      const header = (
        await client.db(DATABASE).collection<InstanceDoc>(`${prefix}snapshots`).findOne({ _id: id })
      )?.h;
      const calls: string[] = [];
      seam.hook = (call, proceed) => {
        if (call.collection === `${prefix}snapshots`) calls.push(call.method);
        return proceed();
      };
      const retryAt = Date.now() + 60_000;
      const outcomes = await backend.failTasks([
        { claim: claims[0] as never, error: "boom", retryAt },
        { claim: claims[1] as never, error: "other", retryAt: null },
      ]);
      seam.hook = null;
      expect(outcomes).toEqual([null, null]);
      expect(calls).toEqual(["find", "updateOne"]);
      const doc = await client
        .db(DATABASE)
        .collection<InstanceDoc>(`${prefix}snapshots`)
        .findOne({ _id: id });
      expect(doc?.h).toEqual(header); // the header is not rewritten
      expect(doc?.c).toEqual([]);
      expect(doc?.at).toEqual([
        { t: "a", n: 1, m: "boom", a: expect.any(Number), y: retryAt },
        { t: "b", n: 1, m: "other", a: expect.any(Number), y: null },
      ]);
      expect(await fields(prefix, id)).toMatchObject({ tn: "default", tp: 3, ta: retryAt, te: null });
      expect((await fields(prefix, id))?.qa).toBeUndefined();
    } finally {
      await subject.backend.close();
      await subject.cleanup?.();
    }
  });

  it("failTasks re-judges on the new version after a lost race: a takeover in between makes it ClaimLost", async () => {
    const seam = faultSeam();
    const subject = await createSubject({}, { faults: seam });
    try {
      const { backend, prefix } = subject;
      const id = uid();
      await backend.saveSnapshot(atTask(id, "t1"));
      const claim = await claimOrFail(backend, id, "t1", "worker-1", 300);
      const other = await subject.connect();
      const race = beforeNextCommit(seam, `${prefix}snapshots`, async () => {
        await sleep(400);
        expect(await other.claimTask(id, "t1", "worker-2", 60_000)).not.toBeNull();
      });
      const [outcome] = await backend.failTasks([{ claim, error: "late", retryAt: null }]);
      expect(race.fired()).toBe(true);
      expect(outcome?.code).toBe(ErrorCode.ClaimLost);
      expect((await backend.loadSnapshot(id)).attempts).toBeUndefined();
      await other.close();
    } finally {
      await subject.backend.close();
      await subject.cleanup?.();
    }
  });

  it("a takeover by claim-next counts in the document; claimTask's does not", async () => {
    const subject = await createSubject();
    try {
      const { backend, prefix } = subject;
      const p = uid("takeover");
      const id = `${p}-a`;
      await backend.saveSnapshot(atTask(id, "t1", { updatedAt: T0 }));
      await claimOrFail(backend, id, "t1", "worker-1", 100);
      await sleep(250);
      await claimOrFail(backend, id, "t1", "worker-2", 100);
      expect((await fields(prefix, id))?.at).toBeUndefined();
      await sleep(250);
      const [task] = (await backend.claimAvailableTasks("worker-3", 100, 60_000)).filter(
        (t) => t.instanceId === id,
      );
      expect(task).toMatchObject({ attempt: 2 });
      expect((await fields(prefix, id))?.at).toEqual([{ t: "t1", n: 1, m: null, a: null }]);
    } finally {
      await subject.backend.close();
      await subject.cleanup?.();
    }
  });
});
