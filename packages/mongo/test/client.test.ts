// Construction, ownership of the client, timeouts and secrets.
import { ErrorCode } from "@sayiir/persistence-core";
import { connectionSecrets as urlSecrets } from "@sayiir/persistence-core/adapter";
import { atTask, expectCode, rejection, text, uid } from "@sayiir/persistence-core/conformance";
import { MongoClient } from "mongodb";
import { describe, expect, it } from "vitest";
import { MongoBackend } from "../src/index.js";
import { DATABASE, dropPrefix, freshPrefix, server } from "./subject.js";

describe("options", () => {
  it("needs exactly one of url and client, and checks names (ValidationError, no I/O)", () => {
    const client = new MongoClient("mongodb://127.0.0.1:1");
    const bad: unknown[] = [
      {},
      { url: "mongodb://127.0.0.1:1", client },
      { url: "http://127.0.0.1:1" },
      { url: "mongodb://127.0.0.1:1", collectionPrefix: "bad.prefix" },
      { url: "mongodb://127.0.0.1:1", collectionPrefix: "$x" },
      { url: "mongodb://127.0.0.1:1", database: "a/b" },
      { url: "mongodb://127.0.0.1:1", database: "" },
      { url: "mongodb://127.0.0.1:1", clock: "sundial" },
      { url: "mongodb://127.0.0.1:1", maxPayloadBytes: -1 },
      { url: "mongodb://127.0.0.1:1", clockRefreshMs: 0 },
      { url: "mongodb://127.0.0.1:1", faults: {} },
    ];
    for (const options of bad) {
      let error: unknown;
      try {
        new MongoBackend(options as ConstructorParameters<typeof MongoBackend>[0]);
      } catch (e) {
        error = e;
      }
      expect(error, JSON.stringify(Object.keys(options as object))).toMatchObject({
        code: ErrorCode.Validation,
      });
    }
  });

  it("takes the database from the option, else the URL path, else sayiir", async () => {
    const a = new MongoBackend({ url: "mongodb://127.0.0.1:1/fromurl", database: "explicit" });
    const b = new MongoBackend({ url: "mongodb://127.0.0.1:1/fromurl?appName=x" });
    const c = new MongoBackend({ url: "mongodb://127.0.0.1:1" });
    expect([a.databaseName, b.databaseName, c.databaseName]).toEqual(["explicit", "fromurl", "sayiir"]);
    expect(c.collections).toEqual({
      snapshots: "sayiir_snapshots",
      outputs: "sayiir_outputs",
      meta: "sayiir_meta",
    });
    await Promise.all([a.close(), b.close(), c.close()]);
  });
});

describe("secrets", () => {
  it("the password of a URL is scrubbed as written and decoded, also with a seed list of several hosts", () => {
    expect(urlSecrets("mongodb://u:p%40ss@h1:27017,h2:27017/db?replicaSet=rs")).toEqual(["p%40ss", "p@ss"]);
    expect(urlSecrets("mongodb+srv://u:hunter2@cluster0.example.net/db")).toEqual(["hunter2"]);
    expect(urlSecrets("mongodb://h1:27017,h2:27017/db")).toEqual([]);
    expect(urlSecrets(undefined)).toEqual([]);
  });
});

describe("failures", () => {
  it("an unreachable server gives BackendError in bounded time, without the password", async () => {
    const backend = new MongoBackend({
      url: "mongodb://sayiir:hunter2-secret@127.0.0.1:1/db",
      clientOptions: { serverSelectionTimeoutMS: 300, connectTimeoutMS: 300 },
    });
    const started = Date.now();
    const error = await rejection(backend.loadSnapshot("x"));
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(error).toMatchObject({ code: ErrorCode.Backend });
    expect(String((error as Error).message)).not.toContain("hunter2-secret");
    await backend.close();
  });
});

describe.skipIf(server === null)("client ownership", () => {
  it("close() leaves a user-supplied client open; the backend works on it", async () => {
    const client = new MongoClient(server?.url ?? "");
    const prefix = freshPrefix();
    try {
      const backend = new MongoBackend({ client, database: DATABASE, collectionPrefix: prefix });
      await backend.migrate();
      const id = uid();
      await backend.saveSnapshot(atTask(id, "t1"));
      await backend.saveTaskResult(id, "t1", text("one"));
      await backend.close();
      await expectCode(backend.loadSnapshot(id), ErrorCode.Backend);
      // The client is still open and usable, and the data is there.
      expect(
        await client
          .db(DATABASE)
          .collection(`${prefix}snapshots`)
          .countDocuments({ _id: id as never }),
      ).toBe(1);
      const again = new MongoBackend({ client, database: DATABASE, collectionPrefix: prefix });
      const loaded = await again.loadSnapshot(id);
      expect(loaded.state.kind === "InProgress" && loaded.state.lastCompletedTaskId).toBe("t1");
      await again.close();
    } finally {
      await dropPrefix(client, prefix);
      await client.close();
    }
  });

  it("close() closes the client the backend opened from a URL", async () => {
    const backend = new MongoBackend({
      url: server?.url ?? "",
      database: DATABASE,
      collectionPrefix: freshPrefix(),
    });
    await backend.listSnapshots();
    await backend.close();
    await expectCode(backend.listSnapshots(), ErrorCode.Backend);
  });

  it("two prefixes in one database do not see each other", async () => {
    const url = server?.url ?? "";
    const p1 = freshPrefix();
    const p2 = freshPrefix();
    const a = new MongoBackend({ url, database: DATABASE, collectionPrefix: p1 });
    const b = new MongoBackend({ url, database: DATABASE, collectionPrefix: p2 });
    try {
      await Promise.all([a.migrate(), b.migrate()]);
      const id = uid();
      await a.saveSnapshot(atTask(id, "t1"));
      expect(await b.listSnapshots()).toEqual([]);
      expect(await b.findAvailableTasks("w", 10)).toEqual([]);
      expect(await b.claimTask(id, "t1", "w", 1000)).not.toBeNull();
      expect(await a.claimTask(id, "t1", "w", 1000)).not.toBeNull();
    } finally {
      await a.close();
      await b.close();
      const client = new MongoClient(url);
      await dropPrefix(client, p1);
      await dropPrefix(client, p2);
      await client.close();
    }
  });
});
