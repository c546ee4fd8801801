import type { MigrationReport } from "@sayiir/persistence-core/adapter";
import type { Layout } from "./layout.js";
import {
  EVENTS_INDEX,
  FINISHED_INDEX,
  LEASED_INDEX,
  quoteIdentifier,
  READY_INDEX,
  TIMER_INDEX,
  TOKEN_SEQUENCE,
} from "./layout.js";

/** One schema version. Migrations are append-only: never edit a released one, add the next. */
export interface Migration {
  version: number;
  name: string;
  sql: (layout: Layout) => string;
}

/**
 * Postgres 13 or newer: nothing here (nor in the statements) uses MERGE, NULLS NOT DISTINCT or
 * other later features.
 */
export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: "snapshots, task results, claims, token sequence, ready index",
    sql: (l) => `
CREATE TABLE ${l.snapshots} (
  instance_id            text COLLATE "C" PRIMARY KEY,
  definition_hash        text NOT NULL,
  header                 bytea NOT NULL,
  initial_input          bytea,
  finished               boolean NOT NULL,
  last_completed_task_id text COLLATE "C",
  ready_task_id          text COLLATE "C",
  updated_at             bigint NOT NULL
);
CREATE INDEX ${quoteIdentifier(READY_INDEX)} ON ${l.snapshots} (updated_at, instance_id)
  WHERE ready_task_id IS NOT NULL;
CREATE TABLE ${l.taskResults} (
  instance_id text COLLATE "C" NOT NULL,
  task_id     text COLLATE "C" NOT NULL,
  output      bytea NOT NULL,
  PRIMARY KEY (instance_id, task_id)
);
CREATE TABLE ${l.claims} (
  instance_id text COLLATE "C" NOT NULL,
  task_id     text COLLATE "C" NOT NULL,
  worker_id   text NOT NULL,
  token       bigint NOT NULL,
  claimed_at  timestamptz NOT NULL,
  expires_at  timestamptz,
  PRIMARY KEY (instance_id, task_id)
);
CREATE SEQUENCE ${l.s}.${quoteIdentifier(TOKEN_SEQUENCE)} AS bigint MINVALUE 1 START 1;
`,
  },
  {
    version: 2,
    name: "lease on claimed ready tasks: ready index without them, leased index by lease end",
    // A nullable column without default is a catalog change only. ALTER TABLE and DROP INDEX take
    // an ACCESS EXCLUSIVE lock on the snapshots table, held until the migration's transaction
    // commits: reads of the table wait too while the index builds scan it once (CONCURRENTLY cannot
    // run in a transaction). Both indexes only hold ready rows.
    sql: (l) => `
ALTER TABLE ${l.snapshots} ADD COLUMN claimed_until timestamptz;
DROP INDEX ${l.s}.${quoteIdentifier(READY_INDEX)};
CREATE INDEX ${quoteIdentifier(READY_INDEX)} ON ${l.snapshots} (updated_at, instance_id)
  WHERE ready_task_id IS NOT NULL AND claimed_until IS NULL;
CREATE INDEX ${quoteIdentifier(LEASED_INDEX)} ON ${l.snapshots} (claimed_until)
  WHERE ready_task_id IS NOT NULL AND claimed_until IS NOT NULL;
`,
  },
  {
    version: 3,
    name: "workflow control and events: paused, cancelled, the wait columns, timer index, leases of due waits, events",
    // Nullable columns and NOT NULL columns with a constant default are catalog changes only
    // (PostgreSQL 11+): no row is rewritten, and no existing row holds a wait, a pause or a cancel.
    // The leased index is rebuilt to cover every leased row (a due wait claimed by claim-next has
    // no ready_task_id); before this version only ready rows held a lease, so it holds the same
    // rows; the timer index starts empty. ALTER TABLE and DROP INDEX take an ACCESS EXCLUSIVE lock
    // on the snapshots table, held until the migration's transaction commits: every read and write
    // of snapshots waits while the two index builds read the table (not only the writes).
    sql: (l) => `
ALTER TABLE ${l.snapshots}
  ADD COLUMN paused boolean NOT NULL DEFAULT false,
  ADD COLUMN cancelled boolean NOT NULL DEFAULT false,
  ADD COLUMN wait_event text COLLATE "C",
  ADD COLUMN wait_task text COLLATE "C",
  ADD COLUMN timeout_at bigint;
DROP INDEX ${l.s}.${quoteIdentifier(LEASED_INDEX)};
CREATE INDEX ${quoteIdentifier(LEASED_INDEX)} ON ${l.snapshots} (claimed_until)
  WHERE claimed_until IS NOT NULL;
CREATE INDEX ${quoteIdentifier(TIMER_INDEX)} ON ${l.snapshots} (timeout_at, instance_id)
  WHERE timeout_at IS NOT NULL AND ready_task_id IS NULL AND claimed_until IS NULL;
CREATE TABLE ${l.events} (
  instance_id text COLLATE "C" NOT NULL,
  sequence    bigint NOT NULL,
  event_name  text COLLATE "C" NOT NULL,
  payload     bytea NOT NULL,
  sent_at     bigint NOT NULL,
  PRIMARY KEY (instance_id, sequence)
);
CREATE INDEX ${quoteIdentifier(EVENTS_INDEX)} ON ${l.events} (instance_id, event_name, sequence);
`,
  },
  {
    version: 4,
    name: "scheduling: schedule columns, ready and timer indexes led by the queue, task attempts",
    // The schedule of the ready or awaited task (run_at, priority, queue), the position task, the
    // ready key and the due task, time and key (a future runAt or retryAt, or a wait's timeout).
    // Existing rows keep their order (priority 3: ready key = updated_at, a wait's due time and key
    // = its timeout): one UPDATE rewrites the ready and waiting rows. The ready and timer indexes
    // are rebuilt led by the queue (another queue's rows are never read). ALTER TABLE and DROP
    // INDEX take an ACCESS EXCLUSIVE lock on snapshots until the migration commits.
    sql: (l) => `
ALTER TABLE ${l.snapshots}
  ADD COLUMN position_task_id text COLLATE "C",
  ADD COLUMN run_at bigint,
  ADD COLUMN priority smallint NOT NULL DEFAULT 3,
  ADD COLUMN queue text COLLATE "C" NOT NULL DEFAULT 'default',
  ADD COLUMN ready_key bigint,
  ADD COLUMN due_task_id text COLLATE "C",
  ADD COLUMN due_at bigint,
  ADD COLUMN due_key bigint;
UPDATE ${l.snapshots} SET
  position_task_id = coalesce(ready_task_id, wait_task),
  ready_key = CASE WHEN ready_task_id IS NOT NULL THEN updated_at END,
  due_task_id = CASE WHEN ready_task_id IS NULL AND timeout_at IS NOT NULL THEN wait_task END,
  due_at = CASE WHEN ready_task_id IS NULL AND timeout_at IS NOT NULL THEN timeout_at END,
  due_key = CASE WHEN ready_task_id IS NULL AND timeout_at IS NOT NULL THEN timeout_at END
WHERE ready_task_id IS NOT NULL OR wait_task IS NOT NULL;
DROP INDEX ${l.s}.${quoteIdentifier(READY_INDEX)};
DROP INDEX ${l.s}.${quoteIdentifier(TIMER_INDEX)};
CREATE INDEX ${quoteIdentifier(READY_INDEX)} ON ${l.snapshots} (queue, ready_key, instance_id)
  WHERE ready_task_id IS NOT NULL AND claimed_until IS NULL;
CREATE INDEX ${quoteIdentifier(TIMER_INDEX)} ON ${l.snapshots} (queue, due_key, instance_id, due_at)
  WHERE due_key IS NOT NULL AND ready_task_id IS NULL AND claimed_until IS NULL;
CREATE TABLE ${l.attempts} (
  instance_id    text COLLATE "C" NOT NULL,
  task_id        text COLLATE "C" NOT NULL,
  count          integer NOT NULL,
  last_error     text,
  last_failed_at bigint,
  retry_at       bigint,
  held           boolean NOT NULL DEFAULT false,
  PRIMARY KEY (instance_id, task_id)
);
`,
  },
  {
    version: 5,
    name: "leased index led by the queue",
    // Discovery's expired part read the leased index by lease end alone and filtered the queue:
    // every expired lease of another queue (its workers gone) was walked on each call. Led by the
    // queue, another queue's leases are never read. Same rows, no column change; DROP INDEX takes
    // an ACCESS EXCLUSIVE lock on snapshots until the migration commits (one index build).
    sql: (l) => `
DROP INDEX ${l.s}.${quoteIdentifier(LEASED_INDEX)};
CREATE INDEX ${quoteIdentifier(LEASED_INDEX)} ON ${l.snapshots} (queue, claimed_until)
  WHERE claimed_until IS NOT NULL;
`,
  },
  {
    version: 6,
    name: "claim-next claims kept in the snapshot row",
    // The claim that claim-next takes lives in the snapshot row itself (claim_task, claim_worker,
    // claim_token, claim_at, claim_expires) instead of a claims row: a task's life writes the row
    // at claim and at completion, plus its result, and no claims row. Nullable columns without a
    // default: a catalog change only, no row rewritten, no index built. Existing claims rows stay
    // where they are and stay claims: every statement reads a claim from either place (a given
    // (instance, task) has at most one of them), so nothing is moved. ALTER TABLE takes an ACCESS
    // EXCLUSIVE lock on snapshots until the migration commits (an instant: no scan).
    sql: (l) => `
ALTER TABLE ${l.snapshots}
  ADD COLUMN claim_task text COLLATE "C",
  ADD COLUMN claim_worker text,
  ADD COLUMN claim_token bigint,
  ADD COLUMN claim_at timestamptz,
  ADD COLUMN claim_expires timestamptz;
`,
  },
  {
    version: 7,
    name: "finish time of finished workflows and its index (purgeFinished)",
    // finished_at: when the workflow first became finished (server-clock epoch ms), written by
    // every write that finishes it. The store never recorded it before: a row finished already
    // gets its updated_at, the time of its last write: the best estimate there is (after a
    // terminal re-save, later than the finish). The UPDATE rewrites every finished row once and
    // the index build reads the table, under the ACCESS EXCLUSIVE lock of ALTER TABLE until the
    // migration commits: every statement on snapshots waits meanwhile.
    sql: (l) => `
ALTER TABLE ${l.snapshots} ADD COLUMN finished_at bigint;
UPDATE ${l.snapshots} SET finished_at = updated_at WHERE finished;
CREATE INDEX ${quoteIdentifier(FINISHED_INDEX)} ON ${l.snapshots} (finished_at, instance_id)
  WHERE finished_at IS NOT NULL;
`,
  },
];

