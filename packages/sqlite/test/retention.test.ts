import { DatabaseSync } from "node:sqlite";
import { encodeSnapshotHeader, markCancelled, type WorkflowSnapshot } from "@sayiir/persistence-core";
import { atTask, finished, text } from "@sayiir/persistence-core/conformance";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { SqliteBackend } from "../src/index.js";
import { tableNames } from "../src/layout.js";
import { PURGE_BATCH } from "../src/retention.js";
import { migrations } from "../src/schema.js";
import { statements } from "../src/sql.js";
import { ensureBuilt, spawnWorkers } from "./processes.js";
import { createSubject, tempDatabase } from "./subject.js";

const t = tableNames("sayiir_");
const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function subject() {
  const s = await createSubject();
  cleanups.push(s.cleanup, () => s.backend.close());
  return s;
}

/** The stored finish time of each instance (null: unfinished), read straight from the file. */
function finishTimes(db: DatabaseSync, ids: readonly string[]): Array<number | null> {
  const read = db.prepare(`SELECT finished_at FROM ${t.snapshots} WHERE instance_id = ?`);
  return ids.map((id) => (read.get(id) as { finished_at: number | null }).finished_at);
}

/** A store with `n` finished workflows (each with a result, claim and event) and 3 unfinished ones. */
async function fill(backend: SqliteBackend, n: number): Promise<string[]> {
  const finishedIds: string[] = [];
  for (let i = 0; i < n; i++) {
    const id = `done-${String(i).padStart(4, "0")}`;
    finishedIds.push(id);
    if (i % 3 === 0) {
      await backend.saveSnapshot(finished(id, { kind: "Completed", finalOutput: text("out") }));
    } else {
      await backend.saveSnapshot(atTask(id, "t2", { completed: { t1: text("one") } }));
      await backend.claimTask(id, "t2", "w", 60_000);
      await backend.sendEvent(id, "e", text("payload"));
      await backend.cancelWorkflow(id);
    }
  }
  for (const id of ["run-1", "run-2", "run-3"]) await backend.saveSnapshot(atTask(id, "t1"));
  return finishedIds;
}

function count(db: DatabaseSync, table: string): number {
  return (db.prepare(`SELECT count(*) AS n FROM ${table}`).get() as { n: number }).n;
}

describe("the finish time", () => {
  it("is set by the write that first finishes a workflow (save, step, cancel) and kept by a re-save", async () => {
    const { backend } = await subject();
    const before = Date.now();
    const saved = finished("saved", { kind: "Failed", error: "boom" });
    await backend.saveSnapshot(saved);
    await backend.saveSnapshot(atTask("stepped", "t1"));
    const claim = await backend.claimTask("stepped", "t1", "w");
    if (claim === null) throw new Error("no claim");
    const next = { kind: "Completed" as const, finalOutput: text("done") };
    expect(await backend.completeTasks([{ claim, output: text("one"), next }])).toEqual([null]);
    await backend.saveSnapshot(atTask("cancelled", "t1"));
    await backend.pauseWorkflow("cancelled");
    await backend.saveSnapshot(atTask("running", "t1"));
    const ids = ["saved", "stepped", "cancelled", "running"];
    expect(finishTimes(backend.database, ids)).toEqual([expect.any(Number), expect.any(Number), null, null]);
    await backend.cancelWorkflow("cancelled");
    const first = finishTimes(backend.database, ids);
    for (const at of first.slice(0, 3)) {
      // The store's clock at the write, not the snapshot's own updatedAt (2023 in the fixtures).
      expect(at).toBeGreaterThanOrEqual(before);
      expect(at).toBeLessThanOrEqual(Date.now());
    }
    expect(first[3]).toBeNull();
    await new Promise((resolve) => setTimeout(resolve, 5));
    await backend.saveSnapshot({ ...saved, state: { kind: "Completed", finalOutput: text("late") } });
    await backend.saveSnapshot(markCancelled(atTask("cancelled", "t1")));
    expect(finishTimes(backend.database, ids)).toEqual(first);
    // Deleted and saved again unfinished: a new life, no finish time.
    await backend.deleteSnapshot("saved");
    await backend.saveSnapshot(atTask("saved", "t1"));
    expect(finishTimes(backend.database, ["saved"])).toEqual([null]);
  });
});

