// Every backend of the benchmark in one place: how to construct it, migrate it, give each scenario a
// fresh isolated store, and drop that store afterwards. Adapting to an adapter's constructor options
// happens here and nowhere else.
//
// A store is described by a plain, serialisable `StoreConfig`, so worker processes (child_process.fork)
// open their own backend on the same store with `openStore(config)`. The in-memory backend lives in one
// process, so its store cannot be shared with workers in other processes (`multiProcess: false`).
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { PersistentBackend, WorkflowSnapshot } from "@sayiir/persistence-core";
import type { CompleteMode } from "./sayiir-workers.ts";
import type { DynamoDbInfo, MongoDbInfo, ServerInfo, Servers } from "./servers.ts";
import { errorMessage, runId } from "./util.ts";

export const BACKEND_NAMES = ["memory", "sqlite", "redis", "postgres", "mongodb", "dynamodb"] as const;
export type BackendName = (typeof BACKEND_NAMES)[number];

/** Serialisable description of one isolated store, enough for another process to open it. */
export type StoreConfig =
  | { backend: "memory" }
  | { backend: "sqlite"; path: string }
  | { backend: "redis"; url: string; keyPrefix: string; shards?: number }
  | { backend: "postgres"; url: string; schema: string }
  | { backend: "mongodb"; url: string; database: string; collectionPrefix: string }
  | {
      backend: "dynamodb";
      tableName: string;
      endpoint: string;
      region: string;
      credentials: { accessKeyId: string; secretAccessKey: string };
    };

export interface Store {
  config: StoreConfig;
  /** Opens a backend on the store (in this process). `poolSize` sizes connection pools where there are any. */
  open(poolSize?: number): Promise<PersistentBackend>;
  /** Removes every record of the store (and closes what the store holds). */
  drop(): Promise<void>;
}

export interface BackendTarget {
  name: BackendName;
  /** Row label: the name, plus non-default options of a variant. */
  label: string;
  /** A shorter label for the chart. */
  chartLabel?: string;
  /** The same backend with other options or bench-side experiments, run as extra rows of scenario 1. */
  variants?: BackendTarget[];
  /** How scenario 1 finishes a claimed batch (default "batch": one completeTasks call). */
  completeMode?: CompleteMode;
  /** What it runs on, e.g. "Redis 7.0.15 (local /usr/bin/redis-server)". */
  server: string;
  serverInfo?: ServerInfo;
  /** Workers of scenario 1 may run in several processes. */
  multiProcess: boolean;
  /** A fresh, empty, migrated store. */
  createStore(tag: string): Promise<Store>;
  /**
   * A fast path for pre-loading millions of snapshots that hold no task results, straight into the
   * adapter's documented layout (only where the adapter's README documents it and the per-call path
   * is too slow for millions). Returns how it loaded, for the report.
   */
  bulkLoad?: (config: StoreConfig, snapshots: WorkflowSnapshot[]) => Promise<void>;
  bulkLoadHow?: string;
}

export type Availability = { ok: true; target: BackendTarget } | { ok: false; reason: string };

const MONGO_DATABASE = "sayiir_bench";

/** Loads the adapter package; a package that is not built gives the reason to skip it. */
async function load<T>(pkg: string, loader: () => Promise<T>): Promise<T> {
  try {
    return await loader();
  } catch (error) {
    throw new Error(
      `${pkg} cannot be loaded (is it built? \`pnpm turbo run build\`): ${errorMessage(error)}`,
    );
  }
}

