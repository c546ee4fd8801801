// The one place that knows how to build every backend for the reliability suite. Each entry maps
// a backend name to an async factory of an isolated instance (its own key prefix, schema, table
// prefix or file) with connect() for more clients over the same storage, an optional raw
// corruption hook, and cleanup(). Wiring a new adapter in is one entry below.
//
// Adapter packages are imported dynamically: one that does not build yet (no dist) is skipped
// with its reason, never silently (see describeSkips()). This module does not import vitest, so
// the soak's worker processes use it too.
import { randomBytes, randomUUID } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { PersistentBackend } from "@sayiir/persistence-core";

export type BackendName = "memory" | "sqlite" | "redis" | "postgres" | "mongo" | "dynamodb";
export type ServerKind = "redis" | "postgres" | "mongodb" | "dynamodb";

/** Where the servers are (from vitest's inject(), or from the environment in child processes). */
export interface ServerUrls {
  redis?: string | null;
  postgres?: string | null;
  mongodb?: string | null;
  /** DynamoDB endpoint (http://host:port). */
  dynamodb?: string | null;
}

export interface CreateOptions {
  maxPayloadBytes?: number;
  /** Connect through this address instead of the server's own (the fault proxy). */
  via?: { host: string; port: number };
  /** Short driver timeouts (ms) so that faults surface quickly; default: the adapter's own. */
  timeoutMs?: number;
  /** Ignore the subject's `via`: straight to the server (to check what a fault left behind). */
  direct?: boolean;
  /** Reuse an existing isolated storage (name returned in Subject.storage) instead of a fresh one. */
  storage?: string;
}

export interface Subject {
  name: BackendName;
  backend: PersistentBackend;
  /** Another client (another pool / connection) over the same isolated storage. */
  connect: (options?: Omit<CreateOptions, "storage">) => Promise<PersistentBackend>;
  /** Overwrites the stored header of a snapshot with bytes that do not decode. */
  corrupt?: (instanceId: string) => Promise<void>;
  /** Identifies the isolated storage (prefix, schema, file), to reopen it from another process. */
  storage: string;
  /** Closes helper clients and drops the isolated storage (after the caller closed its backends). */
  cleanup: () => Promise<void>;
}

export interface BackendEntry {
  name: BackendName;
  server: ServerKind | null;
  create: (urls: ServerUrls, options?: CreateOptions) => Promise<Subject>;
}

/** The address a client opened with `o` connects through (connect() options over create() options). */
function viaOf(o: CreateOptions, base: CreateOptions): CreateOptions["via"] {
  return o.direct ? undefined : (o.via ?? base.via);
}

function rewrite(url: string, via: CreateOptions["via"]): string {
  if (via === undefined) return url;
  const parsed = new URL(url);
  parsed.hostname = via.host;
  parsed.port = String(via.port);
  return parsed.toString();
}

function need(urls: ServerUrls, kind: ServerKind): string {
  const url = urls[kind];
  if (!url) throw new SkipError(`no ${kind} server`);
  return url;
}

/** Thrown by a factory when the backend cannot run here; the suite skips it with this reason. */
export class SkipError extends Error {}

async function importAdapter<T>(specifier: string): Promise<T> {
  try {
    return (await import(specifier)) as T;
  } catch (error) {
    throw new SkipError(
      `${specifier} does not load (not built yet?): ${(error as Error).message.split("\n")[0]}`,
    );
  }
}

const quoteIdent = (name: string): string => `"${name.replaceAll('"', '""')}"`;

