import { constants, DatabaseSync, type StatementSync } from "node:sqlite";
import {
  ErrorCode,
  type NextStep,
  type TaskClaim,
  type TaskCompletion,
  type WorkflowSnapshot,
} from "@sayiir/persistence-core";
import { atTask, awaiting, claimOrFail, expectCode, sleep, text } from "@sayiir/persistence-core/conformance";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { SqliteBackend } from "../src/index.js";
import { tableNames } from "../src/layout.js";
import { statements } from "../src/sql.js";
import { ensureBuilt, spawnWorkers } from "./processes.js";
import { createSubject } from "./subject.js";

// completeTasks with `next` on SQLite: what one step reads and writes, what it costs, and how it
// orders against the operations that race it. A step is one statement group inside the batch's
// BEGIN IMMEDIATE transaction, so two connections (or processes) interleave only between whole
// transactions: each race below is played in both orders, then for real across processes.

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function subject() {
  const s = await createSubject();
  cleanups.push(s.cleanup, () => s.backend.close());
  const other = await s.connect();
  cleanups.push(() => other.close());
  return { backend: s.backend, other, path: s.path };
}

const dec = (bytes: Uint8Array | undefined) =>
  bytes === undefined ? undefined : new TextDecoder().decode(bytes);

function step(claim: TaskClaim, output: string, next: NextStep, extra: Partial<TaskCompletion> = {}) {
  return { claim, output: text(output), next, ...extra };
}

/** A workflow at t2 with t1's output "one". */
const atT2 = (id: string, extra: Record<string, Uint8Array> = {}): WorkflowSnapshot =>
  atTask(id, "t2", { completed: { t1: text("one"), ...extra }, last: "t1", initialInput: text("in") });

const T3: NextStep = { kind: "AtTask", taskId: "t3" };

/** The statements of this package by their SQL, so an executed statement is named as in sql.ts. */
const names = new Map<string, string>(
  Object.entries(statements(tableNames("sayiir_"))).map(([name, sql]) => [sql, name]),
);

/**
 * A second backend on the file through an observed connection (a caller-owned DatabaseSync): the
 * statements it executes, by their sql.ts name (BEGIN and COMMIT by their text), and those of them
 * that read `results.output`, as SQLite's authorizer reports when each is prepared (the backend is
 * fresh, so each statement it runs is prepared on first use, under observation).
 */