describe("purgeFinished", () => {
  it("walks the partial finish-time index in order: no sort, no table scan", async () => {
    const { backend } = await subject();
    const plan = backend.database
      .prepare(`EXPLAIN QUERY PLAN ${statements(t).finishedBefore}`)
      .all({ before: Date.now(), limit: 10 })
      .map((r) => String(r.detail))
      .join("\n");
    expect(plan).toContain(
      "USING COVERING INDEX sayiir_snapshots_finished (finished_at>? AND finished_at<?)",
    );
    expect(plan).not.toContain("TEMP B-TREE");
    expect(plan).not.toMatch(/SCAN/);
    // The index holds the finished rows only.
    await fill(backend, 4);
    const entries = backend.database
      .prepare(
        `SELECT count(*) AS n FROM ${t.snapshots} INDEXED BY ${t.finishedIndex} WHERE finished_at IS NOT NULL`,
      )
      .get() as { n: number };
    expect(entries.n).toBe(4);
  });

  it("a limit above one batch runs several transactions and deletes exactly the limit, oldest first", async () => {
    const { backend } = await subject();
    const ids = await fill(backend, PURGE_BATCH + 30);
    const cutoff = Date.now() + 1;
    expect(await backend.purgeFinished({ finishedBefore: cutoff, limit: PURGE_BATCH + 10 })).toBe(
      PURGE_BATCH + 10,
    );
    const left = (await backend.listSnapshots()).filter((id) => id.startsWith("done-"));
    // Finish times tie at the millisecond; ties go by instance id, so what is left is the newest.
    expect(left).toEqual(ids.slice(PURGE_BATCH + 10));
    expect(await backend.purgeFinished({ finishedBefore: cutoff, limit: 1000 })).toBe(20);
    expect((await backend.listSnapshots()).sort()).toEqual(["run-1", "run-2", "run-3"]);
  });

  it("two connections purging at once: the counts add up to the finished workflows, nothing is left", async () => {
    const { backend, connect } = await subject();
    const other = (await connect()) as SqliteBackend;
    cleanups.push(() => other.close());
    const ids = await fill(backend, 90);
    const drain = async (b: SqliteBackend) => {
      let total = 0;
      for (;;) {
        const n = await b.purgeFinished({ finishedBefore: Date.now() + 1, limit: 4 });
        if (n === 0) return total;
        total += n;
        await new Promise((resolve) => setImmediate(resolve));
      }
    };
    const [a, b] = await Promise.all([drain(backend), drain(other)]);
    expect(a + b).toBe(ids.length);
    expect(a).toBeGreaterThan(0);
    expect(b).toBeGreaterThan(0);
    expect((await backend.listSnapshots()).sort()).toEqual(["run-1", "run-2", "run-3"]);
    for (const table of [t.results, t.claims, t.events]) expect(count(backend.database, table)).toBe(0);
  });
});

describe("purgeFinished across processes", () => {
  beforeAll(ensureBuilt, 120_000);

  it("3 processes purging one file at once: the counts add up to the finished workflows, nothing is left", async () => {
    const db = await tempDatabase();
    cleanups.push(db.remove);
    const backend = new SqliteBackend({ path: db.path });
    cleanups.push(() => backend.close());
    await backend.migrate();
    const ids = await fill(backend, 300);
    const last = (await backend.claimTask("run-2", "t1", "w"))?.token ?? Number.POSITIVE_INFINITY;
    const reports = await spawnWorkers(db.path, "purge", 3);
    const counts = reports.map((r) => (r.counts as number[]).reduce((sum, n) => sum + n, 0));
    expect(counts.reduce((sum, n) => sum + n, 0)).toBe(ids.length);
    expect((await backend.listSnapshots()).sort()).toEqual(["run-1", "run-2", "run-3"]);
    for (const table of [t.results, t.events, t.attempts]) expect(count(backend.database, table)).toBe(0);
    expect(count(backend.database, t.claims)).toBe(1); // run-2's, taken above
    // Tokens issued after the purge are still larger than any before it.
    const claim = await backend.claimTask("run-1", "t1", "w");
    expect(claim?.token).toBeGreaterThan(last);
  }, 120_000);
});

describe("loadTaskResult", () => {
  it("reads the snapshots only through the primary-key index, and the row's status only for a result found", async () => {
    const { backend } = await subject();
    const plan = backend.database
      .prepare(`EXPLAIN QUERY PLAN ${statements(t).loadTaskResult}`)
      .all({ id: "wf", task: "t1" })
      .map((r) => String(r.detail))
      .join("\n");
    expect(plan).toContain("USING COVERING INDEX sqlite_autoindex_sayiir_snapshots_1 (instance_id=?)");
    expect(plan).toContain(
      "SEARCH r USING INDEX sqlite_autoindex_sayiir_results_1 (instance_id=? AND task_id=?)",
    );
    expect(plan).toMatch(/CORRELATED SCALAR SUBQUERY[^\n]*\n[^\n]*SEARCH s USING INDEX/);
    expect(plan).not.toMatch(/SCAN (?!CONSTANT ROW)/);
  });
});