export const BACKENDS: Record<BackendName, BackendEntry> = {
  memory: {
    name: "memory",
    server: null,
    create: async (_urls, options = {}) => {
      const { InMemoryBackend } = await import("@sayiir/persistence-memory");
      const backend = new InMemoryBackend({ maxPayloadBytes: options.maxPayloadBytes });
      return {
        name: "memory",
        backend,
        storage: "memory",
        connect: async (o = {}) => backend.connect({ maxPayloadBytes: o.maxPayloadBytes }),
        corrupt: async (id) => {
          const stored = backend.store.instances.get(id);
          if (stored) stored.header = new TextEncoder().encode("not a snapshot");
        },
        cleanup: async () => {},
      };
    },
  },

  sqlite: {
    name: "sqlite",
    server: null,
    create: async (_urls, options = {}) => {
      const { SqliteBackend } = await importAdapter<typeof import("@sayiir/persistence-sqlite")>(
        "@sayiir/persistence-sqlite",
      );
      const owned = options.storage === undefined;
      const dir = options.storage ?? (await mkdtemp(join(tmpdir(), "sayiir-rel-")));
      const path = join(dir, "store.db");
      const open = (o: CreateOptions = {}) =>
        new SqliteBackend({
          path,
          maxPayloadBytes: o.maxPayloadBytes ?? options.maxPayloadBytes,
          busyTimeoutMs: o.timeoutMs ?? options.timeoutMs ?? 10_000,
        });
      const backend = open();
      await backend.migrate();
      return {
        name: "sqlite",
        backend,
        storage: dir,
        connect: async (o) => open(o),
        corrupt: async (id) => {
          const { DatabaseSync } = await import("node:sqlite");
          const raw = new DatabaseSync(path);
          try {
            raw.exec("PRAGMA busy_timeout = 5000");
            raw
              .prepare(`UPDATE "sayiir_snapshots" SET header = ? WHERE instance_id = ?`)
              .run(new TextEncoder().encode("not a snapshot"), id);
          } finally {
            raw.close();
          }
        },
        cleanup: async () => {
          if (owned) await rm(dir, { recursive: true, force: true });
        },
      };
    },
  },

  redis: {
    name: "redis",
    server: "redis",
    create: async (urls, options = {}) => {
      const url = need(urls, "redis");
      const { RedisBackend } =
        await importAdapter<typeof import("@sayiir/persistence-redis")>("@sayiir/persistence-redis");
      const keyPrefix = options.storage ?? `rel-${randomUUID()}`;
      const open = (o: CreateOptions = {}) =>
        new RedisBackend({
          url: rewrite(url, viaOf(o, options)),
          keyPrefix,
          maxPayloadBytes: o.maxPayloadBytes ?? options.maxPayloadBytes,
          ...((o.timeoutMs ?? options.timeoutMs)
            ? { operationTimeoutMs: o.timeoutMs ?? options.timeoutMs }
            : {}),
        });
      const backend = open();
      const { Redis } = await import("ioredis");
      let admin: InstanceType<typeof Redis> | undefined;
      const adminClient = () => {
        if (admin === undefined) {
          admin = new Redis(url, { maxRetriesPerRequest: 1 });
          admin.on("error", () => {});
        }
        return admin;
      };
      return {
        name: "redis",
        backend,
        storage: keyPrefix,
        connect: async (o) => open(o),
        corrupt: async (id) => {
          await adminClient().hset(backend.layout.instance(id).meta, "h", "not a snapshot");
        },
        cleanup: async () => {
          if (options.storage === undefined) {
            const client = adminClient();
            let cursor = "0";
            do {
              const [next, keys] = await client.scan(cursor, "MATCH", `{${keyPrefix}:*`, "COUNT", 1000);
              cursor = next;
              if (keys.length > 0) await client.unlink(...keys);
            } while (cursor !== "0");
          }
          admin?.disconnect();
        },
      };
    },
  },

  postgres: {
    name: "postgres",
    server: "postgres",
    create: async (urls, options = {}) => {
      const url = need(urls, "postgres");
      const { PostgresBackend } = await importAdapter<typeof import("@sayiir/persistence-postgres")>(
        "@sayiir/persistence-postgres",
      );
      const schema = options.storage ?? `rel_${randomBytes(6).toString("hex")}`;
      const open = (o: CreateOptions = {}) => {
        const timeoutMs = o.timeoutMs ?? options.timeoutMs;
        return new PostgresBackend({
          poolConfig: { connectionString: rewrite(url, viaOf(o, options)), max: 4 },
          schema,
          maxPayloadBytes: o.maxPayloadBytes ?? options.maxPayloadBytes,
          ...(timeoutMs
            ? { statementTimeoutMs: timeoutMs, queryTimeoutMs: timeoutMs, connectionTimeoutMs: timeoutMs }
            : {}),
        });
      };
      const backend = open();
      // migrate() straight to the server, so a fault test can start with the proxy already cut.
      if (options.via === undefined) await backend.migrate();
      else {
        const direct = new PostgresBackend({ connectionString: url, schema });
        await direct.migrate();
        await direct.close();
      }
      const pg = (await import("pg")).default;
      let admin: InstanceType<typeof pg.Pool> | undefined;
      const adminPool = () => {
        if (admin === undefined) {
          admin = new pg.Pool({ connectionString: url, max: 2 });
          admin.on("error", () => {});
        }
        return admin;
      };
      return {
        name: "postgres",
        backend,
        storage: schema,
        connect: async (o) => open(o),
        corrupt: async (id) => {
          await adminPool().query(
            `UPDATE ${quoteIdent(schema)}.snapshots SET header = $2 WHERE instance_id = $1`,
            [id, Buffer.from("not a snapshot")],
          );
        },
        cleanup: async () => {
          if (options.storage === undefined) {
            await adminPool().query(`DROP SCHEMA IF EXISTS ${quoteIdent(schema)} CASCADE`);
          }
          await admin?.end();
        },
      };
    },
  },

  mongo: {
    name: "mongo",
    server: "mongodb",
    create: async (urls, options = {}) => {
      const url = need(urls, "mongodb");
      const mod = await importAdapter<Record<string, unknown>>("@sayiir/persistence-mongo");
      const MongoBackend = mod.MongoBackend as new (
        o: Record<string, unknown>,
      ) => PersistentBackend & {
        migrate: () => Promise<void>;
      };
      if (typeof MongoBackend !== "function")
        throw new SkipError("@sayiir/persistence-mongo has no MongoBackend");
      const prefix = options.storage ?? `r${randomBytes(8).toString("hex")}_`;
      const open = (o: CreateOptions = {}) => {
        const timeoutMs = o.timeoutMs ?? options.timeoutMs;
        return new MongoBackend({
          url: rewrite(url, viaOf(o, options)),
          database: MONGO_DATABASE,
          collectionPrefix: prefix,
          maxPayloadBytes: o.maxPayloadBytes ?? options.maxPayloadBytes,
          ...(timeoutMs
            ? {
                clientOptions: {
                  serverSelectionTimeoutMS: timeoutMs,
                  connectTimeoutMS: timeoutMs,
                  socketTimeoutMS: timeoutMs,
                },
              }
            : {}),
        });
      };
      if (options.via === undefined) {
        const migrator = open();
        await migrator.migrate().finally(() => migrator.close());
      } else {
        const migrator = open({ direct: true });
        await migrator.migrate().finally(() => migrator.close());
      }
      const backend = open();
      const { MongoClient } = await import("mongodb");
      const admin = new MongoClient(url, { serverSelectionTimeoutMS: 5000 });
      return {
        name: "mongo",
        backend,
        storage: prefix,
        connect: async (o) => open(o),
        corrupt: async (id) => {
          await admin
            .db(MONGO_DATABASE)
            .collection<{ _id: string }>(`${prefix}snapshots`)
            .updateOne({ _id: id }, { $set: { h: Buffer.from("not a snapshot") }, $unset: { hg: "" } });
        },
        cleanup: async () => {
          try {
            if (options.storage === undefined) {
              const db = admin.db(MONGO_DATABASE);
              const collections = await db.listCollections({}, { nameOnly: true }).toArray();
              await Promise.all(
                collections
                  .filter((c) => c.name.startsWith(prefix))
                  .map((c) =>
                    db
                      .collection(c.name)
                      .drop()
                      .catch(() => undefined),
                  ),
              );
            }
          } finally {
            await admin.close();
          }
        },
      };
    },
  },

  dynamodb: {
    name: "dynamodb",
    server: "dynamodb",
    create: async (urls, options = {}) => {
      const endpoint = need(urls, "dynamodb").replace(/\/$/, "");
      const mod = await importAdapter<Record<string, unknown>>("@sayiir/persistence-dynamodb");
      type Dynamo = PersistentBackend & {
        migrate: () => Promise<void>;
        layout: { instancePk: (id: string) => string };
      };
      const DynamoDBBackend = mod.DynamoDBBackend as new (o: Record<string, unknown>) => Dynamo;
      if (typeof DynamoDBBackend !== "function") {
        throw new SkipError("@sayiir/persistence-dynamodb has no DynamoDBBackend");
      }
      // One shared table (creating a table per subject is slow); each subject has its own key prefix.
      const keyPrefix = options.storage ?? `rel-${randomUUID()}`;
      const config = (via?: CreateOptions["via"]) => ({
        endpoint: rewrite(endpoint, via).replace(/\/$/, ""),
        region: "us-east-1",
        credentials: { accessKeyId: "sayiirtest", secretAccessKey: "sayiir-test-secret" },
      });
      const open = (o: CreateOptions = {}) => {
        const timeoutMs = o.timeoutMs ?? options.timeoutMs;
        return new DynamoDBBackend({
          tableName: DYNAMO_TABLE,
          keyPrefix,
          clientConfig: config(viaOf(o, options)),
          maxPayloadBytes: o.maxPayloadBytes ?? options.maxPayloadBytes,
          ...(timeoutMs ? { requestTimeoutMs: timeoutMs, maxAttempts: 2 } : {}),
        });
      };
      let migrated = dynamoMigrations.get(endpoint);
      if (migrated === undefined) {
        const migrator = new DynamoDBBackend({ tableName: DYNAMO_TABLE, clientConfig: config() });
        migrated = migrator.migrate().finally(() => migrator.close());
        dynamoMigrations.set(endpoint, migrated);
      }
      await migrated;
      const backend = open();
      const { DynamoDBClient, UpdateItemCommand } = await import("@aws-sdk/client-dynamodb");
      return {
        name: "dynamodb",
        backend,
        storage: keyPrefix,
        connect: async (o) => open(o),
        corrupt: async (id) => {
          const client = new DynamoDBClient(config());
          try {
            await client.send(
              new UpdateItemCommand({
                TableName: DYNAMO_TABLE,
                Key: { PK: { S: backend.layout.instancePk(id) }, SK: { S: "H" } },
                UpdateExpression: "SET hd = :bad REMOVE hc, hn, hl",
                ExpressionAttributeValues: { ":bad": { B: new TextEncoder().encode("not a snapshot") } },
              }),
            );
          } finally {
            client.destroy();
          }
        },
        cleanup: async () => {
          if (options.storage !== undefined) return;
          const sweeper = open({ direct: true });
          try {
            for (const id of await sweeper.listSnapshots()) await sweeper.deleteSnapshot(id).catch(() => {});
          } finally {
            await sweeper.close();
          }
        },
      };
    },
  },
};