export const LATEST_VERSION = MIGRATIONS[MIGRATIONS.length - 1]?.version ?? 0;

/** Advisory-lock key pair: a constant class id and the hash of the schema name (computed by the server). */
export const MIGRATION_LOCK_CLASS = 0x53_59_52_4d; // "SYRM"

/** The statements of migrate() and schemaVersion(), over the migrations table. */
export function schemaStatements(l: Layout) {
  return {
    lock: "SELECT pg_advisory_lock($1::int, hashtext($2::text))",
    unlock: "SELECT pg_advisory_unlock($1::int, hashtext($2::text))",
    createSchema: `CREATE SCHEMA IF NOT EXISTS ${l.s}`,
    createMigrations: `CREATE TABLE IF NOT EXISTS ${l.migrations} (
               version integer PRIMARY KEY,
               name text NOT NULL,
               applied_at timestamptz NOT NULL DEFAULT now())`,
    appliedVersions: `SELECT version FROM ${l.migrations}`,
    recordVersion: `INSERT INTO ${l.migrations} (version, name) VALUES ($1, $2)`,
    /** The migrations table as a regclass, null when it does not exist yet. */
    migrationsTable: "SELECT to_regclass($1) AS t",
    latestVersion: `SELECT max(version) AS v FROM ${l.migrations}`,
  } as const;
}

