import type { DatabaseSync } from "node:sqlite";
import { BackendError } from "@sayiir/persistence-core";
import type { MigrationReport } from "@sayiir/persistence-core/adapter";
import type { Tables } from "./layout.js";
import { immediate, isBusy, prepare } from "./transaction.js";

/** The schema version this release writes and reads. */
export const SCHEMA_VERSION = 4;

/**
 * Each migration takes the schema from version i to i + 1. Never edit a released one: append.
 * Exported for this package's tests (an older file is built from the first ones).
 */
export function migrations(t: Tables): string[] {
  return [
    `
    CREATE TABLE ${t.tokenSequence} (
      id INTEGER PRIMARY KEY CHECK (id = 1),
      last_token INTEGER NOT NULL
    ) STRICT;
    INSERT INTO ${t.tokenSequence} (id, last_token) VALUES (1, 0);

    CREATE TABLE ${t.snapshots} (
      instance_id TEXT COLLATE BINARY PRIMARY KEY NOT NULL,
      header BLOB NOT NULL,
      status TEXT NOT NULL CHECK (status IN ('in_progress', 'completed', 'failed')),
      definition_hash TEXT NOT NULL,
      initial_input BLOB,
      last_completed_task_id TEXT COLLATE BINARY,
      ready_task_id TEXT COLLATE BINARY,
      updated_at INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX ${t.readyIndex} ON ${t.snapshots} (updated_at, instance_id)
      WHERE ready_task_id IS NOT NULL;

    CREATE TABLE ${t.results} (
      instance_id TEXT COLLATE BINARY NOT NULL,
      task_id TEXT COLLATE BINARY NOT NULL,
      output BLOB NOT NULL,
      PRIMARY KEY (instance_id, task_id)
    ) STRICT;

    CREATE TABLE ${t.claims} (
      instance_id TEXT COLLATE BINARY NOT NULL,
      task_id TEXT COLLATE BINARY NOT NULL,
      worker_id TEXT COLLATE BINARY NOT NULL,
      token INTEGER NOT NULL,
      claimed_at INTEGER NOT NULL,
      expires_at INTEGER,
      PRIMARY KEY (instance_id, task_id)
    ) STRICT, WITHOUT ROWID;
    `,
    // 2: workflow control and events. The status CHECK gains 'paused' and 'cancelled' and the
    // snapshot row gains the wait of an AwaitingEvent position; SQLite cannot alter a CHECK, so the
    // table is rebuilt (rows copied as they are: a version-1 file holds no wait and no control
    // state). Then the timer index and the events table.
    `
    CREATE TABLE ${t.snapshotsRebuild} (
      instance_id TEXT COLLATE BINARY PRIMARY KEY NOT NULL,
      header BLOB NOT NULL,
      status TEXT NOT NULL
        CHECK (status IN ('in_progress', 'paused', 'cancelled', 'completed', 'failed')),
      definition_hash TEXT NOT NULL,
      initial_input BLOB,
      last_completed_task_id TEXT COLLATE BINARY,
      ready_task_id TEXT COLLATE BINARY,
      updated_at INTEGER NOT NULL,
      wait_event TEXT COLLATE BINARY,
      wait_task TEXT COLLATE BINARY,
      timeout_at INTEGER
    ) STRICT;
    INSERT INTO ${t.snapshotsRebuild}
      (instance_id, header, status, definition_hash, initial_input, last_completed_task_id, ready_task_id, updated_at)
      SELECT instance_id, header, status, definition_hash, initial_input, last_completed_task_id, ready_task_id, updated_at
      FROM ${t.snapshots};
    DROP TABLE ${t.snapshots};
    ALTER TABLE ${t.snapshotsRebuild} RENAME TO ${t.snapshots};
    CREATE INDEX ${t.readyIndex} ON ${t.snapshots} (updated_at, instance_id)
      WHERE ready_task_id IS NOT NULL;
    CREATE INDEX ${t.timerIndex} ON ${t.snapshots} (timeout_at, instance_id)
      WHERE timeout_at IS NOT NULL AND ready_task_id IS NULL;

    CREATE TABLE ${t.events} (
      instance_id TEXT COLLATE BINARY NOT NULL,
      sequence INTEGER NOT NULL,
      event_name TEXT COLLATE BINARY NOT NULL,
      payload BLOB NOT NULL,
      sent_at INTEGER NOT NULL,
      PRIMARY KEY (instance_id, sequence)
    ) STRICT;
    CREATE INDEX ${t.eventsByName} ON ${t.events} (instance_id, event_name, sequence);
    `,
    // 3: scheduling. The schedule of the ready or awaited task (run_at, priority, queue), the
    // position task (takeovers count as attempts), the ready key (effective time, see the README)
    // and the due task, time and key (a future runAt or retryAt, or a wait's timeout). Existing
    // rows keep their order: priority 3, ready key = updated_at, a wait's timer = its timeout.
    // The ready and timer indexes are rebuilt led by the queue; then the attempts table.
    `
    ALTER TABLE ${t.snapshots} ADD COLUMN position_task_id TEXT COLLATE BINARY;
    ALTER TABLE ${t.snapshots} ADD COLUMN run_at INTEGER;
    ALTER TABLE ${t.snapshots} ADD COLUMN priority INTEGER NOT NULL DEFAULT 3;
    ALTER TABLE ${t.snapshots} ADD COLUMN queue TEXT COLLATE BINARY NOT NULL DEFAULT 'default';
    ALTER TABLE ${t.snapshots} ADD COLUMN ready_key INTEGER;
    ALTER TABLE ${t.snapshots} ADD COLUMN due_task_id TEXT COLLATE BINARY;
    ALTER TABLE ${t.snapshots} ADD COLUMN due_at INTEGER;
    ALTER TABLE ${t.snapshots} ADD COLUMN due_key INTEGER;
    UPDATE ${t.snapshots} SET
      position_task_id = coalesce(ready_task_id, wait_task),
      ready_key = CASE WHEN ready_task_id IS NOT NULL THEN updated_at END,
      due_task_id = CASE WHEN ready_task_id IS NULL AND timeout_at IS NOT NULL THEN wait_task END,
      due_at = CASE WHEN ready_task_id IS NULL AND timeout_at IS NOT NULL THEN timeout_at END,
      due_key = CASE WHEN ready_task_id IS NULL AND timeout_at IS NOT NULL THEN timeout_at END;
    DROP INDEX ${t.readyIndex};
    DROP INDEX ${t.timerIndex};
    CREATE INDEX ${t.readyIndex} ON ${t.snapshots} (queue, ready_key, instance_id)
      WHERE ready_task_id IS NOT NULL;
    CREATE INDEX ${t.timerIndex} ON ${t.snapshots} (queue, due_key, instance_id, due_at)
      WHERE due_key IS NOT NULL AND ready_task_id IS NULL;

    CREATE TABLE ${t.attempts} (
      instance_id TEXT COLLATE BINARY NOT NULL,
      task_id TEXT COLLATE BINARY NOT NULL,
      count INTEGER NOT NULL,
      last_error TEXT,
      last_failed_at INTEGER,
      retry_at INTEGER,
      held INTEGER NOT NULL DEFAULT 0,
      PRIMARY KEY (instance_id, task_id)
    ) STRICT, WITHOUT ROWID;
    `,
    // 4: retention. The finish time purgeFinished reads (see retention.ts), with a partial index
    // holding only finished rows. No earlier release recorded when a workflow finished: a row
    // already Completed, Failed or Cancelled gets its updated_at, the best estimate there is (the
    // snapshot's own updatedAt, or the store's clock at its last result or control write).
    `
    ALTER TABLE ${t.snapshots} ADD COLUMN finished_at INTEGER;
    UPDATE ${t.snapshots} SET finished_at = updated_at
      WHERE status IN ('completed', 'failed', 'cancelled');
    CREATE INDEX ${t.finishedIndex} ON ${t.snapshots} (finished_at, instance_id)
      WHERE finished_at IS NOT NULL;
    `,
  ];
}

