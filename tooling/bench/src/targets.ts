// The benchmark's backends: the registry (@sayiir/backends) with the bench's tuning, and what the
// report says about each backend (row label, server, extra rows). Constructing an adapter happens
// in the registry; what is here is the bench's own.
//
// A store is described by the registry's serialisable `StoreConfig`, so worker processes
// (child_process.fork) open their own client of it with `openStore(config)`. A backend whose store
// lives in this process (memory: not durable) runs every worker in this process.
import { tmpdir } from "node:os";
import {
  type BackendName,
  BackendUnavailable,
  type ClientOptions,
  createRegistry,
  SERVER_KINDS,
  type ServerUrls,
  type StoreConfig,
} from "@sayiir/backends";
import type { PersistentBackend, WorkflowSnapshot } from "@sayiir/persistence-core";
import { POSTGRES_BULK_LOAD_HOW, postgresBulkLoad } from "./bulk-load.ts";
import {
  countMongoCommands,
  countPgStatements,
  countRedisCommands,
  mongoCommandCount,
  pgStatementCount,
  redisCommandCount,
} from "./counters.ts";
import type { CompleteMode } from "./sayiir-workers.ts";
import type { ServerInfo, Servers } from "./servers.ts";
import { errorMessage } from "./util.ts";

/** Set in worker processes that count MongoDB commands (counters.ts): their clients monitor commands. */
let mongoMonitoring = false;

/** The MongoDB clients opened from now on in this process emit command monitoring events. */
export function monitorMongoCommands(): void {
  mongoMonitoring = true;
}

/**
 * Starts counting what this process sends to its server (the statements, commands or MongoDB
 * commands of every client it opens from now on); returns the counter, or undefined when the
 * server's requests are not counted here (memory, SQLite; DynamoDB is counted by its own client).
 */
export async function startRequestCounter(
  server: "postgres" | "redis" | "mongo" | string | undefined,
): Promise<(() => number) | undefined> {
  if (server === "postgres") {
    countPgStatements();
    return pgStatementCount;
  }
  if (server === "redis") {
    await countRedisCommands();
    return redisCommandCount;
  }
  if (server === "mongo") {
    // Command monitoring: the bench's MongoDB clients in this process set monitorCommands.
    await countMongoCommands();
    monitorMongoCommands();
    return mongoCommandCount;
  }
  return undefined;
}

/** Long driver timeouts: a scenario may hold a million snapshots and 16 busy workers. */
const TUNING: Partial<Record<BackendName, (client: ClientOptions) => Record<string, unknown>>> = {
  // NORMAL: commits survive a process crash, not a power loss; the servers of the run are
  // throw-away too (Postgres with fsync=off, Redis without persistence), so this is the fair setting.
  sqlite: () => ({ synchronous: "NORMAL", busyTimeoutMs: 30_000 }),
  redis: () => ({ operationTimeoutMs: 60_000 }),
  postgres: () => ({ statementTimeoutMs: 120_000 }),
  mongo: (client) => ({
    clientOptions: {
      maxPoolSize: Math.max(client.poolSize ?? 10, 20),
      socketTimeoutMS: 300_000,
      ...(mongoMonitoring ? { monitorCommands: true } : {}),
    },
  }),
  dynamodb: () => ({ requestTimeoutMs: 60_000 }),
};

export const BACKENDS = createRegistry({
  prefix: "bench",
  database: "sayiir_bench",
  client: { poolSize: 10 },
  tune: (name, client) => TUNING[name]?.(client),
});

/** Opens a client of a store described by `config` (also used by worker processes). */
export function openStore(config: StoreConfig, poolSize = 10): Promise<PersistentBackend> {
  return BACKENDS[config.backend].open(config, { poolSize });
}

export interface Store {
  config: StoreConfig;
  /** Opens a client of the store (in this process). `poolSize` sizes connection pools where there are any. */
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

/** The extra row of Redis and Postgres: the same cycle with one call per task and per step. */
const PER_TASK_LABEL = "per-task calls (saveTaskResult + releaseTaskClaim)";

/** Server URLs of the run, by server kind. */
function urlsOf(servers: Servers): ServerUrls {
  return {
    redis: servers.redis?.url,
    postgres: servers.postgres?.url,
    mongodb: servers.mongodb?.url,
    dynamodb: servers.dynamodb?.endpoint,
  };
}

function infoOf(name: BackendName, servers: Servers): ServerInfo | undefined {
  const kind = SERVER_KINDS[name];
  return kind === null ? undefined : servers[kind];
}

/** What the report says the backend runs on. */
async function serverOf(name: BackendName, info: ServerInfo | undefined): Promise<string> {
  if (name === "memory") return "in-process (InMemoryBackend)";
  if (name === "sqlite") {
    return `node:sqlite (SQLite ${await sqliteVersion()}), file in ${tmpdir()}, WAL, synchronous=NORMAL`;
  }
  const standIn = (info as { standIn?: boolean } | undefined)?.standIn === true;
  return `${info!.server}${standIn ? "" : ` ${info!.version}`}`;
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

/** The target of `name`; Redis and Postgres get the per-task variant as an extra row. */
async function targetOf(
  name: BackendName,
  servers: Servers,
  completeMode?: CompleteMode,
): Promise<BackendTarget> {
  const info = infoOf(name, servers);
  const urls = urlsOf(servers);
  const perTask = completeMode === "per-task";
  const hasVariant = name === "redis" || name === "postgres";
  return {
    name,
    label: perTask ? `${name}, ${PER_TASK_LABEL}` : name,
    chartLabel: perTask ? `${name} (per-task calls)` : name,
    ...(completeMode !== undefined ? { completeMode } : {}),
    ...(hasVariant && completeMode === undefined
      ? { variants: [await targetOf(name, servers, "per-task")] }
      : {}),
    server: await serverOf(name, info),
    ...(info ? { serverInfo: info } : {}),
    ...(name === "postgres" ? { bulkLoad: postgresBulkLoad, bulkLoadHow: POSTGRES_BULK_LOAD_HOW } : {}),
    async createStore(tag) {
      // Our own throw-away Redis: dropping everything is instant even with millions of keys.
      const throwAwayServer = info?.source === "local";
      const subject = await BACKENDS[name].create(urls, { tag, throwAwayServer });
      return {
        config: subject.config,
        open: (poolSize) => subject.connect({ poolSize }),
        drop: async () => {
          await subject.backend.close();
          await subject.cleanup();
        },
      };
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
      const kind = SERVER_KINDS[name];
      if (kind !== null && !servers[kind]) {
        throw new BackendUnavailable(`no ${kind} server: ${servers.unavailable[kind] ?? "not started"}`);
      }
      // An adapter that does not load is reported here, with its reason.
      await BACKENDS[name].available(urlsOf(servers));
      out.set(name, { ok: true, target: await targetOf(name, servers) });
    } catch (error) {
      out.set(name, { ok: false, reason: errorMessage(error) });
    }
  }
  return out;
}
