import { randomBytes } from "node:crypto";
import type {
  ConformanceOptions,
  ConformanceSubject,
  SubjectOptions,
} from "@sayiir/persistence-core/conformance";
import type {} from "@sayiir/test-servers";
import pg from "pg";
import { inject } from "vitest";
import { PostgresBackend, type PostgresBackendOptions } from "../src/index.js";
import { quoteIdentifier, quoteLiteral } from "../src/layout.js";
import type { FaultHooks } from "../src/options.js";

/** Servers from the test tooling, one per PostgreSQL version (empty when none). */
export const servers = inject("postgres");
export type PostgresServer = (typeof servers)[number];

export const NO_SERVER =
  "no PostgreSQL server: set SAYIIR_TEST_POSTGRES_URL or run `node tooling/test-servers/src/install.ts postgres`";

const adminPools = new Map<string, pg.Pool>();

/**
 * One small pool per server for schema setup and teardown (and raw SQL in tests). Its idle
 * connections never keep the process alive, so a file that does not call closeAdminPools()
 * (the one-line conformance file) still ends.
 */
export function adminPool(url: string): pg.Pool {
  let pool = adminPools.get(url);
  if (pool === undefined) {
    pool = new pg.Pool({ connectionString: url, max: 3, idleTimeoutMillis: 5_000, allowExitOnIdle: true });
    pool.on("error", () => {});
    adminPools.set(url, pool);
  }
  return pool;
}

export async function closeAdminPools(): Promise<void> {
  const pools = [...adminPools.values()];
  adminPools.clear();
  await Promise.allSettled(pools.map((p) => p.end()));
}

/** A schema name no other test uses; it holds quotes and a space, so identifier quoting is exercised. */
export function testSchema(): string {
  return `sayiir test "${randomBytes(6).toString("hex")}"`;
}

export async function dropSchema(url: string, schema: string): Promise<void> {
  await adminPool(url).query(`DROP SCHEMA IF EXISTS ${quoteIdentifier(schema)} CASCADE`);
}

/** Servers from the test tooling (one per PostgreSQL version). */
export function serverName(info: { version: string; source: string }): string {
  return `postgres ${info.version} (${info.source})`;
}

export interface PostgresSubject extends ConformanceSubject {
  backend: PostgresBackend;
  schema: string;
  server: PostgresServer;
  /** Drops the schema (close the backends first). */
  cleanup: () => Promise<void>;
}

function firstServer(): PostgresServer {
  const server = servers[0];
  if (server === undefined) throw new Error(NO_SERVER);
  return server;
}

/**
 * A fresh schema on `server` (default: the first one), migrated, and a backend over it; every
 * connect() is another backend (another pool) on it. `extra` adds or overrides backend options,
 * `faults` among them (see {@link statementCounter} and FaultHooks).
 */
export async function createSubject(
  { maxPayloadBytes, agingMs }: SubjectOptions = {},
  extra: Partial<PostgresBackendOptions> = {},
  server: PostgresServer = firstServer(),
): Promise<PostgresSubject> {
  const { url } = server;
  const schema = testSchema();
  const open = (own: Partial<PostgresBackendOptions> = {}) =>
    new PostgresBackend({
      poolConfig: { connectionString: url, max: 6 },
      schema,
      maxPayloadBytes,
      agingMs,
      ...own,
      ...extra,
    });
  // The first backend's statements go through a hook (unless `extra` brings its own `faults`):
  // the kit's beforeNextWrite holds its next write (a transaction, or a statement that writes).
  const held = { hook: null as null | (() => Promise<void>), fired: false };
  const seam: FaultHooks = {
    beforeQuery: async (statement) => {
      const hook = held.hook;
      if (hook === null || !HELD.has(statement)) return;
      held.hook = null;
      await hook();
      held.fired = true;
    },
  };
  const backend = open({ faults: seam });
  await backend.migrate();
  return {
    schema,
    server,
    backend,
    connect: async () => open(),
    beforeNextWrite: (hook) => {
      held.hook = hook;
      held.fired = false;
      return { fired: () => held.fired };
    },
    corruptSnapshot: async (instanceId) => {
      await adminPool(url).query(
        `UPDATE ${quoteIdentifier(schema)}.snapshots SET header = $2 WHERE instance_id = $1`,
        [instanceId, Buffer.from("not a snapshot")],
      );
    },
    cleanup: async () => dropSchema(url, schema),
  };
}

