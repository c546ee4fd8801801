// What is stored where: ids as values only, outputs in documents of their own, the snapshot
// document as the commit point, and garbage collection of superseded outputs.
import { bytesEqual, type PersistentBackend, type WorkflowSnapshot } from "@sayiir/persistence-core";
import {
  atTask,
  comparable,
  finished,
  patternBytes,
  rejection,
  text,
  uid,
} from "@sayiir/persistence-core/conformance";
import { type Document, MongoClient } from "mongodb";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createSubject, DATABASE, server } from "./subject.js";

const MiB = 1024 * 1024;
const SNAPSHOT_FIELDS = new Set(["_id", "v", "h", "hg", "f", "d", "p", "r", "l", "u", "qa", "qi"]);

describe.skipIf(server === null)("storage layout", () => {
  let client: MongoClient;
  beforeAll(async () => {
    client = new MongoClient(server?.url ?? "");
    await client.connect();
  });
  afterAll(async () => {
    await client?.close();
  });

  async function withSubject(
    body: (
      backend: PersistentBackend,
      col: (name: string) => import("mongodb").Collection<Document>,
    ) => Promise<void>,
  ) {
    const subject = await createSubject();
    try {
      await body(subject.backend, (name) => client.db(DATABASE).collection(subject.prefix + name));
    } finally {
      await subject.backend.close();
      await subject.cleanup?.();
    }
  }

  it("ids are only ever values: dots and dollars in ids never reach a field name", async () => {
    await withSubject(async (backend, col) => {
      const hostile = ["a.b", "$where", "x.$y", "$gt", '{"$gt": ""}', "__proto__", "constructor"];
      for (const [i, id] of hostile.entries()) {
        const taskId = hostile[(i + 1) % hostile.length] as string;
        await backend.saveSnapshot(
          atTask(id, taskId, { completed: { [hostile[(i + 2) % hostile.length] as string]: text(id) } }),
        );
        await backend.saveTaskResult(id, hostile[(i + 3) % hostile.length] as string, text("r"));
        const claim = await backend.claimTask(
          id,
          taskId,
          hostile[(i + 4) % hostile.length] as string,
          60_000,
        );
        expect(claim?.instanceId).toBe(id);
      }
      for (const doc of await col("snapshots").find().toArray()) {
        for (const name of Object.keys(doc)) expect(SNAPSHOT_FIELDS.has(name), name).toBe(true);
        for (const entry of doc.r as Document[]) expect(Object.keys(entry).sort()).toEqual(["g", "t"]);
      }
      for (const doc of await col("claims").find().toArray()) {
        expect(Object.keys(doc).sort()).toEqual(["_id", "c", "e", "i", "k", "w"]);
        expect(Object.keys(doc._id)).toEqual(["i", "t"]);
      }
      expect((await backend.listSnapshots()).sort()).toEqual([...hostile].sort());
    });
  });

  it("an operator-shaped id is refused before any query (ValidationError)", async () => {
    await withSubject(async (backend) => {
      const sneaky = { $gt: "" } as unknown as string;
      for (const call of [
        () => backend.loadSnapshot(sneaky),
        () => backend.deleteSnapshot(sneaky),
        () => backend.claimTask("i", sneaky, "w", 1000),
        () => backend.releaseTaskClaim("i", "t", sneaky),
      ]) {
        expect(await rejection(call())).toMatchObject({ code: "VALIDATION" });
      }
    });
  });

  it("outputs live in documents of their own (chunked under 16 MB); the snapshot document stays small", async () => {
    await withSubject(async (backend, col) => {
      const id = uid();
      const outputs: Record<string, Uint8Array> = {};
      for (let i = 0; i < 3; i++) outputs[`t${i}`] = patternBytes(5 * MiB, i + 1);
      outputs.huge = patternBytes(20 * MiB, 9); // one output larger than a MongoDB document
      const snapshot = atTask(id, "next", {
        completed: outputs,
        initialInput: patternBytes(6 * MiB, 7),
        last: "huge",
      });
      await backend.saveSnapshot(snapshot);
      const loaded = await backend.loadSnapshot(id);
      expect(
        loaded.initialInput && bytesEqual(loaded.initialInput, snapshot.initialInput as Uint8Array),
      ).toBe(true);
      for (const [taskId, bytes] of Object.entries(outputs)) {
        const got =
          loaded.state.kind === "InProgress" ? loaded.state.completedTasks[taskId]?.output : undefined;
        expect(got && bytesEqual(got, bytes), taskId).toBe(true);
      }
      const doc = await col("snapshots").findOne({ _id: id as never });
      expect(doc?.h).toBeUndefined(); // a 6 MiB initial input moves the header out too
      expect(typeof doc?.hg).toBe("string");
      expect(doc?.r).toHaveLength(4);
      const sizes = await col("outputs")
        .aggregate([{ $match: { s: id } }, { $project: { g: 1, n: 1, c: 1 } }])
        .toArray();
      const huge = ((doc?.r ?? []) as Array<{ t: string; g: string }>).find((e) => e.t === "huge")?.g;
      expect(
        sizes
          .filter((s) => s.g === huge)
          .map((s) => s.n)
          .sort(),
      ).toEqual([0, 1, 2]);
      expect(sizes.filter((s) => s.g === huge).every((s) => s.c === 3)).toBe(true);
    });
  }, 120_000);

  it("superseded outputs are collected; deleteSnapshot removes outputs and claims", async () => {
    await withSubject(async (backend, col) => {
      const id = uid();
      await backend.saveSnapshot(atTask(id, "t2", { completed: { t1: text("one") } }));
      await backend.saveTaskResult(id, "t2", text("two"));
      await backend.saveTaskResult(id, "t2", text("two again"));
      expect(await col("outputs").countDocuments({ s: id })).toBe(2);
      await backend.saveSnapshot(atTask(id, "t3", { completed: { t1: text("one") } }));
      expect(await col("outputs").countDocuments({ s: id })).toBe(1);
      await backend.claimTask(id, "t3", "w", 60_000);
      await backend.deleteSnapshot(id);
      expect(await col("outputs").countDocuments({ s: id })).toBe(0);
      expect(await col("claims").countDocuments({ i: id })).toBe(0);
    });
  });

  it("a refused write leaves the stored state whole and no outputs behind", async () => {
    await withSubject(async (backend, col) => {
      const id = uid();
      const done = finished(id, { kind: "Completed", finalOutput: text("final") });
      await backend.saveSnapshot(done);
      const before = await col("outputs").countDocuments({});
      expect(
        await rejection(backend.saveSnapshot(atTask(id, "t", { completed: { a: patternBytes(MiB) } }))),
      ).toMatchObject({
        code: "CONFLICT",
      });
      expect(await rejection(backend.saveTaskResult(id, "t", patternBytes(MiB)))).toMatchObject({
        code: "CONFLICT",
      });
      expect(await col("outputs").countDocuments({})).toBe(before);
      expect(comparable(await backend.loadSnapshot(id))).toEqual(comparable(done));
    });
  });

  it("a released claim keeps its token, so the next one is larger without a global lock", async () => {
    await withSubject(async (backend, col) => {
      const first = await backend.claimTask("i", "t", "w1", 60_000);
      await backend.releaseTaskClaim("i", "t", "w1");
      const stored = await col("claims").findOne({ i: "i" });
      expect(stored).toMatchObject({ w: null, k: first?.token });
      const second = await backend.claimTask("i", "t", "w2", 60_000);
      expect(second?.token).toBeGreaterThan(first?.token ?? Number.POSITIVE_INFINITY);
    });
  });

  it("readers racing writers of large snapshots always load a whole version", async () => {
    await withSubject(async (backend) => {
      const id = uid();
      const version = (v: number): WorkflowSnapshot =>
        atTask(id, `t${v}`, {
          completed: { [`r${v}`]: patternBytes(256 * 1024, v) },
          updatedAt: 1_700_000_000_000 + v,
        });
      await backend.saveSnapshot(version(0));
      let writing = true;
      const writer = (async () => {
        for (let v = 1; v <= 30; v++) await backend.saveSnapshot(version(v));
        writing = false;
      })();
      let reads = 0;
      while (writing) {
        const loaded = await backend.loadSnapshot(id);
        const v = loaded.updatedAt - 1_700_000_000_000;
        expect(comparable(loaded)).toEqual(comparable(version(v)));
        reads++;
      }
      await writer;
      expect(reads).toBeGreaterThan(0);
    });
  }, 60_000);
});
