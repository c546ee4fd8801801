import { DatabaseSync, type SQLInputValue } from "node:sqlite";
import {
  BackendError,
  ErrorCode,
  failures,
  markTaskCompleted,
  updatePosition,
} from "@sayiir/persistence-core";
import { REVOKED_EXPIRY, toStoredSnapshot } from "@sayiir/persistence-core/adapter";
import {
  atTask,
  awaiting,
  claimOrFail,
  expectCode,
  finished,
  rejection,
  text,
} from "@sayiir/persistence-core/conformance";
import { afterEach, describe, expect, it, vi } from "vitest";
import { SqliteBackend } from "../src/index.js";
import { tableNames } from "../src/layout.js";
import { migrations } from "../src/schema.js";
import { statements } from "../src/sql.js";
import { createSubject, failInserts, tempDatabase } from "./subject.js";

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function fileBackend() {
  const subject = await createSubject();
  cleanups.push(subject.cleanup, () => subject.backend.close());
  return { backend: subject.backend, path: subject.path };
}

function rawConnection(path: string): DatabaseSync {
  const raw = new DatabaseSync(path);
  cleanups.push(() => raw.close());
  return raw;
}

const dec = (b: Uint8Array) => new TextDecoder().decode(b);

/** The wait columns and the ready task of a snapshot row. */
function waitRow(raw: DatabaseSync, id: string) {
  return raw
    .prepare(
      `SELECT status, ready_task_id, wait_event, wait_task, timeout_at FROM "sayiir_snapshots" WHERE instance_id = ?`,
    )
    .get(id);
}