/** The statements beforeNextWrite holds: those a renewal or a fenced write starts with. */
const HELD = new Set(["BEGIN", "extendClaim", "completeTasks", "recordResult", "upsertResult", "checkFence"]);

export function conformanceTargets(): ConformanceOptions[] {
  return servers.map((server) => ({
    name: serverName(server),
    setup: (options) => createSubject(options, {}, server),
  }));
}

/**
 * Fault injection, one documented path per side:
 *
 * - client side (a statement that fails before it reaches the server, or whose reply is lost on
 *   the way back, as on a dropped connection): the backend's testing-only `faults` option
 *   (FaultHooks), for example `createSubject({}, { faults: failStatements("claimNext", () => true) }, server)`
 *   or `loseReplies("sendEvent", ...)`;
 * - server side (an error or a silently skipped row inside one statement): a row trigger on one
 *   of the schema's tables, {@link addTrigger}.
 *
 * No test patches `pg` or the pool.
 */
export function failStatements(statement: string, failing: () => boolean): FaultHooks {
  return {
    beforeQuery: (name) => {
      if (name === statement && failing()) throw new Error("connection reset (injected)");
    },
  };
}

/**
 * Loses the reply of `statement` (through FaultHooks.afterQuery) while `losing()` holds: the
 * statement ran (and committed, outside a transaction), but the call fails as on a connection
 * dropped before the reply arrived.
 */
export function loseReplies(statement: string, losing: () => boolean): FaultHooks {
  return {
    afterQuery: (name) => {
      if (name === statement && losing())
        throw new Error("connection reset after the statement ran (injected)");
    },
  };
}

/** Counts the statements a backend sends while counting is on (through FaultHooks). */
export function statementCounter(): {
  faults: FaultHooks;
  count: (body: () => Promise<unknown>) => Promise<number>;
} {
  let counting = false;
  let n = 0;
  return {
    faults: {
      beforeQuery: () => {
        if (counting) n++;
      },
    },
    async count(body) {
      n = 0;
      counting = true;
      try {
        await body();
      } finally {
        counting = false;
      }
      return n;
    },
  };
}

/**
 * Adds a BEFORE INSERT row trigger named `name` on `<schema>.<table>` that, for rows where
 * `instance_id = instanceId`, raises `injected` (action "raise": the statement fails on the
 * server and rolls back whole) or skips the row (action "skip": as if a concurrent claim had
 * won the race). Returns how to drop it.
 */
export async function addTrigger(
  url: string,
  schema: string,
  table: string,
  instanceId: string,
  action: "raise" | "skip",
  name = action === "raise" ? "boom" : "skip",
  event: "INSERT" | "UPDATE" = "INSERT",
): Promise<() => Promise<void>> {
  const s = quoteIdentifier(schema);
  const body = action === "raise" ? "RAISE EXCEPTION 'injected';" : "RETURN NULL;";
  await adminPool(url).query(`
    CREATE FUNCTION ${s}.${name}() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN ${body} END $$;
    CREATE TRIGGER ${name} BEFORE ${event} ON ${s}.${quoteIdentifier(table)} FOR EACH ROW
      WHEN (NEW.instance_id = ${quoteLiteral(instanceId)}) EXECUTE FUNCTION ${s}.${name}()`);
  return async () => {
    await adminPool(url).query(`DROP TRIGGER ${name} ON ${s}.${quoteIdentifier(table)}`);
  };
}
