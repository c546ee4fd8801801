import type { Layout } from "./layout.js";
import { LEASED_INDEX, quoteIdentifier, READY_INDEX, TOKEN_SEQUENCE } from "./layout.js";

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
    // A nullable column without default is a catalog change only. The index builds scan the
    // table once, under a lock that holds writes back meanwhile (CONCURRENTLY cannot run in the
    // migration's transaction); both indexes only hold ready rows.
    sql: (l) => `
ALTER TABLE ${l.snapshots} ADD COLUMN claimed_until timestamptz;
DROP INDEX ${l.s}.${quoteIdentifier(READY_INDEX)};
CREATE INDEX ${quoteIdentifier(READY_INDEX)} ON ${l.snapshots} (updated_at, instance_id)
  WHERE ready_task_id IS NOT NULL AND claimed_until IS NULL;
CREATE INDEX ${quoteIdentifier(LEASED_INDEX)} ON ${l.snapshots} (claimed_until)
  WHERE ready_task_id IS NOT NULL AND claimed_until IS NOT NULL;
`,
  },
];

export const LATEST_VERSION = MIGRATIONS[MIGRATIONS.length - 1]?.version ?? 0;

/** Advisory-lock key pair: a constant class id and the hash of the schema name (computed by the server). */
export const MIGRATION_LOCK_CLASS = 0x53_59_52_4d; // "SYRM"