describe("event records and the timer index", () => {
  it("a wait is stored in the row; an event is a row of its own; the ready task follows pending events", async () => {
    const { backend, path } = await fileBackend();
    const raw = rawConnection(path);
    const id = "wf-wait";
    const wait = awaiting(id, "approval", "t2", {
      timeoutAt: 4_000_000_000_000,
      completed: { t1: text("one") },
    });
    await backend.saveSnapshot(wait);
    expect(waitRow(raw, id)).toEqual({
      status: "in_progress",
      ready_task_id: null,
      wait_event: "approval",
      wait_task: "t2",
      timeout_at: 4_000_000_000_000,
    });
    const before = Date.now();
    const sequence = await backend.sendEvent(id, "approval", text("yes"));
    const rows = raw.prepare(`SELECT * FROM "sayiir_events" WHERE instance_id = ?`).all(id);
    expect(rows).toEqual([
      {
        instance_id: id,
        sequence,
        event_name: "approval",
        payload: expect.any(Uint8Array),
        sent_at: expect.any(Number),
      },
    ]);
    expect(rows[0]?.sent_at).toBeGreaterThanOrEqual(before);
    // Ready with its task (and so out of the timer index).
    expect(waitRow(raw, id)).toMatchObject({ ready_task_id: "t2", wait_task: "t2" });
    // Event sequences come from the token counter: a claim right after gets the next value.
    const claim = await claimOrFail(backend, id, "t2", "w1", 60_000);
    expect(claim.token).toBe(sequence + 1);
    // The write past the wait consumes the event: the row moves on, the event row goes.
    await backend.saveSnapshot(
      updatePosition(markTaskCompleted(wait, "t2", text("two")), { kind: "AtTask", taskId: "t3" }),
      { claim, consumeEvent: { eventName: "approval", sequence } },
    );
    expect(waitRow(raw, id)).toEqual({
      status: "in_progress",
      ready_task_id: "t3",
      wait_event: null,
      wait_task: null,
      timeout_at: null,
    });
    expect(raw.prepare(`SELECT count(*) AS n FROM "sayiir_events"`).get()).toEqual({ n: 0 });
  });

  it("a result for the wait's task ends the wait; pause and cancel take it out of both indexes", async () => {
    const { backend, path } = await fileBackend();
    const raw = rawConnection(path);
    await backend.saveSnapshot(awaiting("wf-a", "e", "t1", { timeoutAt: 1_000 }));
    await backend.saveTaskResult("wf-a", "t1", text("done"));
    expect(waitRow(raw, "wf-a")).toMatchObject({ ready_task_id: null, wait_task: null, timeout_at: null });
    expect(await backend.findAvailableTasks("w", 10)).toEqual([]);

    await backend.saveSnapshot(awaiting("wf-b", "e", "t1", { timeoutAt: 1_000 }));
    await backend.pauseWorkflow("wf-b");
    expect(waitRow(raw, "wf-b")).toMatchObject({ status: "paused", ready_task_id: null, wait_task: null });
    await backend.resumeWorkflow("wf-b");
    expect(waitRow(raw, "wf-b")).toMatchObject({ status: "in_progress", wait_task: "t1", timeout_at: 1_000 });
    expect((await backend.findAvailableTasks("w", 10)).map((t) => [t.instanceId, t.timedOut])).toEqual([
      ["wf-b", true],
    ]);
    await backend.cancelWorkflow("wf-b");
    expect(waitRow(raw, "wf-b")).toMatchObject({ status: "cancelled", ready_task_id: null, wait_task: null });
    expect(await backend.findAvailableTasks("w", 10)).toEqual([]);
  });

  it("ready tasks and due timers come merged by key: updated_at for ready rows, timeout_at for timers", async () => {
    const { backend } = await fileBackend();
    await backend.saveSnapshot(atTask("r-30", "t1", { updatedAt: 30 }));
    await backend.saveSnapshot(awaiting("w-20", "e", "t1", { timeoutAt: 20, updatedAt: 90 }));
    await backend.saveSnapshot(atTask("r-10", "t1", { updatedAt: 10 }));
    await backend.saveSnapshot(awaiting("w-40", "e", "t1", { timeoutAt: 40, updatedAt: 5 }));
    // Made ready by an event: served in updated_at order like any ready task.
    await backend.saveSnapshot(awaiting("e-35", "e", "t1", { timeoutAt: 1, updatedAt: 35 }));
    await backend.sendEvent("e-35", "e", text("x"));
    // Same key: instance id order.
    await backend.saveSnapshot(awaiting("a-40", "e", "t1", { timeoutAt: 40, updatedAt: 99 }));
    expect((await backend.findAvailableTasks("w", 10)).map((t) => t.instanceId)).toEqual([
      "r-10",
      "w-20",
      "r-30",
      "e-35",
      "a-40",
      "w-40",
    ]);
    expect((await backend.claimAvailableTasks("w", 3, 60_000)).map((t) => t.instanceId)).toEqual([
      "r-10",
      "w-20",
      "r-30",
    ]);
  });

  it("discovery merges the ready and timer index walks (no sort); a wait's event is read by index", async () => {
    const { backend } = await fileBackend();
    const sql = statements(tableNames("sayiir_"));
    const planOf = (text: string, params: Record<string, SQLInputValue> | SQLInputValue[]) => {
      const statement = backend.database.prepare(`EXPLAIN QUERY PLAN ${text}`);
      const rows = Array.isArray(params) ? statement.all(...params) : statement.all(params);
      return rows.map((r) => String(r.detail)).join("\n");
    };
    const plan = planOf(sql.findAvailable, { queue: "default", now: 0, horizon: 120_000, limit: 10 });
    expect(plan).toContain("MERGE (UNION ALL)");
    // Both walks are led by the queue (migration 3): another queue's rows are never read.
    expect(plan).toMatch(/SEARCH s USING INDEX sayiir_snapshots_ready \(queue=\?\)/);
    expect(plan).toMatch(
      /SEARCH s USING INDEX sayiir_snapshots_timers \(queue=\? AND due_key>\? AND due_key<\?\)/,
    );
    expect(plan).not.toContain("TEMP B-TREE");
    const events = planOf(sql.oldestEvent, ["wf-1", "e"]);
    expect(events).toMatch(
      /SEARCH sayiir_events USING (COVERING )?INDEX sayiir_events_by_name \(instance_id=\? AND event_name=\?\)/,
    );
    expect(events).not.toContain("TEMP B-TREE");
  });
});