/** Opens a backend on a store described by `config` (also used by worker processes). */
export async function openStore(config: StoreConfig, poolSize = 10): Promise<PersistentBackend> {
  switch (config.backend) {
    case "memory":
      throw new Error("the in-memory store cannot be opened from another process");
    case "sqlite": {
      const { SqliteBackend } = await load(
        "@sayiir/persistence-sqlite",
        () => import("@sayiir/persistence-sqlite"),
      );
      // NORMAL: commits survive a process crash, not a power loss; the servers of the run are
      // throw-away too (Postgres with fsync=off, Redis without persistence), so this is the fair setting.
      return new SqliteBackend({ path: config.path, synchronous: "NORMAL", busyTimeoutMs: 30_000 });
    }
    case "redis": {
      const { RedisBackend } = await load(
        "@sayiir/persistence-redis",
        () => import("@sayiir/persistence-redis"),
      );
      return new RedisBackend({
        url: config.url,
        keyPrefix: config.keyPrefix,
        operationTimeoutMs: 60_000,
        ...(config.shards === undefined ? {} : { shards: config.shards }),
      });
    }
    case "postgres": {
      const { PostgresBackend } = await load(
        "@sayiir/persistence-postgres",
        () => import("@sayiir/persistence-postgres"),
      );
      return new PostgresBackend({
        poolConfig: { connectionString: config.url, max: poolSize },
        schema: config.schema,
        statementTimeoutMs: 120_000,
      });
    }
    case "mongodb": {
      const { MongoBackend } = await load(
        "@sayiir/persistence-mongo",
        () => import("@sayiir/persistence-mongo"),
      );
      return new MongoBackend({
        url: config.url,
        database: config.database,
        collectionPrefix: config.collectionPrefix,
        clientOptions: { maxPoolSize: Math.max(poolSize, 20), socketTimeoutMS: 300_000 },
      });
    }
    case "dynamodb": {
      const { DynamoDBBackend } = await load(
        "@sayiir/persistence-dynamodb",
        () => import("@sayiir/persistence-dynamodb"),
      );
      return new DynamoDBBackend({
        tableName: config.tableName,
        clientConfig: {
          endpoint: config.endpoint,
          region: config.region,
          credentials: { ...config.credentials },
        },
        requestTimeoutMs: 60_000,
      });
    }
  }
}

/** Runs migrate() where the adapter has one. */
async function migrate(backend: PersistentBackend): Promise<void> {
  const m = (backend as { migrate?: () => Promise<unknown> }).migrate;
  if (typeof m === "function") await m.call(backend);
}

/** A store over a config: open() opens backends, drop() removes its data. */
function storeOf(config: StoreConfig, drop: () => Promise<void>): Store {
  return { config, open: (poolSize) => openStore(config, poolSize), drop };
}

async function memoryTarget(): Promise<BackendTarget> {
  const { InMemoryBackend } = await load(
    "@sayiir/persistence-memory",
    () => import("@sayiir/persistence-memory"),
  );
  return {
    name: "memory",
    label: "memory",
    server: "in-process (InMemoryBackend)",
    multiProcess: false,
    async createStore() {
      const backend = new InMemoryBackend();
      // The backend is shared by every caller in this process; closing it is drop()'s job.
      const shared = new Proxy(backend, {
        get(target, prop, receiver) {
          if (prop === "close") return async () => {};
          const value = Reflect.get(target, prop, receiver);
          return typeof value === "function" ? value.bind(target) : value;
        },
      });
      return {
        config: { backend: "memory" },
        open: async () => shared,
        drop: () => backend.close(),
      };
    },
  };
}

async function sqliteTarget(): Promise<BackendTarget> {
  await load("@sayiir/persistence-sqlite", () => import("@sayiir/persistence-sqlite"));
  return {
    name: "sqlite",
    label: "sqlite",
    server: `node:sqlite (SQLite ${await sqliteVersion()}), file in ${tmpdir()}, WAL, synchronous=NORMAL`,
    multiProcess: true,
    async createStore(tag) {
      const dir = mkdtempSync(join(tmpdir(), `sayiir-bench-${tag}-`));
      const config: StoreConfig = { backend: "sqlite", path: join(dir, "bench.db") };
      const backend = await openStore(config);
      await migrate(backend);
      await backend.close();
      return storeOf(config, async () => rmSync(dir, { recursive: true, force: true }));
    },
  };
}

async function sqliteVersion(): Promise<string> {
  const { DatabaseSync } = await import("node:sqlite");
  const db = new DatabaseSync(":memory:");
  try {
    return String((db.prepare("select sqlite_version() as v").get() as { v: string }).v);
  } finally {
    db.close();
  }
}

/** The extra row of Redis and Postgres: the same cycle with one call per task and per step. */
const PER_TASK_LABEL = "per-task calls (saveTaskResult + releaseTaskClaim)";

