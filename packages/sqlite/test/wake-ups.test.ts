import { DatabaseSync } from "node:sqlite";
import type { WakeProbe, WakeReason } from "@sayiir/persistence-core";
import { queued } from "@sayiir/persistence-core/conformance";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { SqliteBackend, type SqliteBackendOptions } from "../src/index.js";
import { tableNames } from "../src/layout.js";
import { statements } from "../src/sql.js";
import { DATA_VERSION_POLL_MS } from "../src/wake-ups.js";
import { ensureBuilt, spawnWorkers } from "./processes.js";
import { tempDatabase } from "./subject.js";

/** Exposes the probe a wait runs, to check its answers directly. */
class Probing extends SqliteBackend {
  probe(queues: string[]): Promise<WakeProbe> {
    return this.doProbeWakeUp(queues);
  }
}

/** A wait whose outcome and end time can be read without awaiting it. */
function watch(wait: Promise<WakeReason>) {
  const state: { reason?: WakeReason; at?: number } = {};
  const done = wait.then((reason) => {
    state.reason = reason;
    state.at = Date.now();
    return reason;
  });
  return { state, done };
}

const settle = () => new Promise((resolve) => setTimeout(resolve, 150));

describe("SQLite wake-ups", () => {
  const open: SqliteBackend[] = [];
  let remove: (() => Promise<void>) | undefined;
  async function backendOn(options: SqliteBackendOptions, as = SqliteBackend): Promise<SqliteBackend> {
    const backend = new as(options);
    open.push(backend);
    await backend.migrate();
    return backend;
  }
  afterEach(async () => {
    for (const backend of open.splice(0)) await backend.close();
    await remove?.();
    remove = undefined;
  });

  it("declares push wake-ups with a safety re-probe bound", async () => {
    const db = await tempDatabase();
    remove = db.remove;
    const backend = await backendOn({ path: db.path });
    expect(backend.capabilities.wakeUps).toBe("push");
    expect(backend.capabilities.wakeBoundMs).toBe(5_000);
  });

  it("two backends of one process on one file wake each other at once (the in-process channel)", async () => {
    const db = await tempDatabase();
    remove = db.remove;
    const a = await backendOn({ path: db.path });
    const b = await backendOn({ path: db.path });
    for (const [waiter, writer, id] of [
      [a, b, "from-b"],
      [b, a, "from-a"],
    ] as const) {
      const wait = watch(waiter.waitForTasks({ queues: ["q"], timeoutMs: 20_000 }));
      await settle();
      await writer.saveSnapshot(queued(id, "q"));
      // Told when the write committed: woken before any timer (the data_version watch's) runs.
      await new Promise((resolve) => setImmediate(resolve));
      expect(wait.state.reason).toBe("notified");
      await writer.claimAvailableTasks("w", 10, 60_000, { queues: ["q"] });
    }
  });

  it("an in-memory database: a backend's own writes wake its waiters", async () => {
    const backend = await backendOn({ path: ":memory:" });
    const wait = watch(backend.waitForTasks({ queues: ["q"], timeoutMs: 20_000 }));
    await settle();
    await backend.saveSnapshot(queued("mine", "q"));
    await new Promise((resolve) => setImmediate(resolve));
    expect(wait.state.reason).toBe("notified");
  });

  describe("across processes", () => {
    beforeAll(ensureBuilt, 120_000);

    it("a save by another process wakes a waiter here within the data_version interval", async () => {
      const db = await tempDatabase();
      remove = db.remove;
      const backend = await backendOn({ path: db.path });
      // The worker saves one ready task in the queue named by its id, "proc-0".
      const wait = watch(backend.waitForTasks({ queues: ["proc-0"], timeoutMs: 20_000 }));
      const [report] = await spawnWorkers(db.path, "save", 1);
      expect(await wait.done).toBe("notified");
      // Seen by the watch (every DATA_VERSION_POLL_MS), far sooner than the 5 s safety bound.
      expect((wait.state.at as number) - (report?.savedAt as number)).toBeLessThan(
        DATA_VERSION_POLL_MS + 500,
      );
    }, 60_000);
  });

  it("the probe: claimable now; else the earliest claim expiry or due time, priorities included", async () => {
    const db = await tempDatabase();
    remove = db.remove;
    const backend = (await backendOn({ path: db.path, agingMs: 60_000 }, Probing)) as Probing;
    expect(await backend.probe(["q"])).toEqual({ ready: false, nextDueAt: null });
    const now = Date.now();
    // Priority 1 later, priority 5 sooner: the sooner one is first by time but last by timer key.
    await backend.saveSnapshot(queued("late", "q", now + 50_000, 1));
    await backend.saveSnapshot(queued("soon", "q", now + 10_000, 5));
    expect(await backend.probe(["q"])).toEqual({ ready: false, nextDueAt: now + 10_000 });
    expect(await backend.probe(["other"])).toEqual({ ready: false, nextDueAt: null });
    await backend.saveSnapshot(queued("ready", "q2"));
    expect(await backend.probe(["q", "q2"])).toEqual({ ready: true, nextDueAt: null });
    const [claimed] = await backend.claimAvailableTasks("w", 1, 5_000, { queues: ["q2"] });
    expect(await backend.probe(["q2"])).toEqual({ ready: false, nextDueAt: claimed?.claim.expiresAt });
    expect(await backend.probe(["q", "q2"])).toEqual({ ready: false, nextDueAt: claimed?.claim.expiresAt });
  });

  it("the probe reads through the ready and timer indexes, never a scan of the snapshots", async () => {
    const db = await tempDatabase();
    remove = db.remove;
    await backendOn({ path: db.path });
    const raw = new DatabaseSync(db.path);
    try {
      const sql = statements(tableNames("sayiir_")).probeWakeUp;
      const plan = raw
        .prepare(`EXPLAIN QUERY PLAN ${sql}`)
        .all({ ":queue": "q", ":now": 1, ":horizon": 1, ":spread": 0 })
        .map((row) => String(row.detail));
      const reads = plan.filter((line) => /^(SCAN|SEARCH) /.test(line));
      expect(reads.length).toBeGreaterThan(0);
      // Only SEARCHes through an index or the primary key; the one SCAN allowed is of the
      // one-row subquery that holds "ready" (and SQLite's constant row).
      for (const line of reads) {
        expect(line).toMatch(
          /^SEARCH [sc] USING (COVERING INDEX|INDEX|PRIMARY KEY) |^SCAN \(subquery-\d+\)$|^SCAN CONSTANT ROW$/,
        );
      }
      expect(reads.some((line) => line.includes("sayiir_snapshots_ready"))).toBe(true);
      expect(reads.some((line) => line.includes("sayiir_snapshots_timers"))).toBe(true);
    } finally {
      raw.close();
    }
  });
});