describe("cancel revokes claims", () => {
  it("every claim row stays with its token and gets the epoch as expiry; the holder may still release it", async () => {
    const { backend, path } = await fileBackend();
    const raw = rawConnection(path);
    await backend.saveSnapshot(atTask("wf-1", "t1"));
    const a = await claimOrFail(backend, "wf-1", "t1", "w1", 60_000);
    const b = await claimOrFail(backend, "wf-1", "side", "w2", null);
    await backend.cancelWorkflow("wf-1");
    const rows = raw
      .prepare(
        `SELECT task_id, token, expires_at FROM "sayiir_claims" WHERE instance_id = ? ORDER BY task_id`,
      )
      .all("wf-1");
    expect(rows.map((r) => [r.task_id, r.token, r.expires_at])).toEqual([
      ["side", b.token, REVOKED_EXPIRY],
      ["t1", a.token, REVOKED_EXPIRY],
    ]);
    await backend.releaseTaskClaim("wf-1", "side", "w2");
    await expectCode(backend.extendTaskClaim("wf-1", "t1", "w1", 1_000), ErrorCode.ClaimLost);
  });

  it("a clock stepped back a minute does not revive a revoked claim", async () => {
    const { backend } = await fileBackend();
    await backend.saveSnapshot(atTask("wf-1", "t1"));
    const held = await claimOrFail(backend, "wf-1", "t1", "w1", 60_000);
    await backend.cancelWorkflow("wf-1");
    const now = Date.now();
    const clock = vi.spyOn(Date, "now").mockReturnValue(now - 60_000);
    try {
      await expectCode(backend.extendTaskClaim("wf-1", "t1", "w1", 1_000), ErrorCode.ClaimLost);
      const next = await claimOrFail(backend, "wf-1", "t1", "w2", 60_000);
      expect(next.token).toBeGreaterThan(held.token);
    } finally {
      clock.mockRestore();
    }
  });

  it("a claim taken after the cancel fences nothing and its heartbeat fails with claimRevoked", async () => {
    const { backend } = await fileBackend();
    await backend.saveSnapshot(atTask("wf-1", "t1"));
    await backend.cancelWorkflow("wf-1");
    const late = await claimOrFail(backend, "wf-1", "t1", "w1", 60_000);
    const error = await rejection(backend.extendTaskClaim("wf-1", "t1", "w1", 1_000));
    expect(error).toMatchObject({
      code: ErrorCode.ClaimLost,
      message: failures.claimRevoked("wf-1", "t1").message,
    });
    const done = finished("wf-1", { kind: "Completed", finalOutput: text("late") });
    const refused = await rejection(backend.saveSnapshot(done, { claim: late }));
    expect(refused).toMatchObject({
      code: ErrorCode.Conflict,
      message: failures.cancelledIsFinal("wf-1").message,
    });
    // The holder may still release it.
    await backend.releaseTaskClaim("wf-1", "t1", "w1");
  });
});

describe("failures roll back whole", () => {
  it("a driver failure in sendEvent stores no event and wakes nothing", async () => {
    const { backend, path } = await fileBackend();
    await backend.saveSnapshot(awaiting("wf-1", "e", "t1"));
    failInserts(path, "events", "NEW.instance_id = 'wf-1'");
    expect(await rejection(backend.sendEvent("wf-1", "e", text("x")))).toBeInstanceOf(BackendError);
    expect(await backend.loadPendingEvents("wf-1")).toEqual([]);
    expect(await backend.findAvailableTasks("w", 10)).toEqual([]);
  });

  it("a consuming write that fails half-way keeps its event pending and the wait ready", async () => {
    const { backend, path } = await fileBackend();
    const wait = awaiting("wf-1", "e", "t1");
    await backend.saveSnapshot(wait);
    await backend.sendEvent("wf-1", "e", text("payload"));
    const [task] = await backend.claimAvailableTasks("w1", 1, 60_000);
    if (task?.event === undefined) throw new Error("no event-ready task");
    failInserts(path, "results", "NEW.task_id = 'boom'");
    const next = updatePosition(
      markTaskCompleted(markTaskCompleted(wait, "t1", text("r")), "boom", text("!")),
      {
        kind: "AtTask",
        taskId: "t2",
      },
    );
    expect(
      await rejection(backend.saveSnapshot(next, { claim: task.claim, consumeEvent: task.event })),
    ).toBeInstanceOf(BackendError);
    expect((await backend.loadPendingEvents("wf-1")).map((e) => dec(e.payload))).toEqual(["payload"]);
    await backend.releaseTaskClaim("wf-1", "t1", "w1");
    const [again] = await backend.findAvailableTasks("w", 10);
    expect(again?.event).toEqual(task.event);
  });

  it("a terminal write drops the pending events", async () => {
    const { backend } = await fileBackend();
    await backend.saveSnapshot(awaiting("wf-1", "e", "t1"));
    await backend.sendEvent("wf-1", "other", text("x"));
    await backend.saveSnapshot(finished("wf-1", { kind: "Completed", finalOutput: text("done") }));
    expect(await backend.loadPendingEvents("wf-1")).toEqual([]);
  });
});