async function redisTarget(info: ServerInfo, completeMode?: CompleteMode): Promise<BackendTarget> {
  await load("@sayiir/persistence-redis", () => import("@sayiir/persistence-redis"));
  const { Redis } = await import("ioredis");
  return {
    name: "redis",
    label: completeMode === "per-task" ? `redis, ${PER_TASK_LABEL}` : "redis",
    chartLabel: completeMode === "per-task" ? "redis (per-task calls)" : "redis",
    ...(completeMode === undefined ? { variants: [await redisTarget(info, "per-task")] } : { completeMode }),
    server: `${info.server} ${info.version}`,
    serverInfo: info,
    multiProcess: true,
    async createStore(tag) {
      const config: StoreConfig = {
        backend: "redis",
        url: info.url,
        keyPrefix: `bench-${tag}-${runId()}`,
      };
      return storeOf(config, async () => {
        const admin = new Redis(info.url, { maxRetriesPerRequest: 3 });
        try {
          if (info.source === "local") {
            // Our own throw-away server: dropping everything is instant even with millions of keys.
            await admin.flushall();
            return;
          }
          let cursor = "0";
          do {
            const [next, keys] = await admin.scan(cursor, "MATCH", `{${config.keyPrefix}:*`, "COUNT", 5000);
            cursor = next;
            if (keys.length > 0) await admin.unlink(...keys);
          } while (cursor !== "0");
        } finally {
          admin.disconnect();
        }
      });
    },
  };
}

async function postgresTarget(info: ServerInfo, completeMode?: CompleteMode): Promise<BackendTarget> {
  await load("@sayiir/persistence-postgres", () => import("@sayiir/persistence-postgres"));
  const pg = (await import("pg")).default;
  const { encodeSnapshotHeader } = await import("@sayiir/persistence-core");
  return {
    name: "postgres",
    label: completeMode === "per-task" ? `postgres, ${PER_TASK_LABEL}` : "postgres",
    chartLabel: completeMode === "per-task" ? "postgres (per-task calls)" : "postgres",
    ...(completeMode === undefined
      ? { variants: [await postgresTarget(info, "per-task")] }
      : { completeMode }),
    server: `${info.server} ${info.version}`,
    serverInfo: info,
    multiProcess: true,
    bulkLoadHow:
      "multi-row INSERT ... SELECT FROM unnest(...) of 5,000 rows into the snapshots table as the README's " +
      "'Storage layout' documents it (header = core's encodeSnapshotHeader, ready_task_id null); " +
      "saveSnapshot (5 round trips in a transaction) loads ~2-3k/s here",
    async bulkLoad(config, snapshots) {
      if (config.backend !== "postgres") throw new Error("not a postgres store");
      const client = new pg.Client({ connectionString: config.url });
      await client.connect();
      try {
        const cols: unknown[][] = [[], [], [], [], [], [], []];
        const results: unknown[][] = [[], [], []];
        for (const s of snapshots) {
          const { initialInput, ...rest } = s;
          const st = s.state;
          let ready: string | null = null;
          if (
            st.kind === "InProgress" &&
            st.position.kind === "AtTask" &&
            !Object.hasOwn(st.completedTasks, st.position.taskId)
          ) {
            ready = st.position.taskId;
          }
          if (ready !== null) throw new Error("bulkLoad is for snapshots without a ready task");
          cols[0]!.push(s.instanceId);
          cols[1]!.push(s.definitionHash);
          cols[2]!.push(Buffer.from(encodeSnapshotHeader(rest)));
          cols[3]!.push(initialInput === undefined ? null : Buffer.from(initialInput));
          cols[4]!.push(st.kind !== "InProgress");
          cols[5]!.push(st.kind === "InProgress" ? st.lastCompletedTaskId : null);
          cols[6]!.push(String(s.updatedAt));
          if (st.kind === "InProgress") {
            for (const r of Object.values(st.completedTasks)) {
              results[0]!.push(s.instanceId);
              results[1]!.push(r.taskId);
              results[2]!.push(Buffer.from(r.output));
            }
          }
        }
        const schema = `"${config.schema.replaceAll('"', '""')}"`;
        await client.query("BEGIN");
        await client.query(
          `INSERT INTO ${schema}.snapshots
             (instance_id, definition_hash, header, initial_input, finished, last_completed_task_id, ready_task_id, updated_at)
           SELECT i, d, h, ii, f, l, NULL, u
           FROM unnest($1::text[], $2::text[], $3::bytea[], $4::bytea[], $5::boolean[], $6::text[], $7::bigint[])
             AS x(i, d, h, ii, f, l, u)`,
          cols,
        );
        if (results[0]!.length > 0) {
          await client.query(
            `INSERT INTO ${schema}.task_results (instance_id, task_id, output)
             SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[])`,
            results,
          );
        }
        await client.query("COMMIT");
      } finally {
        await client.end();
      }
    },
    async createStore(tag) {
      const config: StoreConfig = { backend: "postgres", url: info.url, schema: `bench_${tag}_${runId()}` };
      const backend = await openStore(config, 2);
      await migrate(backend);
      await backend.close();
      return storeOf(config, async () => {
        const client = new pg.Client({ connectionString: info.url });
        await client.connect();
        try {
          await client.query(`DROP SCHEMA IF EXISTS "${config.schema}" CASCADE`);
        } finally {
          await client.end();
        }
      });
    },
  };
}