const DYNAMO_TABLE = "sayiir_reliability";
const MONGO_DATABASE = "sayiir_reliability";
const dynamoMigrations = new Map<string, Promise<void>>();

export const BACKEND_NAMES = Object.keys(BACKENDS) as BackendName[];

/** Server URLs from the environment (used by child processes of the soak). */
export function urlsFromEnv(env: NodeJS.ProcessEnv = process.env): ServerUrls {
  return {
    redis: env.SAYIIR_TEST_REDIS_URL ?? null,
    postgres: env.SAYIIR_TEST_POSTGRES_URL ?? null,
    mongodb: env.SAYIIR_TEST_MONGODB_URL ?? null,
    dynamodb: env.SAYIIR_TEST_DYNAMODB_ENDPOINT ?? null,
  };
}

const DEFAULT_PORTS: Record<ServerKind, number> = {
  redis: 6379,
  postgres: 5432,
  mongodb: 27017,
  dynamodb: 8000,
};

/** Host and port of a server backend's server (where a fault proxy forwards to), or null. */
export function serverAddress(name: BackendName, urls: ServerUrls): { host: string; port: number } | null {
  const kind = BACKENDS[name].server;
  if (kind === null) return null;
  const url = urls[kind];
  if (!url) return null;
  const parsed = new URL(url);
  return {
    host: parsed.hostname || "127.0.0.1",
    port: parsed.port ? Number(parsed.port) : DEFAULT_PORTS[kind],
  };
}