describe("migration 2", () => {
  it("a version-1 file migrates with its snapshots, results, claims, tokens and ready tasks intact", async () => {
    const db = await tempDatabase();
    cleanups.push(db.remove);
    const t = tableNames("sayiir_");
    const raw = rawConnection(db.path);
    raw.exec("PRAGMA journal_mode = WAL");
    raw.exec(
      `CREATE TABLE ${t.schemaVersion} (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL) STRICT`,
    );
    raw.exec(migrations(t)[0] as string);
    raw.exec(`INSERT INTO ${t.schemaVersion} (id, version) VALUES (1, 1)`);
    raw.exec(`UPDATE ${t.tokenSequence} SET last_token = 41`);
    const insert = raw.prepare(
      `INSERT INTO ${t.snapshots} (instance_id, header, status, definition_hash, initial_input, last_completed_task_id, ready_task_id, updated_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
    );
    const rows = [
      atTask("v1-ready", "t2", { completed: { t1: text("one") }, initialInput: text("in"), updatedAt: 100 }),
      atTask("v1-claimed", "t1", { updatedAt: 50 }),
      finished("v1-done", { kind: "Failed", error: "boom" }),
    ];
    for (const snapshot of rows) {
      const s = toStoredSnapshot(snapshot);
      const status =
        s.status === "InProgress" ? "in_progress" : s.status === "Failed" ? "failed" : "completed";
      insert.run(
        s.instanceId,
        s.header,
        status,
        s.definitionHash,
        s.initialInput,
        s.lastCompletedTaskId,
        s.readyTaskId,
        s.updatedAt,
      );
      for (const r of s.results) {
        raw
          .prepare(`INSERT INTO ${t.results} (instance_id, task_id, output) VALUES (?, ?, ?)`)
          .run(s.instanceId, r.taskId, r.output);
      }
    }
    raw.exec(
      `INSERT INTO ${t.claims} (instance_id, task_id, worker_id, token, claimed_at, expires_at)
       VALUES ('v1-claimed', 't1', 'old', 41, 0, NULL)`,
    );

    const backend = new SqliteBackend({ path: db.path });
    cleanups.push(() => backend.close());
    expect(await backend.migrate()).toEqual({ applied: [2, 3, 4], version: 4 });
    expect(await backend.listSnapshots()).toEqual(["v1-claimed", "v1-done", "v1-ready"]);
    const loaded = await backend.loadSnapshot("v1-ready");
    expect(
      loaded.state.kind === "InProgress" && dec(loaded.state.completedTasks.t1?.output ?? new Uint8Array()),
    ).toBe("one");
    expect((await backend.findAvailableTasks("w", 10)).map((t) => [t.instanceId, dec(t.input)])).toEqual([
      ["v1-ready", "one"],
    ]);
    await expectCode(backend.sendEvent("v1-done", "e", text("x")), ErrorCode.Conflict);
    expect(await backend.claimTask("v1-claimed", "t1", "new", 60_000)).toBeNull();
    await backend.releaseTaskClaim("v1-claimed", "t1", "old");
    expect((await claimOrFail(backend, "v1-claimed", "t1", "new", 60_000)).token).toBe(42);
    // The new states and waits work on the migrated file.
    await backend.pauseWorkflow("v1-ready");
    await backend.cancelWorkflow("v1-ready");
    expect((await backend.loadSnapshot("v1-ready")).state).toMatchObject({
      kind: "Cancelled",
      interruptedAtTaskId: "t2",
    });
  });
});