async function mongoTarget(info: MongoDbInfo): Promise<BackendTarget> {
  await load("@sayiir/persistence-mongo", () => import("@sayiir/persistence-mongo"));
  const { MongoClient } = await import("mongodb");
  return {
    name: "mongodb",
    label: "mongodb",
    server: `${info.server}${info.standIn ? "" : ` ${info.version}`}`,
    serverInfo: info,
    multiProcess: true,
    async createStore(tag) {
      const config: StoreConfig = {
        backend: "mongodb",
        url: info.url,
        database: MONGO_DATABASE,
        collectionPrefix: `b${tag}_${runId()}_`,
      };
      const backend = await openStore(config, 4);
      await migrate(backend);
      await backend.close();
      return storeOf(config, async () => {
        const client = new MongoClient(info.url, { serverSelectionTimeoutMS: 5000 });
        try {
          const db = client.db(MONGO_DATABASE);
          const collections = await db.listCollections({}, { nameOnly: true }).toArray();
          await Promise.all(
            collections
              .filter((c) => c.name.startsWith(config.collectionPrefix))
              .map((c) =>
                db
                  .collection(c.name)
                  .drop()
                  .catch(() => undefined),
              ),
          );
        } finally {
          await client.close();
        }
      });
    },
  };
}

async function dynamoTarget(info: DynamoDbInfo): Promise<BackendTarget> {
  await load("@sayiir/persistence-dynamodb", () => import("@sayiir/persistence-dynamodb"));
  const { DynamoDBClient, DeleteTableCommand } = await import("@aws-sdk/client-dynamodb");
  return {
    name: "dynamodb",
    label: "dynamodb",
    server: `${info.server} ${info.version}`,
    serverInfo: info,
    multiProcess: true,
    async createStore(tag) {
      const config: StoreConfig = {
        backend: "dynamodb",
        tableName: `sayiir_bench_${tag}_${runId()}`,
        endpoint: info.endpoint,
        region: info.region,
        credentials: { ...info.credentials },
      };
      const backend = await openStore(config);
      await migrate(backend);
      await backend.close();
      return storeOf(config, async () => {
        const client = new DynamoDBClient({
          endpoint: info.endpoint,
          region: info.region,
          credentials: { ...info.credentials },
        });
        try {
          await client.send(new DeleteTableCommand({ TableName: config.tableName }));
        } finally {
          client.destroy();
        }
      });
    },
  };
}

/** Which of the requested backends can run, and why the others cannot. */
export async function resolveBackends(
  names: readonly BackendName[],
  servers: Servers,
): Promise<Map<BackendName, Availability>> {
  const out = new Map<BackendName, Availability>();
  for (const name of names) {
    try {
      let target: BackendTarget;
      switch (name) {
        case "memory":
          target = await memoryTarget();
          break;
        case "sqlite":
          target = await sqliteTarget();
          break;
        case "redis":
          if (!servers.redis)
            throw new Error(`no Redis server: ${servers.unavailable.redis ?? "not started"}`);
          target = await redisTarget(servers.redis);
          break;
        case "postgres":
          if (!servers.postgres)
            throw new Error(`no PostgreSQL server: ${servers.unavailable.postgres ?? "not started"}`);
          target = await postgresTarget(servers.postgres);
          break;
        case "mongodb":
          if (!servers.mongodb)
            throw new Error(`no MongoDB server: ${servers.unavailable.mongodb ?? "not started"}`);
          target = await mongoTarget(servers.mongodb);
          break;
        case "dynamodb":
          if (!servers.dynamodb)
            throw new Error(`no DynamoDB server: ${servers.unavailable.dynamodb ?? "not started"}`);
          target = await dynamoTarget(servers.dynamodb);
          break;
      }
      out.set(name, { ok: true, target });
    } catch (error) {
      out.set(name, { ok: false, reason: errorMessage(error) });
    }
  }
  return out;
}
