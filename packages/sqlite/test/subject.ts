import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import type { ConformanceSubject, SubjectOptions } from "@sayiir/persistence-core/conformance";
import { SqliteBackend, type SqliteBackendOptions } from "../src/index.js";

/** A fresh temporary directory holding one database file; `remove` deletes it with its WAL files. */
export async function tempDatabase(): Promise<{ dir: string; path: string; remove: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), "sayiir-sqlite-"));
  return { dir, path: join(dir, "store.db"), remove: () => rm(dir, { recursive: true, force: true }) };
}

/**
 * The conformance subject: a database file of its own in a temporary directory; connect()
 * opens a second SqliteBackend on the same file, a real second connection.
 */
export async function sqliteSubject(
  { maxPayloadBytes }: SubjectOptions,
  extra: Partial<SqliteBackendOptions> = {},
): Promise<ConformanceSubject> {
  const db = await tempDatabase();
  const options: SqliteBackendOptions = { path: db.path, maxPayloadBytes, ...extra };
  const backend = new SqliteBackend(options);
  await backend.migrate();
  return {
    backend,
    connect: async () => new SqliteBackend(options),
    corruptSnapshot: async (instanceId) => {
      const raw = new DatabaseSync(db.path);
      try {
        raw.exec("PRAGMA busy_timeout = 5000");
        raw
          .prepare(
            `UPDATE "${options.tablePrefix ?? "sayiir_"}snapshots" SET header = ? WHERE instance_id = ?`,
          )
          .run(new TextEncoder().encode("not a snapshot"), instanceId);
      } finally {
        raw.close();
      }
    },
    cleanup: db.remove,
  };
}
