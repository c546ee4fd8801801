import type { BaseBackendOptions } from "@sayiir/persistence-core";
import { ValidationError } from "@sayiir/persistence-core";
import { connectionSecrets } from "@sayiir/persistence-core/adapter";
import type pg from "pg";

/**
 * For this package's tests only, not a stable API: the one seam through which they inject
 * client-side failures and count round trips, instead of patching `pg`. Server-side failures
 * (an error or a skipped row inside a statement) are injected with triggers instead.
 */
export interface FaultHooks {
  /**
   * Called before each statement is sent, with its name in sql.ts (`claimNext`, `completeTasks`,
   * ...) or, for transaction control and migrations, its SQL text. A throw or a rejection fails
   * that statement before it is sent, as a dropped connection would.
   */
  beforeQuery?: (statement: string) => void | Promise<void>;
  /**
   * Called after a statement's reply has arrived, with the same name. A throw or a rejection fails
   * the call as a reply lost on the way back would: the statement's effects stand (committed,
   * outside a transaction) and the caller sees a BackendError.
   */
  afterQuery?: (statement: string) => void | Promise<void>;
}

/** Options of {@link PostgresBackend}. Give exactly one of `connectionString`, `poolConfig` or `pool`. */
export interface PostgresBackendOptions extends BaseBackendOptions {
  /** A libpq-style URL, e.g. `postgres://user:pass@host:5432/db`. The backend opens (and closes) its own pool. */
  connectionString?: string;
  /** Options of the pool the backend opens (and closes). May carry `connectionString` itself. */
  poolConfig?: pg.PoolConfig;
  /** A pool owned by the caller: the backend uses it and `close()` leaves it open. */
  pool?: pg.Pool;
  /** The schema holding the tables (created by `migrate()`); default `"sayiir"`. */
  schema?: string;
  /**
   * Server-side `statement_timeout` in ms for connections the backend opens (default 30,000;
   * 0 disables). With a caller's pool, configure it on that pool.
   */
  statementTimeoutMs?: number;
  /** Client-side bound on one query in ms (pg `query_timeout`), default statement timeout + 5,000 (0 disables). */
  queryTimeoutMs?: number;
  /** Bound on opening a connection in ms (pg `connectionTimeoutMillis`) for pools the backend opens; default 10,000. */
  connectionTimeoutMs?: number;
  /**
   * Send the task-cycle statements as named (prepared) statements, parsed and planned once per
   * connection; default true. Turn it off behind a pooler that does not keep prepared statements
   * across transactions (PgBouncer in transaction mode before 1.21, or without
   * `max_prepared_statements`).
   */
  prepareStatements?: boolean;
  /** @internal For this package's tests only (see FaultHooks); not a stable API. */
  faults?: FaultHooks;
}

export const DEFAULT_SCHEMA = "sayiir";
export const DEFAULT_STATEMENT_TIMEOUT_MS = 30_000;
export const DEFAULT_CONNECTION_TIMEOUT_MS = 10_000;
export const DEFAULT_POOL_SIZE = 10;

export interface NormalizedOptions {
  schema: string;
  /** The pool to use and whether the backend owns it. */
  pool: { kind: "own"; config: pg.PoolConfig } | { kind: "user"; pool: pg.Pool };
  statementTimeoutMs: number;
  queryTimeoutMs: number;
  connectionTimeoutMs: number;
  prepareStatements: boolean;
  secrets: string[];
  faults: FaultHooks | undefined;
}

function nonNegativeInt(name: string, value: unknown, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 0) {
    throw new ValidationError(`${name} must be a non-negative integer number of milliseconds`);
  }
  return value;
}

/** Postgres identifiers hold at most 63 bytes; the name is always quoted, so any other character is fine. */
export function validateSchemaName(schema: unknown): string {
  if (typeof schema !== "string" || schema.length === 0)
    throw new ValidationError("schema must be a non-empty string");
  if (schema.includes("\u0000") || !schema.isWellFormed())
    throw new ValidationError("schema must not contain U+0000");
  if (Buffer.byteLength(schema, "utf8") > 63)
    throw new ValidationError("schema must be at most 63 bytes in UTF-8");
  return schema;
}

export function normalizeOptions(options: PostgresBackendOptions): NormalizedOptions {
  if (typeof options !== "object" || options === null) throw new ValidationError("options are required");
  const given = [options.connectionString, options.poolConfig, options.pool].filter(
    (v) => v !== undefined,
  ).length;
  if (given !== 1) {
    throw new ValidationError("give exactly one of connectionString, poolConfig or pool");
  }
  const schema = validateSchemaName(options.schema ?? DEFAULT_SCHEMA);
  const statementTimeoutMs = nonNegativeInt(
    "statementTimeoutMs",
    options.statementTimeoutMs,
    DEFAULT_STATEMENT_TIMEOUT_MS,
  );
  const queryTimeoutMs = nonNegativeInt(
    "queryTimeoutMs",
    options.queryTimeoutMs,
    statementTimeoutMs === 0 ? 0 : statementTimeoutMs + 5_000,
  );
  const connectionTimeoutMs = nonNegativeInt(
    "connectionTimeoutMs",
    options.connectionTimeoutMs,
    DEFAULT_CONNECTION_TIMEOUT_MS,
  );
  const prepareStatements = options.prepareStatements ?? true;
  if (typeof prepareStatements !== "boolean")
    throw new ValidationError("prepareStatements must be a boolean");
  if (options.pool !== undefined) {
    if (typeof options.pool.query !== "function" || typeof options.pool.connect !== "function") {
      throw new ValidationError("pool must be a pg.Pool");
    }
    return {
      schema,
      pool: { kind: "user", pool: options.pool },
      statementTimeoutMs,
      queryTimeoutMs,
      connectionTimeoutMs,
      prepareStatements,
      secrets: [],
      faults: options.faults,
    };
  }
  const base: pg.PoolConfig = options.poolConfig ?? { connectionString: options.connectionString };
  if (typeof base.connectionString !== "string" && options.connectionString !== undefined) {
    throw new ValidationError("connectionString must be a string");
  }
  const config: pg.PoolConfig = {
    max: DEFAULT_POOL_SIZE,
    keepAlive: true,
    ...base,
    connectionTimeoutMillis: base.connectionTimeoutMillis ?? connectionTimeoutMs,
  };
  if (statementTimeoutMs > 0 && config.statement_timeout === undefined)
    config.statement_timeout = statementTimeoutMs;
  const secrets = connectionSecrets(base.connectionString);
  if (typeof base.password === "string") secrets.push(base.password);
  return {
    schema,
    pool: { kind: "own", config },
    statementTimeoutMs,
    queryTimeoutMs,
    connectionTimeoutMs,
    prepareStatements,
    secrets,
    faults: options.faults,
  };
}