/** One connection, checked out by the caller for the whole migration (the advisory lock is per session). */
export interface MigrationSession {
  query<R extends Record<string, unknown>>(text: string, values?: unknown[]): Promise<{ rows: R[] }>;
  /** The connection may be unusable (the unlock failed): the caller must not return it to the pool. */
  broken(error: unknown): void;
}

/**
 * Creates the schema and applies the pending migrations, each in its own transaction with its
 * row in the migrations table. Serialised across processes by a session advisory lock on
 * (MIGRATION_LOCK_CLASS, hash of the schema name), released at the end (or when the session ends).
 */
export async function applyMigrations(db: MigrationSession, l: Layout): Promise<MigrationReport> {
  const sql = schemaStatements(l);
  const key = [MIGRATION_LOCK_CLASS, l.schema];
  await db.query(sql.lock, key);
  try {
    await db.query(sql.createSchema);
    await db.query(sql.createMigrations);
    const done = await db.query<{ version: number }>(sql.appliedVersions);
    const have = new Set(done.rows.map((r) => r.version));
    const applied: number[] = [];
    for (const migration of MIGRATIONS) {
      if (have.has(migration.version)) continue;
      await db.query("BEGIN");
      try {
        await db.query(migration.sql(l));
        await db.query(sql.recordVersion, [migration.version, migration.name]);
        await db.query("COMMIT");
      } catch (error) {
        await db.query("ROLLBACK").catch(() => {});
        throw error;
      }
      applied.push(migration.version);
    }
    return { applied, version: Math.max(0, ...have, ...applied) };
  } finally {
    await db.query(sql.unlock, key).catch((e: unknown) => db.broken(e));
  }
}
