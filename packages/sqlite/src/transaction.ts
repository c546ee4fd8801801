import type { DatabaseSync, StatementSync } from "node:sqlite";

/**
 * Runs `body` inside BEGIN IMMEDIATE ... COMMIT. IMMEDIATE takes the write lock up front
 * (waiting up to busy_timeout, then SQLITE_BUSY), so a read-modify-write never has to upgrade
 * a read lock mid-way, which is where deferred transactions deadlock. Any error rolls back:
 * nothing is half-written. node:sqlite is synchronous, so no other call of this process can
 * run between BEGIN and COMMIT.
 */
export function immediate<T>(db: DatabaseSync, body: () => T): T {
  db.exec("BEGIN IMMEDIATE");
  return finish(db, body);
}

/**
 * Runs `body` in a read transaction (BEGIN DEFERRED): its SELECTs see one consistent state of
 * the database, and in WAL mode they neither wait for nor block writers.
 */
export function read<T>(db: DatabaseSync, body: () => T): T {
  db.exec("BEGIN");
  return finish(db, body);
}

function finish<T>(db: DatabaseSync, body: () => T): T {
  let result: T;
  try {
    result = body();
    db.exec("COMMIT");
  } catch (error) {
    rollback(db);
    throw error;
  }
  return result;
}

function rollback(db: DatabaseSync): void {
  try {
    db.exec("ROLLBACK");
  } catch {
    // No transaction left to roll back (SQLite already did, or COMMIT went through).
  }
}

/** SQLITE_BUSY (5) or SQLITE_LOCKED (6), extended codes included (by message where no errcode). */
export function isBusy(error: unknown): boolean {
  const code = (error as { errcode?: unknown } | null)?.errcode;
  if (typeof code === "number") return (code & 0xff) === 5 || (code & 0xff) === 6;
  return error instanceof Error && /database (table )?is locked|database is busy/i.test(error.message);
}

/**
 * Prepares a statement with the defaults this package relies on, whatever options the caller
 * opened their DatabaseSync with (readBigInts, returnArrays, allowBareNamedParameters are
 * per-database defaults that a statement can override).
 */
export function prepare(db: DatabaseSync, sql: string): StatementSync {
  const statement = db.prepare(sql);
  statement.setReadBigInts(false);
  statement.setReturnArrays(false);
  statement.setAllowBareNamedParameters(true);
  return statement;
}
