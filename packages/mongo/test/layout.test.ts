// What is stored where: ids as values only, outputs in documents of their own, the snapshot
// document as the commit point, and garbage collection of superseded outputs.
import {
  bytesEqual,
  DEFAULT_AGING_MS,
  decodeSnapshotHeader,
  ErrorCode,
  encodeSnapshotHeader,
  type PersistentBackend,
  type TaskClaim,
  type WorkflowSnapshot,
} from "@sayiir/persistence-core";
import {
  atTask,
  claimOrFail,
  comparable,
  expectCode,
  finished,
  patternBytes,
  text,
  uid,
} from "@sayiir/persistence-core/conformance";
import { type Document, MongoClient } from "mongodb";
import { describe, expect, it, vi } from "vitest";
import { binaryBytes } from "../src/chunks.js";
import { MongoBackend } from "../src/index.js";
import { orderKey } from "../src/layout.js";
import { connectForSuite, createSubject, DATABASE, dropPrefix, freshPrefix, server } from "./subject.js";

const MiB = 1024 * 1024;
const SNAPSHOT_FIELDS = new Set([
  "_id",
  "v",
  "c",
  "h",
  "hg",
  "i",
  "ig",
  "f",
  "s",
  "d",
  "p",
  "w",
  "r",
  "l",
  "u",
  "e",
  "es",
  "sc",
  "at",
  "qn",
  "qa",
  "qi",
  "qe",
  "ta",
  "ti",
  "te",
  "tn",
  "tp",
]);

