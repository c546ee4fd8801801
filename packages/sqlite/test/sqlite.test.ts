import { DatabaseSync } from "node:sqlite";
import { BackendError, ErrorCode, NotFoundError, ValidationError } from "@sayiir/persistence-core";
import { atTask, comparable, inProgress, rejection, text } from "@sayiir/persistence-core/conformance";
import { afterEach, describe, expect, it } from "vitest";
import { SCHEMA_VERSION, SqliteBackend, type SqliteBackendOptions } from "../src/index.js";
import { tableNames } from "../src/layout.js";
import { statements } from "../src/sql.js";
import { createSubject, failInserts, tempDatabase } from "./subject.js";

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function fileBackend(options: Partial<SqliteBackendOptions> = {}) {
  const subject = await createSubject({}, options);
  cleanups.push(subject.cleanup, () => subject.backend.close());
  return { backend: subject.backend, path: subject.path };
}

function rawConnection(path: string): DatabaseSync {
  const raw = new DatabaseSync(path);
  cleanups.push(() => raw.close());
  return raw;
}

describe("construction and options", () => {
  it("needs exactly one of path and database, and checks the other options", () => {
    expect(() => new SqliteBackend({})).toThrow(ValidationError);
    const memory = new DatabaseSync(":memory:");
    cleanups.push(() => memory.close());
    expect(() => new SqliteBackend({ path: ":memory:", database: memory })).toThrow(ValidationError);
    expect(() => new SqliteBackend({ path: "" })).toThrow(ValidationError);
    expect(() => new SqliteBackend({ path: ":memory:", tablePrefix: "x; DROP TABLE y" })).toThrow(
      ValidationError,
    );
    expect(() => new SqliteBackend({ path: ":memory:", tablePrefix: "1abc" })).toThrow(ValidationError);
    expect(() => new SqliteBackend({ path: ":memory:", busyTimeoutMs: -1 })).toThrow(ValidationError);
    expect(() => new SqliteBackend({ path: ":memory:", busyTimeoutMs: 1.5 })).toThrow(ValidationError);
    expect(() => new SqliteBackend({ path: ":memory:", synchronous: "OFF" as "FULL" })).toThrow(
      ValidationError,
    );
  });

  it("a file that cannot be opened gives BackendError", () => {
    const error = (() => {
      try {
        new SqliteBackend({ path: "/nonexistent-dir-sayiir/x/store.db" });
      } catch (e) {
        return e;
      }
    })();
    expect(error).toBeInstanceOf(BackendError);
    expect(error).toMatchObject({ code: ErrorCode.Backend });
  });

  it("a user-supplied DatabaseSync is used and left open by close()", async () => {
    const database = new DatabaseSync(":memory:");
    cleanups.push(() => database.close());
    const backend = new SqliteBackend({ database });
    expect(backend.database).toBe(database);
    await backend.migrate();
    await backend.saveSnapshot(atTask("wf-1", "t1"));
    await backend.close();
    expect(await rejection(backend.listSnapshots())).toBeInstanceOf(BackendError);
    // Still open and usable by its owner, with the data in it.
    expect(database.prepare(`SELECT instance_id FROM "sayiir_snapshots"`).all()).toEqual([
      { instance_id: "wf-1" },
    ]);
    const again = new SqliteBackend({ database });
    expect(await again.listSnapshots()).toEqual(["wf-1"]);
    await again.close();
  });

  it('":memory:" gives a private, non-durable database per backend', async () => {
    const a = new SqliteBackend({ path: ":memory:" });
    const b = new SqliteBackend({ path: ":memory:" });
    cleanups.push(
      () => a.close(),
      () => b.close(),
    );
    await a.migrate();
    await b.migrate();
    await a.saveSnapshot(inProgress("only-in-a"));
    expect(await a.listSnapshots()).toEqual(["only-in-a"]);
    expect(await b.listSnapshots()).toEqual([]);
  });
});

describe("migrate", () => {
  it("is explicit: before it, operations fail with BackendError; after it, they work", async () => {
    const db = await tempDatabase();
    cleanups.push(db.remove);
    const backend = new SqliteBackend({ path: db.path });
    cleanups.push(() => backend.close());
    expect(await rejection(backend.listSnapshots())).toBeInstanceOf(BackendError);
    await backend.migrate();
    expect(await backend.listSnapshots()).toEqual([]);
  });

  it("is idempotent and keeps the data; the file is in WAL mode", async () => {
    const { backend, path } = await fileBackend();
    await backend.saveSnapshot(atTask("wf-1", "t1"));
    const claim = await backend.claimTask("wf-1", "t1", "w", 60_000);
    await backend.migrate();
    await backend.migrate();
    expect(await backend.listSnapshots()).toEqual(["wf-1"]);
    expect((await backend.claimTask("wf-1", "t2", "w"))?.token).toBeGreaterThan(claim?.token ?? 0);
    expect(rawConnection(path).prepare("PRAGMA journal_mode").get()).toEqual({ journal_mode: "wal" });
  });

  it("reports what it applied: every version on a fresh file, nothing when current", async () => {
    const db = await tempDatabase();
    cleanups.push(db.remove);
    const backend = new SqliteBackend({ path: db.path });
    cleanups.push(() => backend.close());
    expect(await backend.migrate()).toEqual({ applied: [1, 2, 3, 4], version: SCHEMA_VERSION });
    expect(SCHEMA_VERSION).toBe(4);
    expect(await backend.migrate()).toEqual({ applied: [], version: SCHEMA_VERSION });
  });

  it("refuses a schema newer than this release with BackendError", async () => {
    const { backend, path } = await fileBackend();
    rawConnection(path).exec(`UPDATE "sayiir_schema_version" SET version = 99`);
    const error = await rejection(backend.migrate());
    expect(error).toBeInstanceOf(BackendError);
    expect((error as Error).message).toContain("99");
  });

  it("table prefixes keep applications in one file apart", async () => {
    const { backend: a, path } = await fileBackend({ tablePrefix: "app_a_" });
    const b = new SqliteBackend({ path, tablePrefix: "app_b_" });
    cleanups.push(() => b.close());
    await b.migrate();
    await a.saveSnapshot(atTask("shared-id", "t1"));
    expect(await b.listSnapshots()).toEqual([]);
    expect(await rejection(b.loadSnapshot("shared-id"))).toBeInstanceOf(NotFoundError);
    expect(await b.claimTask("shared-id", "t1", "w")).not.toBeNull();
    expect(await a.findAvailableTasks("w", 10)).toHaveLength(1);
  });
});