/**
 * Brings the schema to SCHEMA_VERSION. Idempotent, and safe when several processes run it at
 * once: everything happens in one BEGIN IMMEDIATE transaction, so the first one in does the
 * work and the others wait (busy_timeout), then find the version already applied. Reports the
 * versions this call applied (empty when the file was current) and the version after it.
 */
export async function migrate(
  db: DatabaseSync,
  tables: Tables,
  busyTimeoutMs: number,
): Promise<MigrationReport> {
  await useWal(db, busyTimeoutMs);
  return immediate(db, () => {
    db.exec(
      `CREATE TABLE IF NOT EXISTS ${tables.schemaVersion} (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        version INTEGER NOT NULL
      ) STRICT`,
    );
    const row = prepare(db, `SELECT version FROM ${tables.schemaVersion} WHERE id = 1`).get() as
      | { version: number }
      | undefined;
    const current = row?.version ?? 0;
    if (current > SCHEMA_VERSION) {
      throw new BackendError(
        `the database schema is at version ${current}; this release knows up to ${SCHEMA_VERSION}: upgrade the package`,
      );
    }
    const steps = migrations(tables);
    const applied: number[] = [];
    for (let version = current; version < SCHEMA_VERSION; version++) {
      db.exec(steps[version] as string);
      applied.push(version + 1);
    }
    if (current < SCHEMA_VERSION) {
      prepare(
        db,
        `INSERT INTO ${tables.schemaVersion} (id, version) VALUES (1, ?)
         ON CONFLICT (id) DO UPDATE SET version = excluded.version`,
      ).run(SCHEMA_VERSION);
    }
    return { applied, version: SCHEMA_VERSION };
  });
}

/**
 * Switches the file to WAL (a property of the file, kept by every later connection). Asking
 * when it is already on is a no-op; a ":memory:" database stays in "memory" mode. The switch
 * needs an exclusive lock and SQLite reports SQLITE_BUSY at once, without its busy handler,
 * when processes race for it, so this retries until the busy timeout has passed.
 */
async function useWal(db: DatabaseSync, busyTimeoutMs: number): Promise<void> {
  const deadline = Date.now() + busyTimeoutMs;
  for (let delay = 5; ; delay = Math.min(delay * 2, 100)) {
    try {
      const mode = prepare(db, "PRAGMA journal_mode").get() as { journal_mode: string } | undefined;
      if (mode?.journal_mode === "wal" || mode?.journal_mode === "memory") return;
      db.exec("PRAGMA journal_mode = WAL");
      return;
    } catch (error) {
      if (!isBusy(error) || Date.now() >= deadline) throw error;
    }
    await new Promise((resolve) => setTimeout(resolve, delay));
  }
}
