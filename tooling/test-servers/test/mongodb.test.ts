import { MongoClient } from "mongodb";
import { describe, expect, inject, it } from "vitest";
import { uniqueTestName } from "../src/index.ts";

const mongodb = inject("mongodb");

describe.skipIf(!mongodb)(
  `mongodb: ${mongodb ? `${mongodb.server} reports ${mongodb.version}` : inject("testServersUnavailable").mongodb}`,
  () => {
    it("answers buildInfo and a conditional update through the official driver", async () => {
      const client = new MongoClient(mongodb!.url, { serverSelectionTimeoutMS: 5000 });
      await client.connect();
      try {
        const info = await client.db("admin").command({ buildInfo: 1 });
        expect(String(info.version)).toMatch(/^\d+\.\d+/);
        expect(String(info.version)).toBe(mongodb!.version);
        if (mongodb!.source === "local") expect(mongodb!.standIn).toBe(true);
        const db = client.db(uniqueTestName("smoke"));
        const docs = db.collection<{ _id: string; n: number }>("docs");
        await docs.insertOne({ _id: "a", n: 1 });
        const hit = await docs.updateOne({ _id: "a", n: 1 }, { $set: { n: 2 } });
        const miss = await docs.updateOne({ _id: "a", n: 1 }, { $set: { n: 3 } });
        expect([hit.modifiedCount, miss.modifiedCount]).toEqual([1, 0]);
        await db.dropDatabase();
      } finally {
        await client.close();
      }
    });
  },
);
