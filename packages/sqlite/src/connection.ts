/**
 * Opening and configuring the backend's own connection, and what it says about itself.
 */
import { DatabaseSync } from "node:sqlite";
import { BackendError } from "@sayiir/persistence-core";
import type { NormalizedOptions } from "./options.js";

const quoted = (id: string): string => JSON.stringify(id);

/**
 * Is the main database a file rather than `":memory:"`? `location()` (Node 24) says so for a
 * caller's connection too; without it, the path decides.
 */
export function inFile(db: DatabaseSync, path: string | undefined): boolean {
  const location = (db as { location?: () => string | null }).location;
  if (typeof location === "function") return location.call(db) !== null;
  return path !== ":memory:";
}

export function configure(
  db: DatabaseSync,
  busyTimeoutMs: number | undefined,
  synchronous: string | undefined,
): void {
  if (busyTimeoutMs !== undefined) db.exec(`PRAGMA busy_timeout = ${busyTimeoutMs}`);
  if (synchronous !== undefined) db.exec(`PRAGMA synchronous = ${synchronous}`);
}

export function open(options: NormalizedOptions): DatabaseSync {
  let db: DatabaseSync | undefined;
  try {
    db = new DatabaseSync(options.path as string);
    configure(db, options.busyTimeoutMs, options.synchronous);
    return db;
  } catch (error) {
    try {
      db?.close();
    } catch {
      // already closed
    }
    throw new BackendError(
      `could not open SQLite database ${quoted(options.path as string)}: ${String(error)}`,
      {
        cause: error,
      },
    );
  }
}
