import { atTask, awaiting, text, uid } from "@sayiir/persistence-core/conformance";
import { MongoClient } from "mongodb";
import { describe, expect, it } from "vitest";
import { INDEX, MongoBackend } from "../src/index.js";
import { OLD_INDEXES } from "../src/layout.js";
import { DATABASE, dropPrefix, freshPrefix, server } from "./subject.js";

describe.skipIf(server === null)("migrate", () => {
  it("is idempotent and safe when many processes run it at once", async () => {
    const url = server?.url ?? "";
    const prefix = freshPrefix();
    const backends = Array.from(
      { length: 5 },
      () => new MongoBackend({ url, database: DATABASE, collectionPrefix: prefix }),
    );
    const client = new MongoClient(url);
    try {
      const reports = await Promise.all(backends.map((b) => b.migrate()));
      // Every call ends at version 4; exactly one of them applied versions 1 to 4.
      expect(reports.map((r) => r.version)).toEqual(backends.map(() => 4));
      expect(reports.flatMap((r) => r.applied)).toEqual([1, 2, 3, 4]);
      // What each one found on the server is the same.
      const features = await Promise.all(backends.map((b) => b.serverFeatures()));
      expect(new Set(features.map((f) => JSON.stringify(f))).size).toBe(1);
      expect(await backends[0]?.migrate()).toEqual({ applied: [], version: 4 });
      const db = client.db(DATABASE);
      const names = (await db.listCollections({}, { nameOnly: true }).toArray()).map((c) => c.name);
      // Probe collections are dropped again; only the adapter's collections remain (meta holds
      // the schema version, and later the fencing-token counter).
      const ours = names.filter((n) => n.startsWith(prefix)).map((n) => n.slice(prefix.length));
      expect(ours.sort()).toEqual(["meta", "outputs", "snapshots"]);
      const byName = async (collection: string) =>
        Object.fromEntries((await db.collection(prefix + collection).indexes()).map((i) => [i.name, i]));
      const outputs = await byName("outputs");
      expect(outputs[INDEX.blob]).toMatchObject({ key: { g: 1, n: 1 }, unique: true });
      expect(outputs[INDEX.blobInstance]).toMatchObject({ key: { s: 1 } });
      const snapshots = await byName("snapshots");
      expect(snapshots[INDEX.ready]).toMatchObject({ key: { qn: 1, qa: 1, qi: 1, qe: 1 } });
      expect(snapshots[INDEX.timers]).toMatchObject({ key: { tn: 1, tp: 1, ta: 1, ti: 1, te: 1 } });
      expect(snapshots[INDEX.finished]).toMatchObject({ key: { fa: 1, _id: 1 } });
      // The indexes of versions 1 and 2 (not led by the queue) are not there.
      for (const name of OLD_INDEXES) expect(snapshots[name]).toBeUndefined();
    } finally {
      await Promise.all(backends.map((b) => b.close()));
      await dropPrefix(client, prefix);
      await client.close();
    }
  });

  it("a store at version 1 migrates to version 4: the timer index is added, data kept, applied [2, 3, 4] once", async () => {
    const url = server?.url ?? "";
    const prefix = freshPrefix();
    const backend = new MongoBackend({ url, database: DATABASE, collectionPrefix: prefix });
    const client = new MongoClient(url);
    try {
      await backend.migrate();
      const id = uid();
      await backend.saveSnapshot(atTask(id, "t1", { completed: { t0: text("zero") } }));
      // The store as version 1 left it: version 1 recorded, no timer index.
      const db = client.db(DATABASE);
      await db.collection(`${prefix}snapshots`).dropIndex(INDEX.timers);
      await db
        .collection<{ _id: string; n: number }>(`${prefix}meta`)
        .updateOne({ _id: "schema" }, { $set: { n: 1 } });
      const [first, second] = await Promise.all([backend.migrate(), backend.migrate()]);
      expect([first, second].flatMap((r) => r?.applied ?? [])).toEqual([2, 3, 4]);
      expect([first?.version, second?.version]).toEqual([4, 4]);
      const timers = (await db.collection(`${prefix}snapshots`).indexes()).find(
        (i) => i.name === INDEX.timers,
      );
      const { partialIndexes } = await backend.serverFeatures();
      expect(timers).toMatchObject(
        partialIndexes
          ? { key: { tn: 1, tp: 1, ta: 1, ti: 1, te: 1 }, partialFilterExpression: { ta: { $exists: true } } }
          : { key: { tn: 1, tp: 1, ta: 1, ti: 1, te: 1 }, sparse: true },
      );
      expect((await backend.loadSnapshot(id)).state).toMatchObject({ kind: "InProgress" });
      expect((await backend.findAvailableTasks("w", 10)).map((t) => t.instanceId)).toEqual([id]);
    } finally {
      await backend.close();
      await dropPrefix(client, prefix);
      await client.close();
    }
  });

  it("a store at version 2 migrates to version 4: old index entries get queue and key, old indexes dropped, applied [3, 4] once", async () => {
    const url = server?.url ?? "";
    const prefix = freshPrefix();
    const agingMs = 1_000;
    const backend = new MongoBackend({ url, database: DATABASE, collectionPrefix: prefix, agingMs });
    const client = new MongoClient(url);
    try {
      await backend.migrate();
      const p = uid("v2");
      const [ready, timer] = [`${p}-ready`, `${p}-timer`];
      await backend.saveSnapshot(atTask(ready, "t1", { updatedAt: 1_700_000_002_500 }));
      await backend.saveSnapshot(awaiting(timer, "go", "t1", { timeoutAt: 1_700_000_000_000 }));
      // The store as version 2 left it: its two indexes, entries without queue or priority, and
      // the ready key the plain updatedAt.
      const db = client.db(DATABASE);
      const snapshots = db.collection<{ _id: string }>(`${prefix}snapshots`);
      await snapshots.dropIndex(INDEX.ready);
      await snapshots.dropIndex(INDEX.timers);
      await snapshots.createIndex({ qa: 1, qi: 1, qe: 1 }, { name: OLD_INDEXES[0], sparse: true });
      await snapshots.createIndex({ ta: 1, ti: 1, te: 1 }, { name: OLD_INDEXES[1], sparse: true });
      await snapshots.updateOne({ _id: ready }, { $set: { qa: 1_700_000_002_500 }, $unset: { qn: "" } });
      await snapshots.updateOne({ _id: timer }, { $unset: { tn: "", tp: "" } });
      await db
        .collection<{ _id: string; n: number }>(`${prefix}meta`)
        .updateOne({ _id: "schema" }, { $set: { n: 2 } });
      expect((await backend.findAvailableTasks("w", 10)).filter((t) => t.instanceId.startsWith(p))).toEqual(
        [],
      );
      const [first, second] = await Promise.all([backend.migrate(), backend.migrate()]);
      expect([first, second].flatMap((r) => r?.applied ?? [])).toEqual([3, 4]);
      expect([first?.version, second?.version]).toEqual([4, 4]);
      const names = (await snapshots.indexes()).map((i) => i.name);
      expect(names).toEqual(expect.arrayContaining([INDEX.ready, INDEX.timers]));
      for (const name of OLD_INDEXES) expect(names).not.toContain(name);
      expect(await snapshots.findOne({ _id: ready }, { projection: { qn: 1, qa: 1 } })).toEqual({
        _id: ready,
        qn: "default",
        qa: 1_700_000_002_500 + 2 * agingMs,
      });
      // Keys: the timer 1_700_000_000_000 + 2000, the ready task 1_700_000_002_500 + 2000.
      const found = (await backend.findAvailableTasks("w", 10)).filter((t) => t.instanceId.startsWith(p));
      expect(found.map((t) => [t.instanceId, t.queue, t.priority])).toEqual([
        [timer, "default", 3],
        [ready, "default", 3],
      ]);
    } finally {
      await backend.close();
      await dropPrefix(client, prefix);
      await client.close();
    }
  });

  it("works without migrate (no indexes yet): operations do not depend on it", async () => {
    const url = server?.url ?? "";
    const prefix = freshPrefix();
    const backend = new MongoBackend({ url, database: DATABASE, collectionPrefix: prefix });
    try {
      expect(await backend.claimTask("i", "t", "w", 1000)).not.toBeNull();
      expect(["server", "client"]).toContain(await backend.clockMode());
    } finally {
      await backend.close();
      const client = new MongoClient(url);
      await dropPrefix(client, prefix);
      await client.close();
    }
  });
});
