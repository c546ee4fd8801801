import type { DatabaseSync } from "node:sqlite";
import { type BaseBackendOptions, ValidationError } from "@sayiir/persistence-core";

/** How hard SQLite syncs a commit to disk (PRAGMA synchronous) on connections the backend opens. */
export type SynchronousMode = "FULL" | "NORMAL";

export interface SqliteBackendOptions extends BaseBackendOptions {
  /**
   * Database file to open (created if missing). `":memory:"` gives a private, non-durable
   * database (each backend its own). Exactly one of `path` and `database` is required.
   */
  path?: string;
  /**
   * An open `DatabaseSync` owned by the caller: the backend uses it and `close()` leaves it open.
   * Its connection settings are left alone, except `busyTimeoutMs` when that option is given.
   */
  database?: DatabaseSync;
  /**
   * How long a write waits for another connection's write lock before failing with
   * BackendError (PRAGMA busy_timeout). Default 5000 ms. The wait blocks the calling thread:
   * node:sqlite is synchronous.
   */
  busyTimeoutMs?: number;
  /**
   * Prefix of every table and index name, so several applications can share one file.
   * Letters, digits and underscores, not starting with a digit; default `"sayiir_"`.
   */
  tablePrefix?: string;
  /**
   * PRAGMA synchronous for connections the backend opens. `"FULL"` (default): a commit is on disk
   * before the call returns, even across power loss. `"NORMAL"`: in WAL mode a commit survives a
   * crash of the process but the last commits may be lost (never corrupted) on power loss or an
   * OS crash; commits are faster.
   */
  synchronous?: SynchronousMode;
}

export const DEFAULT_BUSY_TIMEOUT_MS = 5000;
export const DEFAULT_TABLE_PREFIX = "sayiir_";

export interface NormalizedOptions {
  path: string | undefined;
  database: DatabaseSync | undefined;
  /** undefined: leave the user's connection setting alone. */
  busyTimeoutMs: number | undefined;
  tablePrefix: string;
  synchronous: SynchronousMode | undefined;
}

const PREFIX = /^[A-Za-z_][A-Za-z0-9_]{0,63}$/;

/** Checks the options and fills in defaults; throws ValidationError on anything malformed. */
export function normalizeOptions(options: SqliteBackendOptions): NormalizedOptions {
  if (typeof options !== "object" || options === null) {
    throw new ValidationError("SqliteBackend needs an options object with `path` or `database`");
  }
  const { path, database } = options;
  if ((path === undefined) === (database === undefined)) {
    throw new ValidationError("SqliteBackend needs exactly one of `path` and `database`");
  }
  if (path !== undefined && (typeof path !== "string" || path.length === 0 || path.includes("\0"))) {
    throw new ValidationError('`path` must be a non-empty file path or ":memory:"');
  }
  if (
    database !== undefined &&
    (typeof database !== "object" || database === null || !("prepare" in database))
  ) {
    throw new ValidationError("`database` must be a node:sqlite DatabaseSync");
  }
  const busy = options.busyTimeoutMs;
  if (busy !== undefined && (!Number.isSafeInteger(busy) || busy < 0 || busy > 2_147_483_647)) {
    throw new ValidationError("`busyTimeoutMs` must be a non-negative integer of milliseconds");
  }
  const tablePrefix = options.tablePrefix ?? DEFAULT_TABLE_PREFIX;
  if (typeof tablePrefix !== "string" || (tablePrefix !== "" && !PREFIX.test(tablePrefix))) {
    throw new ValidationError(
      "`tablePrefix` may hold letters, digits and underscores, not starting with a digit",
    );
  }
  const synchronous = options.synchronous;
  if (synchronous !== undefined && synchronous !== "FULL" && synchronous !== "NORMAL") {
    throw new ValidationError('`synchronous` must be "FULL" or "NORMAL"');
  }
  const owned = database === undefined;
  return {
    path,
    database,
    busyTimeoutMs: busy ?? (owned ? DEFAULT_BUSY_TIMEOUT_MS : undefined),
    tablePrefix,
    synchronous: synchronous ?? (owned ? "FULL" : undefined),
  };
}
