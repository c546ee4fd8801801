import { spawn } from "node:child_process";
import { once } from "node:events";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { BackendError } from "@sayiir/persistence-core";
import { atTask, rejection, text } from "@sayiir/persistence-core/conformance";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { SqliteBackend } from "../src/index.js";
import { ensureBuilt, fixtures, spawnWorkers } from "./processes.js";
import { tempDatabase } from "./subject.js";

describe("several processes on one database file", () => {
  let remove: (() => Promise<void>) | undefined;
  beforeAll(ensureBuilt, 120_000);
  afterEach(async () => {
    await remove?.();
    remove = undefined;
  });

  it("4 processes claiming and fenced-writing 120 tasks: each claimed exactly once, every result lands", async () => {
    const db = await tempDatabase();
    remove = db.remove;
    const backend = new SqliteBackend({ path: db.path });
    await backend.migrate();
    const ids = Array.from({ length: 120 }, (_, i) => `wf-${String(i).padStart(3, "0")}`);
    for (const [i, id] of ids.entries()) {
      await backend.saveSnapshot(
        atTask(id, "t1", { initialInput: text(`in-${i}`), updatedAt: 1_700_000_000_000 + i }),
      );
    }

    const reports = await spawnWorkers(db.path, "claim", 4);
    const claimed = reports.flatMap((r) => r.claimed as Array<{ instanceId: string; token: number }>);
    expect(claimed.map((c) => c.instanceId).sort()).toEqual(ids);
    expect(new Set(claimed.map((c) => c.token)).size).toBe(claimed.length);
    // More than one process got work (they really ran side by side).
    expect(reports.filter((r) => (r.claimed as unknown[]).length > 0).length).toBeGreaterThan(1);

    for (const report of reports) {
      for (const c of report.claimed as Array<{ instanceId: string }>) {
        const loaded = await backend.loadSnapshot(c.instanceId);
        expect(loaded.state.kind === "InProgress" && loaded.state.completedTasks.t1?.output).toEqual(
          text(report.workerId as string),
        );
      }
    }
    expect(await backend.findAvailableTasks("w", 10)).toEqual([]);
    await backend.close();
  }, 120_000);

  it("4 processes running migrate() at once on a fresh file: all succeed, one schema", async () => {
    const db = await tempDatabase();
    remove = db.remove;
    const reports = await spawnWorkers(db.path, "migrate", 4);
    const tokens = reports.map((r) => r.token);
    // One claim on ("after-migrate", "t") won; the others saw it live.
    expect(tokens.filter((t) => t !== null)).toHaveLength(1);

    const raw = new DatabaseSync(db.path);
    try {
      expect(raw.prepare(`SELECT version FROM "sayiir_schema_version"`).all()).toEqual([{ version: 4 }]);
      expect(raw.prepare("PRAGMA journal_mode").get()).toEqual({ journal_mode: "wal" });
      const names = raw
        .prepare(`SELECT name FROM sqlite_schema WHERE name LIKE 'sayiir\\_%' ESCAPE '\\' ORDER BY name`)
        .all()
        .map((r) => r.name);
      expect(names).toEqual([
        "sayiir_claims",
        "sayiir_events",
        "sayiir_events_by_name",
        "sayiir_results",
        "sayiir_schema_version",
        "sayiir_snapshots",
        "sayiir_snapshots_finished",
        "sayiir_snapshots_ready",
        "sayiir_snapshots_timers",
        "sayiir_task_attempts",
        "sayiir_token_sequence",
      ]);
    } finally {
      raw.close();
    }
  }, 120_000);

  it("a process killed while holding the write lock: writes fail with BackendError meanwhile, then recover; nothing half-written", async () => {
    const db = await tempDatabase();
    remove = db.remove;
    const backend = new SqliteBackend({ path: db.path, busyTimeoutMs: 150 });
    await backend.migrate();
    await backend.saveSnapshot(atTask("wf-1", "t1"));
    const holder = spawn(process.execPath, [join(fixtures, "hold-lock.mjs"), db.path], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    try {
      const [chunk] = (await once(holder.stdout, "data")) as [Buffer];
      expect(chunk.toString()).toContain("locked");
      const started = Date.now();
      expect(await rejection(backend.claimTask("wf-1", "t1", "w", 60_000))).toBeInstanceOf(BackendError);
      expect(Date.now() - started).toBeLessThan(5000);
      expect(await backend.listSnapshots()).toEqual(["wf-1"]);
    } finally {
      holder.kill("SIGKILL");
      await once(holder, "exit");
    }
    // The OS dropped the dead process's lock; its open transaction never committed.
    expect(await backend.claimTask("wf-1", "t1", "w", 60_000)).not.toBeNull();
    expect(await backend.listSnapshots()).toEqual(["wf-1"]);
    await backend.close();
  }, 60_000);
});