function observed(path: string) {
  const raw = new DatabaseSync(path);
  const executed: string[] = [];
  const outputReaders: string[] = [];
  let readsOutput = false;
  raw.setAuthorizer((action, table, column) => {
    if (action === constants.SQLITE_READ && table === "sayiir_results" && column === "output") {
      readsOutput = true;
    }
    return constants.SQLITE_OK;
  });
  const watch = (statement: StatementSync, name: string, reads: boolean) =>
    new Proxy(statement, {
      get(target, prop) {
        const value = Reflect.get(target, prop, target);
        if (typeof value !== "function") return value;
        if (prop === "run" || prop === "get" || prop === "all" || prop === "iterate") {
          return (...args: unknown[]) => {
            executed.push(name);
            if (reads) outputReaders.push(name);
            return value.apply(target, args);
          };
        }
        return value.bind(target);
      },
    });
  const database = new Proxy(raw, {
    get(target, prop) {
      if (prop === "prepare") {
        return (sql: string) => {
          readsOutput = false;
          const statement = target.prepare(sql);
          return watch(statement, names.get(sql) ?? sql, readsOutput);
        };
      }
      if (prop === "exec") {
        return (sql: string) => {
          executed.push(sql.trim());
          target.exec(sql);
        };
      }
      const value = Reflect.get(target, prop, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  const backend = new SqliteBackend({ database });
  cleanups.push(
    () => raw.close(),
    () => backend.close(),
  );
  const take = () => {
    const out = { executed: [...executed], outputReaders: [...outputReaders] };
    executed.length = 0;
    outputReaders.length = 0;
    return out;
  };
  return { backend, take };
}

/**
 * Triggers that log every row written to results, snapshots, claims and events (table, operation,
 * instance, key: the task id, or an event's sequence). Returns a function that reads and clears
 * the log.
 */
function logWrites(path: string): () => Array<[string, string, string, string | null]> {
  const raw = new DatabaseSync(path);
  cleanups.push(() => raw.close());
  raw.exec("CREATE TABLE write_log (n INTEGER PRIMARY KEY, tbl TEXT, op TEXT, instance_id TEXT, k TEXT)");
  const keys: Record<string, string> = {
    results: "task_id",
    snapshots: "NULL",
    claims: "task_id",
    events: "sequence",
  };
  for (const [table, key] of Object.entries(keys)) {
    for (const [op, row] of [
      ["INSERT", "NEW"],
      ["UPDATE", "NEW"],
      ["DELETE", "OLD"],
    ] as const) {
      const k = key === "NULL" ? "NULL" : `${row}.${key}`;
      raw.exec(`
        CREATE TRIGGER log_${table}_${op} AFTER ${op} ON "sayiir_${table}"
        BEGIN INSERT INTO write_log (tbl, op, instance_id, k)
          VALUES ('${table}', '${op.toLowerCase()}', ${row}.instance_id, ${k}); END`);
    }
  }
  return () => {
    const rows = raw.prepare("SELECT tbl, op, instance_id, k FROM write_log ORDER BY n").all();
    raw.exec("DELETE FROM write_log");
    return rows.map((r) => [
      r.tbl as string,
      r.op as string,
      r.instance_id as string,
      r.k === null ? null : String(r.k),
    ]);
  };
}

describe("a step reads and writes only what changes", () => {
  it("reads no output and writes its own result row, the snapshot row and its claim; every other output stays untouched", async () => {
    const { backend, path } = await subject();
    const big = new Uint8Array(1 << 20).fill(7);
    const others = Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`o${i}`, text(`out-${i}`)]));
    await backend.saveSnapshot(atT2("wf", { big, ...others }));
    const claim = await claimOrFail(backend, "wf", "t2", "worker-1");
    const log = logWrites(path);
    const o = observed(path);
    expect(await o.backend.completeTasks([step(claim, "two", T3)])).toEqual([null]);
    expect(o.take().outputReaders).toEqual([]);
    expect(log()).toEqual([
      ["results", "insert", "wf", "t2"],
      ["snapshots", "update", "wf", null],
      ["claims", "delete", "wf", "t2"],
    ]);
    const loaded = await backend.loadSnapshot("wf");
    const state = loaded.state.kind === "InProgress" ? loaded.state : undefined;
    expect(Object.keys(state?.completedTasks ?? {}).sort()).toEqual(
      ["big", "t1", "t2", ...Object.keys(others)].sort(),
    );
    expect(state?.completedTasks.big?.output).toEqual(big);
    expect(state?.position).toEqual(T3);
  });

  it("a terminal step drops every result and pending event, as a terminal saveSnapshot, without reading an output", async () => {
    const { backend, path } = await subject();
    await backend.saveSnapshot(atT2("wf", { t0: text("zero") }));
    const sequence = await backend.sendEvent("wf", "late", text("x"));
    const claim = await claimOrFail(backend, "wf", "t2", "worker-1");
    const log = logWrites(path);
    const o = observed(path);
    const done: NextStep = { kind: "Completed", finalOutput: text("final") };
    expect(await o.backend.completeTasks([step(claim, "two", done)])).toEqual([null]);
    expect(o.take().outputReaders).toEqual([]);
    expect(log().sort()).toEqual(
      [
        ["results", "delete", "wf", "t0"],
        ["results", "delete", "wf", "t1"],
        ["events", "delete", "wf", String(sequence)],
        ["snapshots", "update", "wf", null],
        ["claims", "delete", "wf", "t2"],
      ].sort(),
    );
    expect((await backend.loadSnapshot("wf")).state).toEqual({
      kind: "Completed",
      finalOutput: text("final"),
    });
  });

  it("saveSnapshot writes only the results that are new or changed and deletes only the removed ones", async () => {
    const { backend, path } = await subject();
    const log = logWrites(path);
    const snap = (completed: Record<string, string>, taskId = "t9") =>
      atTask("wf", taskId, {
        completed: Object.fromEntries(Object.entries(completed).map(([k, v]) => [k, text(v)])),
      });
    const resultWrites = () => log().filter(([table]) => table === "results");
    await backend.saveSnapshot(snap({ a: "1", b: "2", c: "3" }));
    expect(resultWrites()).toEqual([
      ["results", "insert", "wf", "a"],
      ["results", "insert", "wf", "b"],
      ["results", "insert", "wf", "c"],
    ]);
    await backend.saveSnapshot(snap({ a: "1", b: "2", c: "3" }, "t8"));
    expect(resultWrites()).toEqual([]);
    await backend.saveSnapshot(snap({ a: "1", b: "two", c: "3", d: "4" }));
    expect(resultWrites()).toEqual([
      ["results", "update", "wf", "b"],
      ["results", "insert", "wf", "d"],
    ]);
    await backend.saveSnapshot(snap({ a: "1", d: "4", b: "two" }));
    expect(resultWrites()).toEqual([["results", "delete", "wf", "c"]]);
    const loaded = await backend.loadSnapshot("wf");
    expect(loaded.state.kind === "InProgress" && loaded.state.completedTasks).toEqual({
      a: { taskId: "a", output: text("1") },
      b: { taskId: "b", output: text("two") },
      d: { taskId: "d", output: text("4") },
    });
    await backend.saveSnapshot({ ...snap({}), state: { kind: "Failed", error: "x" } });
    expect(resultWrites().sort()).toEqual([
      ["results", "delete", "wf", "a"],
      ["results", "delete", "wf", "b"],
      ["results", "delete", "wf", "d"],
    ]);
  });
});

describe("where a step may apply", () => {
  it("a wait whose next task already had a result is still at that task (the core README's rule), also after pause and resume", async () => {
    const { backend, other } = await subject();
    await backend.saveSnapshot(atTask("wf", "t0", { completed: { t1: text("early") } }));
    const t0 = await claimOrFail(backend, "wf", "t0", "worker-1");
    const wait: NextStep = { kind: "AwaitingEvent", eventName: "go", nextTaskId: "t1", timeoutAt: null };
    expect(await backend.completeTasks([step(t0, "zero", wait)])).toEqual([null]);
    const t1 = await claimOrFail(other, "wf", "t1", "worker-2");
    // Pause and resume keep the position: the wait still runs t1, and t1's claim steps it on.
    await other.pauseWorkflow("wf");
    expect((await backend.completeTasks([step(t1, "one", T3)])).map((x) => x?.code)).toEqual([
      ErrorCode.Conflict,
    ]);
    await other.resumeWorkflow("wf");
    expect(await backend.completeTasks([step(t1, "one", T3)])).toEqual([null]);
    const state = (await backend.loadSnapshot("wf")).state;
    expect(state.kind === "InProgress" ? state.position : state).toEqual(T3);
  });
});

describe("statements per step and per batch", () => {
  const STEP = ["readStep", "upsertResult", "storeStep", "releaseClaim"];

  it("one step: one transaction of four statements (five when it consumes an event or ends the workflow); a refused one reads once", async () => {
    const { backend, path } = await subject();
    const o = observed(path);
    await backend.saveSnapshot(atT2("a"));
    const a = await claimOrFail(backend, "a", "t2", "worker-1");
    expect(await o.backend.completeTasks([step(a, "two", T3)])).toEqual([null]);
    expect(o.take().executed).toEqual(["BEGIN IMMEDIATE", ...STEP, "COMMIT"]);

    await backend.saveSnapshot(awaiting("b", "go", "t2", { completed: { t1: text("one") } }));
    const sequence = await backend.sendEvent("b", "go", text("yes"));
    const b = await claimOrFail(backend, "b", "t2", "worker-1");
    const consumeEvent = { eventName: "go", sequence };
    expect(await o.backend.completeTasks([step(b, "two", T3, { consumeEvent })])).toEqual([null]);
    expect(o.take().executed).toEqual([
      "BEGIN IMMEDIATE",
      "readStep",
      "consumeEvent",
      "upsertResult",
      "storeStep",
      "releaseClaim",
      "COMMIT",
    ]);

    const a3 = await claimOrFail(backend, "a", "t3", "worker-1");
    const end: NextStep = { kind: "Completed", finalOutput: text("f") };
    expect(await o.backend.completeTasks([step(a3, "three", end)])).toEqual([null]);
    expect(o.take().executed).toEqual([
      "BEGIN IMMEDIATE",
      "readStep",
      "deleteResults",
      "deleteEvents",
      "storeStep",
      "releaseClaim",
      "COMMIT",
    ]);

    // Refused (its claim went with the step): the read, nothing written.
    const outcomes = await o.backend.completeTasks([step(a3, "again", T3)]);
    expect(outcomes.map((x) => x?.code)).toEqual([ErrorCode.ClaimLost]);
    expect(o.take().executed).toEqual(["BEGIN IMMEDIATE", "readStep", "COMMIT"]);
  });

  it("a batch of 25 steps: one transaction, one commit, four statements per item", async () => {
    const { backend, path } = await subject();
    const o = observed(path);
    const claims: TaskClaim[] = [];
    for (let i = 0; i < 25; i++) {
      await backend.saveSnapshot(atT2(`wf-${i}`));
      claims.push(await claimOrFail(backend, `wf-${i}`, "t2", "worker-1"));
    }
    const outcomes = await o.backend.completeTasks(claims.map((c) => step(c, "two", T3)));
    expect(outcomes).toEqual(claims.map(() => null));
    const { executed } = o.take();
    expect(executed).toEqual(["BEGIN IMMEDIATE", ...claims.flatMap(() => STEP), "COMMIT"]);
    // Today's completeTasks without `next`, for comparison: five statements per item.
    const more: TaskClaim[] = [];
    for (let i = 0; i < 25; i++) more.push(await claimOrFail(backend, `wf-${i}`, "t3", "worker-1"));
    await o.backend.completeTasks(more.map((claim) => ({ claim, output: text("three") })));
    expect(o.take().executed.length).toBe(2 + 5 * 25);
  });
});

describe("races: each order of two connections, then processes", () => {
  it("step vs cancel: cancelled first, the step is refused and writes nothing; stepped first, the cancel interrupts the next task", async () => {
    const { backend, other, path } = await subject();
    await backend.saveSnapshot(atT2("first-cancel"));
    await backend.saveSnapshot(atT2("first-step"));
    const late = await claimOrFail(backend, "first-cancel", "t2", "worker-1");
    const early = await claimOrFail(backend, "first-step", "t2", "worker-1");
    await other.cancelWorkflow("first-cancel");
    const log = logWrites(path);
    const outcomes = await backend.completeTasks([step(late, "two", T3)]);
    // A cancelled workflow is finished; its revoked claim is no longer live: ClaimLost comes first.
    expect(outcomes.map((x) => x?.code)).toEqual([ErrorCode.ClaimLost]);
    expect(log()).toEqual([]);
    expect((await backend.loadSnapshot("first-cancel")).state).toMatchObject({
      kind: "Cancelled",
      completedTasks: { t1: { output: text("one") } },
      interruptedAtTaskId: "t2",
    });

    expect(await backend.completeTasks([step(early, "two", T3)])).toEqual([null]);
    await other.cancelWorkflow("first-step");
    const state = (await backend.loadSnapshot("first-step")).state;
    expect(state).toMatchObject({ kind: "Cancelled", interruptedAtTaskId: "t3" });
    expect(state.kind === "Cancelled" && Object.keys(state.completedTasks).sort()).toEqual(["t1", "t2"]);
    expect(await backend.findAvailableTasks("w", 10)).toEqual([]);
  });

  it("step vs pause: paused first, the step is refused, keeps its claim and goes through after resume; stepped first, the pause holds the next task", async () => {
    const { backend, other, path } = await subject();
    await backend.saveSnapshot(atT2("first-pause"));
    await backend.saveSnapshot(atT2("first-step"));
    const late = await claimOrFail(backend, "first-pause", "t2", "worker-1");
    const early = await claimOrFail(backend, "first-step", "t2", "worker-1");
    await other.pauseWorkflow("first-pause");
    const log = logWrites(path);
    expect((await backend.completeTasks([step(late, "two", T3)])).map((x) => x?.code)).toEqual([
      ErrorCode.Conflict,
    ]);
    expect(log()).toEqual([]);
    expect(await other.claimTask("first-pause", "t2", "worker-2", 30_000)).toBeNull();
    await other.resumeWorkflow("first-pause");
    expect(await backend.completeTasks([step(late, "two", T3)])).toEqual([null]);

    expect(await backend.completeTasks([step(early, "two", T3)])).toEqual([null]);
    await other.pauseWorkflow("first-step");
    expect((await backend.findAvailableTasks("w", 10)).map((t) => t.instanceId)).toEqual(["first-pause"]);
    await other.resumeWorkflow("first-step");
    const found = await backend.findAvailableTasks("w", 10);
    expect(found.map((t) => [t.instanceId, t.taskId, dec(t.input)]).sort()).toEqual([
      ["first-pause", "t3", "two"],
      ["first-step", "t3", "two"],
    ]);
  });

  it("step vs sendEvent: an event sent while the task runs stays pending, wakes the next wait at once, and only the consumed one goes", async () => {
    const { backend, other } = await subject();
    await backend.saveSnapshot(awaiting("wf", "go", "t2", { completed: { t1: text("one") } }));
    const first = await other.sendEvent("wf", "go", text("e1"));
    const [claimed] = await backend.claimAvailableTasks("worker-1", 10, 30_000);
    expect(claimed?.event).toEqual({ eventName: "go", sequence: first });
    if (claimed?.event === undefined) throw new Error("no event");
    // Sent by another connection while t2 runs, of the name the next wait waits for.
    const second = await other.sendEvent("wf", "go", text("e2"));
    const wait: NextStep = { kind: "AwaitingEvent", eventName: "go", nextTaskId: "t3", timeoutAt: null };
    expect(
      await backend.completeTasks([step(claimed.claim, "two", wait, { consumeEvent: claimed.event })]),
    ).toEqual([null]);
    expect((await backend.loadPendingEvents("wf")).map((e) => e.sequence)).toEqual([second]);
    const [next] = await backend.claimAvailableTasks("worker-1", 10, 30_000);
    expect(next).toMatchObject({ taskId: "t3", event: { eventName: "go", sequence: second } });
    expect(dec(next?.input)).toBe("e2");

    // The consumed event was the only one of its name: the next wait on that name is not ready.
    await backend.saveSnapshot(awaiting("solo", "go", "t2", { completed: { t1: text("one") } }));
    await other.sendEvent("solo", "go", text("only"));
    const [solo] = (await backend.claimAvailableTasks("worker-1", 10, 30_000)).filter(
      (t) => t.instanceId === "solo",
    );
    if (solo?.event === undefined) throw new Error("no event");
    expect(
      await backend.completeTasks([step(solo.claim, "two", wait, { consumeEvent: solo.event })]),
    ).toEqual([null]);
    expect(await backend.loadPendingEvents("solo")).toEqual([]);
    expect((await backend.findAvailableTasks("w", 10)).filter((t) => t.instanceId === "solo")).toEqual([]);

    // sendEvent after a step into a wait wakes it; after a terminal step it is refused.
    if (next?.event === undefined) throw new Error("no event");
    const other2: NextStep = { kind: "AwaitingEvent", eventName: "later", nextTaskId: "t4", timeoutAt: null };
    expect(
      await backend.completeTasks([step(next.claim, "three", other2, { consumeEvent: next.event })]),
    ).toEqual([null]);
    expect(await backend.findAvailableTasks("w", 10)).toEqual([]);
    await other.sendEvent("wf", "later", text("e3"));
    const [t4] = await backend.claimAvailableTasks("worker-1", 10, 30_000);
    expect(t4).toMatchObject({ taskId: "t4" });
    if (t4 === undefined) throw new Error("t4 not claimed");
    const end: NextStep = { kind: "Completed", finalOutput: text("f") };
    expect(await backend.completeTasks([step(t4.claim, "four", end)])).toEqual([null]);
    await expectCode(other.sendEvent("wf", "later", text("e4")), ErrorCode.Conflict);
    expect(await backend.loadPendingEvents("wf")).toEqual([]);
  });

  it("step vs a claim-next takeover after expiry: the stale step is ClaimLost and writes nothing; the new holder steps", async () => {
    const { backend, other, path } = await subject();
    await backend.saveSnapshot(atT2("wf"));
    const stale = await claimOrFail(backend, "wf", "t2", "worker-1", 100);
    await sleep(150);
    const [taken] = await other.claimAvailableTasks("worker-2", 10, 30_000);
    expect(taken).toMatchObject({ instanceId: "wf", taskId: "t2", attempt: 2 });
    if (taken === undefined) throw new Error("no takeover");
    const log = logWrites(path);
    expect((await backend.completeTasks([step(stale, "stale", T3)])).map((x) => x?.code)).toEqual([
      ErrorCode.ClaimLost,
    ]);
    expect(log()).toEqual([]);
    expect(await other.completeTasks([step(taken.claim, "two", T3)])).toEqual([null]);
    const loaded = await backend.loadSnapshot("wf");
    expect(loaded.state.kind === "InProgress" && dec(loaded.state.completedTasks.t2?.output)).toBe("two");
    expect(loaded.attempts?.t2).toMatchObject({ count: 1 });
  });

  describe("processes", () => {
    beforeAll(ensureBuilt, 120_000);

    it("4 processes stepping 80 workflows while this one cancels every fourth: each task steps at most once, and every workflow ends consistent", async () => {
      const { backend, path } = await subject();
      const ids = Array.from({ length: 80 }, (_, i) => `wf-${String(i).padStart(2, "0")}`);
      for (const id of ids) await backend.saveSnapshot(atTask(id, "t1", { initialInput: text(id) }));
      const doomed = new Set(ids.filter((_, i) => i % 4 === 0));
      const running = spawnWorkers(path, "step", 4);
      // The workers start 700 ms after the spawn; the cancels are spread over their run.
      await sleep(650);
      for (const id of doomed) {
        try {
          await backend.cancelWorkflow(id);
        } catch (error) {
          expect(error).toMatchObject({ code: ErrorCode.Conflict }); // Completed before the cancel
        }
        await sleep(10);
      }
      const reports = await running;
      const stepped = reports.flatMap((r) =>
        (r.stepped as Array<{ instanceId: string; taskId: string }>).map((s) => ({ ...s, by: r.workerId })),
      );
      const keys = stepped.map((s) => `${s.instanceId}/${s.taskId}`);
      expect(new Set(keys).size).toBe(keys.length);
      expect(reports.filter((r) => (r.stepped as unknown[]).length > 0).length).toBeGreaterThan(1);
      for (const r of reports) {
        for (const x of r.refused as Array<{ instanceId: string; code: string }>) {
          expect(doomed.has(x.instanceId)).toBe(true);
          // Claim-next never hands out a cancelled workflow's task: only a claim the cancel revoked is refused.
          expect(x.code).toBe(ErrorCode.ClaimLost);
        }
      }
      for (const id of ids) {
        const mine = stepped.filter((s) => s.instanceId === id);
        const state = (await backend.loadSnapshot(id)).state;
        if (state.kind === "Completed") {
          expect(mine.map((s) => s.taskId).sort()).toEqual(["t1", "t2"]);
          expect(dec(state.finalOutput)).toBe(mine.find((s) => s.taskId === "t2")?.by);
        } else {
          expect(doomed.has(id)).toBe(true);
          expect(state.kind).toBe("Cancelled");
          if (state.kind !== "Cancelled") continue;
          expect(Object.keys(state.completedTasks).sort()).toEqual(mine.map((s) => s.taskId).sort());
          for (const s of mine)
            expect(dec(state.completedTasks[s.taskId]?.output)).toBe(`${s.by}:${s.taskId}`);
          expect(state.interruptedAtTaskId).toBe(mine.length === 0 ? "t1" : "t2");
        }
      }
    }, 120_000);
  });
});
