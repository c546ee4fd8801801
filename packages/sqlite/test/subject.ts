import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import type {
  ConformanceOptions,
  ConformanceSubject,
  SubjectOptions,
} from "@sayiir/persistence-core/conformance";
import { SqliteBackend, type SqliteBackendOptions } from "../src/index.js";
import { quoteIdentifier } from "../src/layout.js";
import { DEFAULT_TABLE_PREFIX } from "../src/options.js";

/** SQLite runs in this process: there is always a target, so this is never shown. */
export const NO_SERVER = "no server needed: node:sqlite is built into Node ^22.13.0 || >=23.4.0";

/** A fresh temporary directory holding one database file; `remove` deletes it with its WAL files. */
export async function tempDatabase(): Promise<{ dir: string; path: string; remove: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), "sayiir-sqlite-"));
  return { dir, path: join(dir, "store.db"), remove: () => rm(dir, { recursive: true, force: true }) };
}

export interface SqliteSubject extends ConformanceSubject {
  backend: SqliteBackend;
  /** The database file. */
  path: string;
  /** Deletes the file and its WAL companions (close the backends first). */
  cleanup: () => Promise<void>;
}

/**
 * A fresh subject: a database file of its own in a temporary directory, migrated; connect()
 * opens a second SqliteBackend on the same file, a real second connection. `extra` adds or
 * overrides backend options.
 */
export async function createSubject(
  { maxPayloadBytes, agingMs }: SubjectOptions = {},
  extra: Partial<SqliteBackendOptions> = {},
): Promise<SqliteSubject> {
  const db = await tempDatabase();
  const options: SqliteBackendOptions = { path: db.path, maxPayloadBytes, agingMs, ...extra };
  const backend = new SqliteBackend(options);
  await backend.migrate();
  return {
    backend,
    path: db.path,
    connect: async () => new SqliteBackend(options),
    corruptSnapshot: async (instanceId) => {
      const table = quoteIdentifier(`${options.tablePrefix ?? DEFAULT_TABLE_PREFIX}snapshots`);
      withRawConnection(db.path, (raw) =>
        raw
          .prepare(`UPDATE ${table} SET header = ? WHERE instance_id = ?`)
          .run(new TextEncoder().encode("not a snapshot"), instanceId),
      );
    },
    cleanup: db.remove,
  };
}

export function conformanceTargets(): ConformanceOptions[] {
  return [{ name: "sqlite (node:sqlite, file, WAL)", setup: (options) => createSubject(options) }];
}

function withRawConnection(path: string, body: (raw: DatabaseSync) => void): void {
  const raw = new DatabaseSync(path);
  try {
    raw.exec("PRAGMA busy_timeout = 5000");
    body(raw);
  } finally {
    raw.close();
  }
}

/**
 * The one way these tests inject a failure: a trigger, created on a connection of its own, that
 * makes the database fail every insert into `<prefix><table>` for which `when` (an SQL condition
 * on NEW) holds, with the message `boom`: a driver error in the middle of the backend's
 * transaction, as a full disk or an I/O error would give. Lock contention is not injected: the
 * tests hold the real write lock from another connection or process.
 */
export function failInserts(path: string, table: string, when: string, prefix = DEFAULT_TABLE_PREFIX): void {
  withRawConnection(path, (raw) =>
    raw.exec(`
      CREATE TRIGGER boom BEFORE INSERT ON ${quoteIdentifier(prefix + table)} WHEN ${when}
      BEGIN SELECT RAISE(ABORT, 'boom'); END`),
  );
}
