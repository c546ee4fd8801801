// PostgreSQL: a storage is a schema (lower case), dropped with CASCADE.
import { CORRUPT_HEADER, type Driver } from "../driver.ts";
import { through } from "../urls.ts";

const quoteIdent = (name: string): string => `"${name.replaceAll('"', '""')}"`;

/** Runs one statement on a short-lived connection straight to the server. */
async function query(url: string, sql: string, values: unknown[] = []): Promise<void> {
  const pg = (await import("pg")).default;
  const client = new pg.Client({ connectionString: url });
  client.on("error", () => {});
  await client.connect();
  try {
    await client.query(sql, values);
  } finally {
    await client.end();
  }
}

export const postgres: Driver = {
  name: "postgres",
  server: "postgres",
  specifier: "@sayiir/persistence-postgres",
  className: "PostgresBackend",
  async place({ url, storage, fresh }) {
    return { backend: "postgres", url, storage: (storage ?? fresh).toLowerCase() };
  },
  options(config, client) {
    const { timeoutMs, poolSize } = client;
    return {
      poolConfig: {
        connectionString: through(config.url!, client.via),
        ...(poolSize === undefined ? {} : { max: poolSize }),
      },
      schema: config.storage,
      maxPayloadBytes: client.maxPayloadBytes,
      ...(timeoutMs
        ? { statementTimeoutMs: timeoutMs, queryTimeoutMs: timeoutMs, connectionTimeoutMs: timeoutMs }
        : {}),
    };
  },
  async corrupt(config, id) {
    const sql = `UPDATE ${quoteIdent(config.storage)}.snapshots SET header = $2 WHERE instance_id = $1`;
    await query(config.url!, sql, [id, Buffer.from(CORRUPT_HEADER)]);
  },
  async drop(config) {
    await query(config.url!, `DROP SCHEMA IF EXISTS ${quoteIdent(config.storage)} CASCADE`);
  },
};
