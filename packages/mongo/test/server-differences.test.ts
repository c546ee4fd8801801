// Every way the local stand-in (mongo-java-server) differs from MongoDB that matters to this
// adapter, one test each. On MongoDB (CI containers) the same tests check the MongoDB side.
import { compareIds } from "@sayiir/persistence-core";
import type { MongoClient } from "mongodb";
import { describe, expect, it } from "vitest";
import { INDEX } from "../src/index.js";
import { orderKey } from "../src/layout.js";
import { connectForSuite, createSubject, DATABASE, dropPrefix, freshPrefix, server } from "./subject.js";

const standIn = server?.standIn === true;

describe.skipIf(server === null)("server differences (mongo-java-server vs MongoDB)", () => {
  let client: MongoClient;
  connectForSuite((c) => {
    client = c;
  });

  it("server clock: MongoDB answers `hello`, mongo-java-server only the legacy `isMaster`; both report localTime, so claim expiry uses the server clock on both", async () => {
    const admin = client.db("admin");
    const hello = await admin.command({ hello: 1 }).then(
      (reply) => reply.localTime instanceof Date,
      (e: unknown) => (e as { codeName?: string; code?: number }).code,
    );
    expect(hello).toBe(standIn ? 59 : true); // 59: CommandNotFound
    const legacy = await admin.command({ isMaster: 1 });
    expect(legacy.localTime).toBeInstanceOf(Date);
    const subject = await createSubject();
    try {
      const backend = subject.backend;
      await backend.migrate();
      expect((await backend.serverFeatures()).serverClock).toBe(true);
      expect(await backend.clockMode()).toBe("server");
    } finally {
      await subject.backend.close();
      await subject.cleanup?.();
    }
  });

  it("pipeline updates ($$NOW): MongoDB evaluates them, mongo-java-server refuses them; the adapter sends none", async () => {
    const prefix = freshPrefix();
    try {
      const collection = client.db(DATABASE).collection<{ _id: string; t?: unknown }>(`${prefix}probe`);
      const result = await collection
        .updateOne({ _id: "x" }, [{ $set: { t: "$$NOW" } }], { upsert: true })
        .then(
          () => "accepted",
          () => "refused",
        );
      expect(result).toBe(standIn ? "refused" : "accepted");
    } finally {
      await dropPrefix(client, prefix);
    }
  });

  it("projecting one array entry: MongoDB's positional `r.$` gives the matched entry, mongo-java-server's the first; `$elemMatch` (what loadTaskResult uses) agrees on both", async () => {
    const prefix = freshPrefix();
    try {
      type Doc = { _id: string; r: Array<{ t: string; g: string }> };
      const collection = client.db(DATABASE).collection<Doc>(`${prefix}probe`);
      const r = [
        { t: "t1", g: "g1" },
        { t: "t2", g: "g2" },
      ];
      await collection.insertOne({ _id: "x", r });
      const positional = await collection.findOne({ _id: "x", "r.t": "t2" }, { projection: { "r.$": 1 } });
      expect(positional?.r).toEqual(standIn ? [r[0]] : [r[1]]);
      const elemMatch = await collection.findOne(
        { _id: "x" },
        { projection: { r: { $elemMatch: { t: "t2" } } } },
      );
      expect(elemMatch?.r).toEqual([r[1]]);
      const none = await collection.findOne({ _id: "x" }, { projection: { r: { $elemMatch: { t: "t3" } } } });
      expect(none).toEqual({ _id: "x" });
    } finally {
      await dropPrefix(client, prefix);
    }
  });

  it("partial indexes: MongoDB honours them (partial ready index); mongo-java-server indexes every document (sparse ready index)", async () => {
    const subject = await createSubject();
    try {
      const backend = subject.backend;
      await backend.migrate();
      const features = await backend.serverFeatures();
      expect(features.partialIndexes).toBe(!standIn);
      const indexes = await client.db(DATABASE).collection(`${subject.prefix}snapshots`).indexes();
      const ready = indexes.find((i) => i.name === INDEX.ready);
      expect(ready?.key).toEqual({ qn: 1, qa: 1, qi: 1, qe: 1 });
      if (standIn) {
        expect(ready?.sparse).toBe(true);
      } else {
        expect(ready?.partialFilterExpression).toEqual({ qa: { $exists: true } });
      }
    } finally {
      await subject.backend.close();
      await subject.cleanup?.();
    }
  });

  it("$expr in an upsert's filter: MongoDB refuses it (code 224), mongo-java-server accepts it; the adapter sends no $expr at all", async () => {
    const prefix = freshPrefix();
    try {
      const collection = client.db(DATABASE).collection<{ _id: string; e?: Date }>(`${prefix}probe`);
      const result = await collection
        .updateOne({ _id: "a", $expr: { $lte: ["$e", new Date()] } }, { $set: { w: "x" } }, { upsert: true })
        .then(
          () => "accepted",
          (e: unknown) => (e as { code?: number }).code,
        );
      expect(result).toBe(standIn ? "accepted" : 224);
    } finally {
      await dropPrefix(client, prefix);
    }
  });

  it("listCollections: MongoDB honours a name filter, mongo-java-server ignores it (tests filter names in JavaScript)", async () => {
    const prefix = freshPrefix();
    try {
      const db = client.db(DATABASE);
      await db.collection(`${prefix}a`).insertOne({});
      const listed = (await db.listCollections({ name: `${prefix}none` }, { nameOnly: true }).toArray()).map(
        (c) => c.name,
      );
      if (standIn) expect(listed.length).toBeGreaterThan(0);
      else expect(listed).toEqual([]);
    } finally {
      await dropPrefix(client, prefix);
    }
  });

  it("string order: MongoDB compares strings by UTF-8 bytes (code point order), mongo-java-server by UTF-16 code units; the ready index's tie-break is hex of the UTF-8 bytes, ordered alike on both", async () => {
    const prefix = freshPrefix();
    try {
      const collection = client.db(DATABASE).collection<{ _id: string; k: string }>(`${prefix}probe`);
      // U+FF21 is one UTF-16 unit above the surrogates that encode U+1F600, but its code point
      // (and its UTF-8 bytes, EF BC A1 < F0 9F 98 80) is below.
      const ids = ["\u{1F600}", "\uFF21"];
      await collection.insertMany(ids.map((id) => ({ _id: id, k: orderKey(id) })));
      const byId = (await collection.find().sort({ _id: 1 }).toArray()).map((d) => d._id);
      expect(byId).toEqual(standIn ? ["\u{1F600}", "\uFF21"] : ["\uFF21", "\u{1F600}"]);
      const byKey = (await collection.find().sort({ k: 1 }).toArray()).map((d) => d._id);
      expect(byKey).toEqual([...ids].sort(compareIds));
      expect(byKey).toEqual(["\uFF21", "\u{1F600}"]);
    } finally {
      await dropPrefix(client, prefix);
    }
  });

  it("buildInfo: mongo-java-server reports no gitVersion (how the tooling tells the stand-in apart)", async () => {
    const info = await client.db("admin").command({ buildInfo: 1 });
    expect(typeof info.gitVersion === "string" && info.gitVersion !== "").toBe(!standIn);
  });
});
