/**
 * Opens the demo's store. One small function per backend: adapt the constructor options here
 * when an adapter's options change. Server adapters are imported lazily, so the default
 * SQLite demo never loads a database driver it does not use.
 */
import type { PersistentBackend } from "@sayiir/persistence-core";

export const BACKEND_KINDS = ["sqlite", "memory", "redis", "postgres", "mongo", "dynamodb"] as const;
export type BackendKind = (typeof BACKEND_KINDS)[number];

export interface BackendConfig {
  kind: BackendKind;
  /** sqlite: file path; redis/postgres/mongo: connection URL; dynamodb: endpoint URL. */
  url: string;
  /** Isolates this run on shared servers: key prefix / schema / collection prefix / table name. */
  namespace: string;
}

/** Backends whose state lives outside the process: workers can be separate processes. */
export const isMultiProcess = (kind: BackendKind): boolean => kind !== "memory";

/** Without --url: the variables the test tooling honours, else the usual local ports. */
export const DEFAULT_URLS: Record<BackendKind, string | undefined> = {
  sqlite: undefined, // a fresh file in the run directory
  memory: undefined,
  redis: process.env.SAYIIR_TEST_REDIS_URL ?? "redis://127.0.0.1:6379",
  postgres: process.env.SAYIIR_TEST_POSTGRES_URL ?? "postgres://postgres@127.0.0.1:5432/postgres",
  mongo: process.env.SAYIIR_TEST_MONGODB_URL ?? "mongodb://127.0.0.1:27017",
  dynamodb: process.env.SAYIIR_TEST_DYNAMODB_ENDPOINT ?? "http://127.0.0.1:8000",
};

type Migratable = PersistentBackend & { migrate?: () => Promise<unknown> };

/** A new client of the store (each worker process opens its own). */
export async function openBackend(config: BackendConfig): Promise<PersistentBackend> {
  const backend = await construct(config);
  return backend;
}

/** Creates the schema (tables, indexes) where the backend has one; idempotent. */
export async function migrate(backend: PersistentBackend): Promise<void> {
  const migratable = backend as Migratable;
  if (typeof migratable.migrate === "function") await migratable.migrate();
}

async function construct(config: BackendConfig): Promise<Migratable> {
  const { kind, url, namespace } = config;
  // Identifiers that every backend accepts as prefix/schema/table name.
  const safe = namespace.replace(/[^A-Za-z0-9_]/g, "_");
  switch (kind) {
    case "sqlite": {
      const { SqliteBackend } = await import("@sayiir/persistence-sqlite");
      // NORMAL: a commit survives the crash of a process (what the demo shows); FULL adds power-loss safety.
      return new SqliteBackend({ path: url, synchronous: "NORMAL" });
    }
    case "memory": {
      throw new Error(
        "the memory backend lives in one process: the demo runs its workers in-process (see main.ts)",
      );
    }
    case "redis": {
      const { RedisBackend } = await adapter("@sayiir/persistence-redis", "RedisBackend");
      return new RedisBackend({ url, keyPrefix: `${safe}:` });
    }
    case "postgres": {
      const { PostgresBackend } = await adapter("@sayiir/persistence-postgres", "PostgresBackend");
      return new PostgresBackend({ connectionString: url, schema: safe.toLowerCase() });
    }
    case "mongo": {
      const { MongoBackend } = await adapter("@sayiir/persistence-mongo", "MongoBackend");
      return new MongoBackend({ url, database: "sayiir_demo", collectionPrefix: `${safe}_` });
    }
    case "dynamodb": {
      const { DynamoDBBackend } = await adapter("@sayiir/persistence-dynamodb", "DynamoDBBackend");
      return new DynamoDBBackend({
        tableName: safe,
        clientConfig: {
          endpoint: url,
          region: process.env.AWS_REGION ?? "us-east-1",
          credentials: {
            accessKeyId: process.env.AWS_ACCESS_KEY_ID ?? "local",
            secretAccessKey: process.env.AWS_SECRET_ACCESS_KEY ?? "local",
          },
        },
      });
    }
  }
}

type BackendClass = new (options: object) => Migratable;

/**
 * Imports a server adapter by name. The specifier is a variable on purpose: the demo type-checks
 * and runs on SQLite even while an adapter is not built, and loads a driver only when asked to.
 */
async function adapter<Name extends string>(
  specifier: string,
  name: Name,
): Promise<Record<Name, BackendClass>> {
  let module: Record<string, unknown>;
  try {
    module = (await import(specifier)) as Record<string, unknown>;
  } catch (error) {
    throw new Error(
      `cannot load ${specifier} (run \`pnpm turbo run build\` first?): ${(error as Error).message}`,
    );
  }
  if (typeof module[name] !== "function") throw new Error(`${specifier} exports no ${name}`);
  return module as Record<Name, BackendClass>;
}