describe("migration to version 4", () => {
  /** A file as the previous release (schema version 3) left it, rows written through raw SQL. */
  function versionThreeFile(path: string): DatabaseSync {
    const raw = new DatabaseSync(path);
    cleanups.push(() => raw.close());
    raw.exec("PRAGMA journal_mode = WAL");
    raw.exec(
      `CREATE TABLE ${t.schemaVersion} (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL) STRICT`,
    );
    for (const sql of migrations(t).slice(0, 3)) raw.exec(sql);
    raw.exec(`INSERT INTO ${t.schemaVersion} (id, version) VALUES (1, 3)`);
    const insert = raw.prepare(
      `INSERT INTO ${t.snapshots} (instance_id, header, status, definition_hash, updated_at, position_task_id)
       VALUES (?, ?, ?, 'def-hash-1', ?, ?)`,
    );
    const row = (s: WorkflowSnapshot, status: string, updatedAt: number, position: string | null) =>
      insert.run(s.instanceId, encodeSnapshotHeader(s), status, updatedAt, position);
    row(finished("completed", { kind: "Completed", finalOutput: text("done") }), "completed", 2_000, null);
    row(
      markCancelled(atTask("cancelled", "t2", { completed: { t1: text("one") } })),
      "cancelled",
      1_000,
      null,
    );
    row(finished("failed", { kind: "Failed", error: "boom" }), "failed", 3_000, null);
    row(atTask("running", "t1"), "in_progress", 500, "t1");
    const result = raw.prepare(`INSERT INTO ${t.results} (instance_id, task_id, output) VALUES (?, ?, ?)`);
    result.run("cancelled", "t1", text("one"));
    // A result row left beside a Completed one: its state carries none, so none is shown.
    result.run("completed", "t1", text("stale"));
    raw.exec(`UPDATE ${t.tokenSequence} SET last_token = 41`);
    raw
      .prepare(
        `INSERT INTO ${t.claims} (instance_id, task_id, worker_id, token, claimed_at, expires_at)
         VALUES ('cancelled', 't2', 'w', 41, 900, 0)`,
      )
      .run();
    return raw;
  }

  it("a version-3 file with finished rows: they get their updated_at as finish time and purge finds them, oldest first", async () => {
    const db = await tempDatabase();
    cleanups.push(db.remove);
    const raw = versionThreeFile(db.path);
    const backend = new SqliteBackend({ path: db.path });
    cleanups.push(() => backend.close());
    expect(await backend.migrate()).toEqual({ applied: [4], version: 4 });
    expect(finishTimes(raw, ["completed", "cancelled", "failed", "running"])).toEqual([
      2_000,
      1_000,
      3_000,
      null,
    ]);
    expect(new TextDecoder().decode((await backend.loadTaskResult("cancelled", "t1")) ?? undefined)).toBe(
      "one",
    );
    expect(await backend.loadTaskClaims("cancelled")).toEqual([]); // revoked by the cancel
    expect(await backend.loadTaskResult("completed", "t1")).toBeNull();

    expect(await backend.purgeFinished({ finishedBefore: 2_500, limit: 1 })).toBe(1);
    expect((await backend.listSnapshots()).sort()).toEqual(["completed", "failed", "running"]);
    expect(count(raw, t.results)).toBe(1);
    expect(count(raw, t.claims)).toBe(0);
    expect(await backend.purgeFinished({ finishedBefore: 2_500, limit: 10 })).toBe(1);
    expect(count(raw, t.results)).toBe(0);
    expect(await backend.purgeFinished({ finishedBefore: Date.now(), limit: 10 })).toBe(1);
    expect(await backend.listSnapshots()).toEqual(["running"]);
    // The counter came through the migration: later tokens are larger than the purged claim's.
    expect((await backend.claimTask("running", "t1", "w"))?.token).toBe(42);
    // Writes of this release record finish times on the migrated file.
    await backend.cancelWorkflow("running");
    expect(finishTimes(raw, ["running"])[0]).toBeGreaterThan(3_000);
  });
});
