import { DatabaseSync } from "node:sqlite";
import { ErrorCode } from "@sayiir/persistence-core";
import { atTask, awaiting, claimOrFail, inProgress, text } from "@sayiir/persistence-core/conformance";
import { afterEach, describe, expect, it } from "vitest";
import { SqliteBackend } from "../src/index.js";
import { tableNames } from "../src/layout.js";
import { migrations } from "../src/schema.js";
import { createSubject, tempDatabase } from "./subject.js";

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function fileBackend(agingMs?: number) {
  const subject = await createSubject({ agingMs });
  cleanups.push(subject.cleanup, () => subject.backend.close());
  return subject;
}

describe("scheduling on SQLite", () => {
  it("the schedule columns and the attempts table hold what the snapshot and failTasks say", async () => {
    const { backend, path } = await fileBackend(1_000);
    const runAt = Date.now() + 60_000;
    await backend.saveSnapshot(
      inProgress("wf-1", { position: { kind: "AtTask", taskId: "t1", runAt, priority: 2, queue: "gpu" } }),
    );
    await backend.saveSnapshot(atTask("wf-2", "t1", { updatedAt: 5_000 }));
    const claim = await claimOrFail(backend, "wf-2", "t1", "w", 60_000);
    expect(await backend.failTasks([{ claim, error: "boom", retryAt: null }])).toEqual([null]);
    const raw = new DatabaseSync(path);
    cleanups.push(() => raw.close());
    const row = (id: string) =>
      raw
        .prepare(
          `SELECT queue, priority, run_at, ready_task_id, ready_key, due_task_id, due_at, due_key
           FROM "sayiir_snapshots" WHERE instance_id = ?`,
        )
        .get(id);
    // A future runAt: in the timer index, keyed runAt + (priority - 3) x agingMs.
    expect(row("wf-1")).toEqual({
      queue: "gpu",
      priority: 2,
      run_at: runAt,
      ready_task_id: null,
      ready_key: null,
      due_task_id: "t1",
      due_at: runAt,
      due_key: runAt - 1_000,
    });
    // Held by a failure with retryAt null: in no index.
    expect(row("wf-2")).toMatchObject({ ready_task_id: null, due_task_id: null, due_key: null });
    expect(raw.prepare(`SELECT * FROM "sayiir_task_attempts"`).all()).toEqual([
      {
        instance_id: "wf-2",
        task_id: "t1",
        count: 1,
        last_error: "boom",
        last_failed_at: expect.any(Number),
        retry_at: null,
        held: 1,
      },
    ]);
  });

  it("failTasks runs the batch in one transaction: a refused item writes nothing, the others land", async () => {
    const { backend } = await fileBackend();
    await backend.saveSnapshot(atTask("wf-a", "t1"));
    await backend.saveSnapshot(atTask("wf-b", "t1"));
    const a = await claimOrFail(backend, "wf-a", "t1", "w", 60_000);
    const b = await claimOrFail(backend, "wf-b", "t1", "w", 60_000);
    const outcomes = await backend.failTasks([
      { claim: a, error: "one", retryAt: 1 },
      { claim: { ...b, token: b.token + 100 }, error: "stale", retryAt: null },
    ]);
    expect(outcomes.map((o) => o?.code ?? null)).toEqual([null, ErrorCode.ClaimLost]);
    expect((await backend.loadSnapshot("wf-a")).attempts?.t1).toMatchObject({ count: 1, retryAt: 1 });
    expect((await backend.loadSnapshot("wf-b")).attempts).toBeUndefined();
    // retryAt already past: ready at once, attempt 2.
    const [found] = (await backend.findAvailableTasks("w", 10)).filter((t) => t.instanceId === "wf-a");
    expect(found).toMatchObject({ taskId: "t1", attempt: 2 });
  });

  it("a version-2 file migrates to 3 keeping its ready tasks and waits in order", async () => {
    const db = await tempDatabase();
    cleanups.push(db.remove);
    const t = tableNames("sayiir_");
    const raw = new DatabaseSync(db.path);
    cleanups.push(() => raw.close());
    raw.exec("PRAGMA journal_mode = WAL");
    raw.exec(
      `CREATE TABLE ${t.schemaVersion} (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL) STRICT`,
    );
    raw.exec(migrations(t)[0] as string);
    raw.exec(migrations(t)[1] as string);
    raw.exec(`INSERT INTO ${t.schemaVersion} (id, version) VALUES (1, 2)`);
    const v2 = new SqliteBackend({ path: db.path });
    // Written by the version-2 columns only (as the previous release did), through raw SQL.
    const insert = raw.prepare(
      `INSERT INTO ${t.snapshots} (instance_id, header, status, definition_hash, ready_task_id, updated_at,
         wait_event, wait_task, timeout_at) VALUES (?, ?, 'in_progress', 'h', ?, ?, ?, ?, ?)`,
    );
    const { encodeSnapshotHeader } = await import("@sayiir/persistence-core");
    const header = (s: ReturnType<typeof atTask>) => encodeSnapshotHeader(s);
    insert.run("r-2", header(atTask("r-2", "t1")), "t1", 2_000, null, null, null);
    insert.run("r-1", header(atTask("r-1", "t1")), "t1", 1_000, null, null, null);
    insert.run("w-1", header(awaiting("w-1", "e", "t1", { timeoutAt: 1_500 })), null, 10, "e", "t1", 1_500);
    cleanups.push(() => v2.close());
    expect(await v2.migrate()).toEqual({ applied: [3, 4], version: 4 });
    expect((await v2.findAvailableTasks("w", 10)).map((x) => [x.instanceId, x.attempt, x.queue])).toEqual([
      ["r-1", 1, "default"],
      ["w-1", 1, "default"],
      ["r-2", 1, "default"],
    ]);
    expect((await v2.loadSnapshot("r-1")).attempts).toBeUndefined();
    await v2.saveTaskResult("r-1", "t1", text("done"));
    expect((await v2.findAvailableTasks("w", 10)).map((x) => x.instanceId)).toEqual(["w-1", "r-2"]);
  });
});