describe("locking and atomicity", () => {
  it("a write blocked past busyTimeoutMs fails with BackendError in bounded time; reads go on; then it recovers", async () => {
    const { backend, path } = await fileBackend({ busyTimeoutMs: 200 });
    await backend.saveSnapshot(atTask("wf-1", "t1"));
    const raw = rawConnection(path);
    raw.exec("BEGIN IMMEDIATE");
    const started = Date.now();
    const error = await rejection(backend.saveTaskResult("wf-1", "t1", text("x")));
    const waited = Date.now() - started;
    expect(error).toBeInstanceOf(BackendError);
    expect((error as Error).message).toMatch(/locked|busy/i);
    expect(waited).toBeGreaterThanOrEqual(150);
    expect(waited).toBeLessThan(5000);
    // WAL: readers are not blocked by the writer.
    expect((await backend.loadSnapshot("wf-1")).instanceId).toBe("wf-1");
    expect(await backend.findAvailableTasks("w", 10)).toHaveLength(1);
    raw.exec("ROLLBACK");
    await backend.saveTaskResult("wf-1", "t1", text("x"));
    expect(await backend.findAvailableTasks("w", 10)).toEqual([]);
  });

  it("a write that fails half-way is rolled back whole", async () => {
    const { backend, path } = await fileBackend();
    const before = atTask("wf-1", "t3", {
      completed: { t1: text("one"), t2: text("two") },
      initialInput: text("in"),
    });
    await backend.saveSnapshot(before);
    // Make the third result insert fail, after the snapshot row and two results were written.
    failInserts(path, "results", "NEW.task_id = 'boom'");
    const after = atTask("wf-1", "t9", { completed: { a: text("A"), b: text("B"), boom: text("!") } });
    expect(await rejection(backend.saveSnapshot(after))).toBeInstanceOf(BackendError);
    expect(comparable(await backend.loadSnapshot("wf-1"))).toEqual(comparable(before));
    // The connection is usable again (no transaction left open).
    await backend.saveTaskResult("wf-1", "t3", text("three"));
  });

  it("discovery walks the partial ready index in order, without a sort", async () => {
    const { backend } = await fileBackend();
    const raw = backend.database;
    const sql = statements(tableNames("sayiir_")).findAvailable;
    const plan = raw
      .prepare(`EXPLAIN QUERY PLAN ${sql}`)
      .all({ queue: "default", now: 0, horizon: 120_000, limit: 10 })
      .map((r) => String(r.detail))
      .join("\n");
    expect(plan).toContain("sayiir_snapshots_ready");
    expect(plan).not.toContain("TEMP B-TREE");
  });
});

describe("capabilities", () => {
  it("one machine's clock; durable in a file, not in memory", async () => {
    const file = {
      durable: true,
      clock: "client",
      clockSkewMs: 0,
      shards: 1,
      wakeUps: "push",
      wakeBoundMs: 5_000,
      dbSystem: "sqlite",
    };
    const { backend } = await fileBackend();
    expect(backend.capabilities).toEqual(file);
    const memory = new SqliteBackend({ path: ":memory:" });
    cleanups.push(() => memory.close());
    expect(memory.capabilities).toEqual({ ...file, durable: false });
  });
});

describe("a caller's DatabaseSync opened with other defaults", () => {
  it("still gives numbers, objects and working fences (readBigInts, returnArrays, no bare named parameters)", async () => {
    const { path, remove } = await tempDatabase();
    const database = new DatabaseSync(path, {
      readBigInts: true,
      returnArrays: true,
      allowBareNamedParameters: false,
    });
    const backend = new SqliteBackend({ database });
    try {
      await backend.migrate();
      await backend.saveSnapshot(atTask("odd-db", "t1"));
      const claim = await backend.claimTask("odd-db", "t1", "w", 60_000);
      expect(typeof claim?.token).toBe("number");
      await backend.saveTaskResult("odd-db", "t1", text("out"), { claim: claim ?? 0 });
      const loaded = await backend.loadSnapshot("odd-db");
      expect(typeof loaded.updatedAt).toBe("number");
      expect(loaded.state.kind === "InProgress" && loaded.state.lastCompletedTaskId).toBe("t1");
    } finally {
      await backend.close();
      database.close();
      await remove();
    }
  });
});