describe.skipIf(server === null)("storage layout", () => {
  let client: MongoClient;
  connectForSuite((c) => {
    client = c;
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
        for (const entry of doc.r as Document[])
          expect(Object.keys(entry).sort()).toEqual(["g", "t", "x", "z"]);
        for (const entry of doc.c as Document[]) {
          expect(Object.keys(entry).sort()).toEqual(["c", "e", "k", "t", "w"]);
        }
      }
      // No collection of claims: they live in the instance documents.
      const prefix = (backend as MongoBackend).collections.snapshots.slice(0, -"snapshots".length);
      const names = (await client.db(DATABASE).listCollections({}, { nameOnly: true }).toArray()).map(
        (c) => c.name,
      );
      expect(names.filter((n) => n.startsWith(prefix)).sort()).toEqual(
        ["meta", "outputs", "snapshots"].map((n) => prefix + n),
      );
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
        await expectCode(call(), ErrorCode.Validation);
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
      // The 6 MiB initial input is a blob of its own (chunked like an output); the header,
      // which no longer carries it, stays inline.
      expect(typeof doc?.ig).toBe("string");
      expect(doc?.i).toBeUndefined();
      expect(doc?.h).toBeDefined();
      expect(doc?.hg).toBeUndefined();
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

  it("the initial input is a value of its own beside the header; a header that still carries it (older documents) loads and is found", async () => {
    await withSubject(async (backend, col) => {
      const id = uid();
      const fields = async () =>
        col("snapshots").findOne({ _id: id as never }, { projection: { i: 1, ig: 1 } });
      // Small: inline in `i`, never inside the header.
      await backend.saveSnapshot(atTask(id, "t1", { initialInput: text("in") }));
      const stored = await fields();
      expect(Array.from(binaryBytes(stored?.i))).toEqual(Array.from(text("in")));
      expect(stored?.ig).toBeUndefined();
      const header = binaryBytes((await col("snapshots").findOne({ _id: id as never }))?.h);
      expect(
        Object.hasOwn(
          decodeSnapshotHeader(header, id, { results: [], lastCompletedTaskId: null }),
          "initialInput",
        ),
      ).toBe(false);
      // None: neither field.
      await backend.saveSnapshot(atTask(id, "t1"));
      expect(await fields()).toEqual({ _id: id });

      // A document written before the split: no `i`, the input inside the inline header.
      const legacy = uid();
      const snapshot = atTask(legacy, "t1", { initialInput: text("legacy"), updatedAt: 1_600_000_000_000 });
      await backend.saveSnapshot(atTask(legacy, "t1", { updatedAt: 1_600_000_000_000 }));
      await col("snapshots").updateOne(
        { _id: legacy as never },
        { $set: { h: Buffer.from(encodeSnapshotHeader(snapshot)) }, $unset: { i: "", ig: "" } },
      );
      expect(comparable(await backend.loadSnapshot(legacy))).toEqual(comparable(snapshot));
      const found = (await backend.findAvailableTasks("w", 10)).find((t) => t.instanceId === legacy);
      expect(Array.from(found?.input ?? [])).toEqual(Array.from(text("legacy")));
      const claimed = await backend.claimAvailableTasks("w", 10, 60_000);
      expect(claimed.map((t) => [t.instanceId, Array.from(t.input)])).toEqual([
        [legacy, Array.from(text("legacy"))],
        [id, []],
      ]);
      // Written again, it takes the new form: the input beside the header.
      await backend.saveSnapshot(snapshot, { claim: (claimed[0] as { claim: TaskClaim }).claim });
      expect(Array.from(binaryBytes((await col("snapshots").findOne({ _id: legacy as never }))?.i))).toEqual(
        Array.from(text("legacy")),
      );
      expect(comparable(await backend.loadSnapshot(legacy))).toEqual(comparable(snapshot));
    });
  });

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
      expect((await col("snapshots").findOne({ _id: id as never }))?.c).toHaveLength(1);
      await backend.deleteSnapshot(id);
      expect(await col("outputs").countDocuments({ s: id })).toBe(0);
      // The claims lived in the instance document: they went with it.
      expect(await col("snapshots").countDocuments({ _id: id as never })).toBe(0);
    });
  });

  it("a refused write leaves the stored state whole and no outputs behind", async () => {
    await withSubject(async (backend, col) => {
      const id = uid();
      const done = finished(id, { kind: "Completed", finalOutput: text("final") });
      await backend.saveSnapshot(done);
      const before = await col("outputs").countDocuments({});
      await expectCode(
        backend.saveSnapshot(atTask(id, "t", { completed: { a: patternBytes(MiB) } })),
        ErrorCode.Conflict,
      );
      await expectCode(backend.saveTaskResult(id, "t", patternBytes(MiB)), ErrorCode.Conflict);
      expect(await col("outputs").countDocuments({})).toBe(before);
      expect(comparable(await backend.loadSnapshot(id))).toEqual(comparable(done));
    });
  });

  it("claims without a snapshot live in a placeholder document that no reader sees as a snapshot", async () => {
    await withSubject(async (backend, col) => {
      const id = uid();
      const claim = await claimOrFail(backend, id, "t1", "w1", 60_000);
      const placeholder = await col("snapshots").findOne({ _id: id as never });
      expect(Object.keys(placeholder ?? {}).sort()).toEqual(["_id", "c", "v"]);
      expect(await backend.listSnapshots()).toEqual([]);
      await expectCode(backend.loadSnapshot(id), ErrorCode.NotFound);
      await expectCode(backend.deleteSnapshot(id), ErrorCode.NotFound);
      await expectCode(backend.saveTaskResult(id, "t1", text("x"), { claim }), ErrorCode.NotFound);
      expect(await backend.findAvailableTasks("w", 10)).toEqual([]);
      expect(await backend.claimTask(id, "t1", "w2", 60_000)).toBeNull(); // the placeholder's claim is live
      // A (fenced) saveSnapshot fills the placeholder in and keeps its claims.
      await backend.saveSnapshot(atTask(id, "t1"), { claim });
      expect(await backend.listSnapshots()).toEqual([id]);
      expect((await col("snapshots").findOne({ _id: id as never }))?.c).toMatchObject([
        { t: "t1", w: "w1", k: claim.token },
      ]);
      await backend.saveTaskResult(id, "t1", text("done"), { claim });
      // Releasing the last claim of a placeholder removes the document.
      const other = uid();
      const c1 = await backend.claimTask(other, "a", "w", 60_000);
      await backend.claimTask(other, "b", "w", null);
      await backend.releaseTaskClaim(other, "a", "w");
      expect(await col("snapshots").countDocuments({ _id: other as never })).toBe(1);
      await backend.releaseTaskClaim(other, "b", "w");
      expect(await col("snapshots").countDocuments({ _id: other as never })).toBe(0);
      // Tokens come from the global counter: the next claim is still larger.
      const c2 = await backend.claimTask(other, "a", "w", 60_000);
      expect(c2?.token).toBeGreaterThan(c1?.token ?? Number.POSITIVE_INFINITY);
    });
  });

  it("the ready fields: qe holds the expiry of a claim on the position's task; no ttl leaves the index", async () => {
    await withSubject(async (backend, col) => {
      const id = uid();
      const doc = async () =>
        col("snapshots").findOne({ _id: id as never }, { projection: { qn: 1, qa: 1, qi: 1, qe: 1 } });
      await backend.saveSnapshot(atTask(id, "t1", { updatedAt: 1_700_000_000_000 }));
      // qa: the effective time, updatedAt + (priority 3 - 1) x agingMs (default).
      const qa = 1_700_000_000_000 + 2 * DEFAULT_AGING_MS;
      expect(await doc()).toEqual({ _id: id, qn: "default", qa, qi: orderKey(id), qe: null });
      const claim = await backend.claimTask(id, "t1", "w", 60_000);
      expect(await doc()).toEqual({ _id: id, qn: "default", qa, qi: orderKey(id), qe: claim?.expiresAt });
      await backend.claimTask(id, "other-task", "w", null); // not the position's task: no effect
      expect((await doc())?.qe).toBe(claim?.expiresAt);
      await backend.releaseTaskClaim(id, "t1", "w");
      expect((await doc())?.qe).toBeNull();
      await backend.claimTask(id, "t1", "w", null);
      expect(await doc()).toEqual({ _id: id });
      await backend.releaseTaskClaim(id, "t1", "w");
      await backend.saveTaskResult(id, "t1", text("done"));
      expect(await doc()).toEqual({ _id: id });
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

  it("expired claims of other tasks are dropped once stale, whenever the document is written anyway", async () => {
    const prefix = freshPrefix();
    let offset = 0;
    const realNow = Date.now.bind(Date);
    const spy = vi.spyOn(Date, "now").mockImplementation(() => realNow() + offset);
    // The client clock follows the mocked Date.now, so claims can be aged by hours.
    const backend = new MongoBackend({
      url: server?.url ?? "",
      database: DATABASE,
      collectionPrefix: prefix,
      clock: "client",
    });
    const claimsOf = async (id: string) =>
      (
        (
          await client
            .db(DATABASE)
            .collection(`${prefix}snapshots`)
            .findOne({ _id: id as never })
        )?.c ?? []
      ).map((e: { t: string }) => e.t);
    const hour = 60 * 60 * 1000;
    try {
      await backend.migrate();
      const id = uid();
      await backend.saveSnapshot(atTask(id, "t1"));
      await backend.claimTask(id, "a", "w", 1_000);
      await backend.claimTask(id, "forever", "w", null);
      offset += 2 * hour; // "a" is stale now; "forever" never expires
      await backend.claimTask(id, "b", "w", 1_000);
      expect((await claimsOf(id)).sort()).toEqual(["b", "forever"]);
      offset += 5_000; // "b" expired a moment ago: kept, and its holder can still release it
      await backend.saveTaskResult(id, "x", text("x"));
      expect((await claimsOf(id)).sort()).toEqual(["b", "forever"]);
      await expectCode(backend.extendTaskClaim(id, "b", "w", 1_000), ErrorCode.ClaimLost);
      await backend.releaseTaskClaim(id, "b", "w");
      await backend.claimTask(id, "c", "w", 1_000);
      offset += 2 * hour;
      await backend.saveTaskResult(id, "y", text("y")); // a result write drops it
      expect(await claimsOf(id)).toEqual(["forever"]);
      await backend.claimTask(id, "d", "w", 1_000);
      offset += 2 * hour;
      await backend.saveSnapshot(atTask(id, "t2")); // so does a snapshot write
      expect(await claimsOf(id)).toEqual(["forever"]);
      await backend.claimTask(id, "e", "w", 1_000);
      offset += 2 * hour;
      await backend.releaseTaskClaim(id, "forever", "w"); // and a release of another claim
      expect(await claimsOf(id)).toEqual([]);
      // A placeholder whose last claims are stale goes away with its last release.
      const placeholder = uid();
      await backend.claimTask(placeholder, "old", "w", 1_000);
      await backend.claimTask(placeholder, "new", "w", null);
      offset += 2 * hour;
      await backend.releaseTaskClaim(placeholder, "new", "w");
      expect(
        await client
          .db(DATABASE)
          .collection(`${prefix}snapshots`)
          .countDocuments({ _id: placeholder as never }),
      ).toBe(0);
    } finally {
      spy.mockRestore();
      await backend.close();
      await dropPrefix(client, prefix);
    }
  });

  it("discovery reads the inline header only of tasks whose input is the initial input", async () => {
    const prefix = freshPrefix();
    const url = server?.url ?? "";
    const watched = new MongoClient(url, { monitorCommands: true });
    const finds: Array<Document | undefined> = [];
    watched.on("commandStarted", (event) => {
      if (event.commandName === "find" && event.command.find === `${prefix}snapshots`) {
        finds.push(event.command.projection as Document | undefined);
      }
    });
    const backend = new MongoBackend({ client: watched, database: DATABASE, collectionPrefix: prefix });
    const readsHeader = (projection: Document | undefined) =>
      projection === undefined ||
      (projection.h !== 0 && (projection.h === 1 || !Object.values(projection).includes(1)));
    try {
      await backend.migrate();
      const later = uid();
      await backend.saveSnapshot(
        atTask(later, "t2", { completed: { t1: text("one") }, initialInput: text("in") }),
      );
      finds.length = 0;
      expect((await backend.findAvailableTasks("w", 10)).map((t) => Array.from(t.input))).toEqual([
        Array.from(text("one")),
      ]);
      expect(finds.length).toBeGreaterThan(0);
      expect(finds.filter(readsHeader)).toEqual([]);
      const first = uid();
      await backend.saveSnapshot(atTask(first, "t1", { initialInput: text("in") }));
      finds.length = 0;
      const found = await backend.findAvailableTasks("w", 10);
      expect(found.map((t) => Array.from(t.input)).sort()).toEqual(
        [Array.from(text("in")), Array.from(text("one"))].sort(),
      );
      expect(finds.filter(readsHeader)).toHaveLength(1);
    } finally {
      await backend.close();
      await watched.close();
      await dropPrefix(client, prefix);
    }
  });
});
