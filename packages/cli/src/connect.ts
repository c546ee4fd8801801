import type { PersistentBackend } from "@sayiir/persistence-core";
import { isMigratable, type MigrationReport } from "@sayiir/persistence-core/adapter";
import { CliError } from "./errors.js";
import { rememberSecret, rememberSecrets } from "./secrets.js";
import { parseStoreUrl, type StoreTarget } from "./url.js";

/** An open store: its backend, what it is, and how to show its URL without a password. */
export interface Store {
  backend: PersistentBackend;
  target: StoreTarget;
  display: string;
  /** The adapter's migrate(), or undefined where the database keeps no schema (Redis). */
  migrate: (() => Promise<MigrationReport>) | undefined;
  close(): Promise<void>;
}

const PACKAGES: Record<StoreTarget["kind"], string> = {
  sqlite: "@sayiir/persistence-sqlite",
  postgres: "@sayiir/persistence-postgres",
  redis: "@sayiir/persistence-redis",
  "redis-cluster": "@sayiir/persistence-redis",
  mongodb: "@sayiir/persistence-mongo",
  dynamodb: "@sayiir/persistence-dynamodb",
};

function isMissingModule(error: unknown, name: string): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return (
    (code === "ERR_MODULE_NOT_FOUND" || code === "MODULE_NOT_FOUND") &&
    error instanceof Error &&
    error.message.includes(name)
  );
}

/**
 * Imports an adapter only when its URL is used: each is an optional peer, so a user who moves
 * SQLite to Postgres installs those two and never the MongoDB or AWS drivers.
 */
async function load<T>(kind: StoreTarget["kind"], importer: () => Promise<T>): Promise<T> {
  const name = PACKAGES[kind];
  try {
    return await importer();
  } catch (error) {
    if (isMissingModule(error, name)) {
      throw new CliError(
        `this URL needs the adapter ${name}: install it beside the CLI (npm install ${name})`,
      );
    }
    throw error;
  }
}

async function open(target: StoreTarget): Promise<PersistentBackend> {
  switch (target.kind) {
    case "sqlite": {
      const { SqliteBackend } = await load(target.kind, () => import("@sayiir/persistence-sqlite"));
      const prefix = target.tablePrefix === undefined ? {} : { tablePrefix: target.tablePrefix };
      return new SqliteBackend({ path: target.path, ...prefix });
    }
    case "postgres": {
      const { PostgresBackend } = await load(target.kind, () => import("@sayiir/persistence-postgres"));
      const schema = target.schema === undefined ? {} : { schema: target.schema };
      return new PostgresBackend({ connectionString: target.connectionString, ...schema });
    }
    case "redis":
    case "redis-cluster": {
      const { RedisBackend } = await load(target.kind, () => import("@sayiir/persistence-redis"));
      const prefix = target.keyPrefix === undefined ? {} : { keyPrefix: target.keyPrefix };
      if (target.kind === "redis") return new RedisBackend({ url: target.url, ...prefix });
      const redisOptions = {
        ...(target.username === undefined ? {} : { username: target.username }),
        ...(target.password === undefined ? {} : { password: target.password }),
        ...(target.tls ? { tls: {} } : {}),
      };
      return new RedisBackend({ cluster: { nodes: target.nodes, options: { redisOptions } }, ...prefix });
    }
    case "mongodb": {
      const { MongoBackend } = await load(target.kind, () => import("@sayiir/persistence-mongo"));
      const prefix =
        target.collectionPrefix === undefined ? {} : { collectionPrefix: target.collectionPrefix };
      return new MongoBackend({ url: target.url, ...prefix });
    }
    case "dynamodb": {
      const { DynamoDBBackend } = await load(target.kind, () => import("@sayiir/persistence-dynamodb"));
      // Credentials come from the AWS default chain (environment, profile, instance role).
      const region =
        target.region ??
        process.env.AWS_REGION ??
        process.env.AWS_DEFAULT_REGION ??
        (target.endpoint === undefined ? undefined : "us-east-1");
      const clientConfig = {
        ...(region === undefined ? {} : { region }),
        ...(target.endpoint === undefined ? {} : { endpoint: target.endpoint }),
      };
      const prefix = target.keyPrefix === undefined ? {} : { keyPrefix: target.keyPrefix };
      return new DynamoDBBackend({ tableName: target.tableName, clientConfig, ...prefix });
    }
  }
}

/** Parses the URL, loads its adapter and opens the backend (migrate() is never run implicitly). */
export async function openStore(url: string): Promise<Store> {
  rememberSecrets(url);
  const target = parseStoreUrl(url);
  if (target.kind === "redis-cluster" && target.password !== undefined) rememberSecret(target.password);
  const backend = await open(target);
  return {
    backend,
    target,
    display: target.display,
    migrate: isMigratable(backend) ? () => backend.migrate() : undefined,
    close: () => backend.close(),
  };
}
