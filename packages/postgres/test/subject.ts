import { randomBytes } from "node:crypto";
import type { ConformanceSubject, SubjectOptions } from "@sayiir/persistence-core/conformance";
import pg from "pg";
import { PostgresBackend, type PostgresBackendOptions } from "../src/index.js";
import { quoteIdentifier } from "../src/layout.js";

const adminPools = new Map<string, pg.Pool>();

/** One small pool per server for schema setup and teardown (and raw SQL in tests). */
export function adminPool(url: string): pg.Pool {
  let pool = adminPools.get(url);
  if (pool === undefined) {
    pool = new pg.Pool({ connectionString: url, max: 3, idleTimeoutMillis: 5_000 });
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

/** A fresh schema, migrated, and a backend over it; every connect() is another backend (another pool) on it. */
export async function postgresSubject(
  url: string,
  { maxPayloadBytes }: SubjectOptions = {},
  extra: Partial<PostgresBackendOptions> = {},
): Promise<ConformanceSubject & { schema: string }> {
  const schema = testSchema();
  const open = () =>
    new PostgresBackend({ poolConfig: { connectionString: url, max: 6 }, schema, maxPayloadBytes, ...extra });
  const backend = open();
  await backend.migrate();
  return {
    schema,
    backend,
    connect: async () => open(),
    corruptSnapshot: async (instanceId) => {
      await adminPool(url).query(
        `UPDATE ${quoteIdentifier(schema)}.snapshots SET header = $2 WHERE instance_id = $1`,
        [instanceId, Buffer.from("not a snapshot")],
      );
    },
    cleanup: async () => dropSchema(url, schema),
  };
}

/** Servers from the test tooling (one per PostgreSQL version). */
export function serverName(info: { version: string; source: string }): string {
  return `postgres ${info.version} (${info.source})`;
}
