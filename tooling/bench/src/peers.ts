// The job queues users would otherwise pick, run on the same servers with the same concurrency and a
// no-op handler. Each peer has a parent side (create the queue, pre-load N jobs, count what is left,
// drop everything) and a worker side (run in the worker processes of worker.ts).
//
// Settings, each the one its documentation recommends for throughput (see README.md):
// - BullMQ: `Worker` with `concurrency` = workers per process (BullMQ fetches the next job in the same
//   script that completes the previous one), jobs added with `addBulk`, `removeOnComplete: true`.
// - pg-boss: `work()` with `localConcurrency` = workers per process, `batchSize` = the batch size,
//   `burstWhenBatchFull: true` (fetch again at once while batches come back full), jobs added with
//   `insert()` in one statement per chunk.
// - graphile-worker: `run()` with `concurrency` = workers per process, `localQueue.size` (batch fetch,
//   the "performance: batching" page), `completeJobBatchDelay: 0` (batched completions), jobs added with
//   `addJobs()`.
import { readFileSync } from "node:fs";
import type { ServerInfo } from "./servers.ts";
import { runId } from "./util.ts";

export const PEER_NAMES = ["bullmq", "pg-boss", "graphile-worker"] as const;
export type PeerName = (typeof PEER_NAMES)[number];

/** Which of our backends each peer is compared with (the same server). */
export const PEER_BACKEND: Record<PeerName, "redis" | "postgres"> = {
  bullmq: "redis",
  "pg-boss": "postgres",
  "graphile-worker": "postgres",
};

export interface PeerConfig {
  peer: PeerName;
  url: string;
  /** Queue name (BullMQ, pg-boss) or schema (graphile-worker, pg-boss). */
  name: string;
  schema: string;
}

export interface PeerSettings {
  /** Workers (concurrent jobs) per process. */
  concurrency: number;
  batch: number;
}

/** The installed version of a peer library (from its package.json in this package's node_modules). */
export function peerVersion(peer: PeerName): string {
  try {
    const url = new URL(`../node_modules/${peer}/package.json`, import.meta.url);
    return (JSON.parse(readFileSync(url, "utf8")) as { version: string }).version;
  } catch {
    return "?";
  }
}

export function describeSettings(peer: PeerName, s: PeerSettings, processes: number): string {
  switch (peer) {
    case "bullmq":
      return `${processes} processes x Worker{concurrency:${s.concurrency}}, removeOnComplete:true, addBulk`;
    case "pg-boss":
      return `${processes} processes x work{localConcurrency:${s.concurrency}, batchSize:${s.batch}, burstWhenBatchFull:true}, insert()`;
    case "graphile-worker":
      return `${processes} processes x run{concurrency:${s.concurrency}, localQueue.size:${localQueueSize(s)}, completeJobBatchDelay:0}, addJobs()`;
  }
}

function localQueueSize(s: PeerSettings): number {
  return Math.max(s.concurrency + 1, s.concurrency * s.batch);
}

export interface PeerStore {
  config: PeerConfig;
  /** Commands the parent itself sent to the server since set-up (polling), to subtract from server counts. */
  ownCommands?: () => number;
  /** 0 once every job is finished (otherwise a positive number, not necessarily the count). */
  remaining(): Promise<number>;
  drop(): Promise<void>;
}

const CHUNK = 1000;

/** Creates the queue and pre-loads `n` jobs whose data is `{ i }`. */
export async function setupPeer(peer: PeerName, server: ServerInfo, n: number): Promise<PeerStore> {
  const id = runId();
  switch (peer) {
    case "bullmq": {
      const { Queue } = await import("bullmq");
      const { Redis } = await import("ioredis");
      const config: PeerConfig = { peer, url: server.url, name: `bench-${id}`, schema: "" };
      const connection = new Redis(server.url, { maxRetriesPerRequest: null });
      let own = 0;
      const send = connection.sendCommand.bind(connection);
      connection.sendCommand = ((...args: Parameters<typeof send>) => {
        own++;
        return send(...args);
      }) as typeof connection.sendCommand;
      const queue = new Queue(config.name, { connection });
      for (let start = 0; start < n; start += CHUNK) {
        const jobs = [];
        for (let i = start; i < Math.min(n, start + CHUNK); i++) {
          jobs.push({ name: "noop", data: { i }, opts: { removeOnComplete: true, removeOnFail: false } });
        }
        await queue.addBulk(jobs);
      }
      return {
        config,
        ownCommands: () => own,
        async remaining() {
          const c = await queue.getJobCounts("wait", "active", "delayed", "prioritized", "waiting-children");
          return Object.values(c).reduce((a, b) => a + b, 0);
        },
        async drop() {
          await queue.obliterate({ force: true }).catch(() => undefined);
          await queue.close();
          connection.disconnect();
        },
      };
    }
    case "pg-boss": {
      const { PgBoss } = await import("pg-boss");
      const pg = (await import("pg")).default;
      const config: PeerConfig = { peer, url: server.url, name: `bench_${id}`, schema: `pgboss_${id}` };
      const boss = new PgBoss({
        connectionString: server.url,
        schema: config.schema,
        supervise: false,
        schedule: false,
      });
      boss.on("error", () => {});
      await boss.start();
      await boss.createQueue(config.name);
      for (let start = 0; start < n; start += CHUNK) {
        const jobs = [];
        for (let i = start; i < Math.min(n, start + CHUNK); i++) jobs.push({ data: { i } });
        await boss.insert(config.name, jobs);
      }
      const client = new pg.Client({ connectionString: server.url });
      await client.connect();
      return {
        config,
        async remaining() {
          // An existence check stops at the first unfinished job: cheap enough to poll often.
          const r = await client.query<{ n: number }>(
            `select count(*)::int as n from (select 1 from "${config.schema}".job where name = $1 and state < 'completed' limit 1) x`,
            [config.name],
          );
          return r.rows[0]?.n ?? 0;
        },
        async drop() {
          await boss.stop({ graceful: false, close: true }).catch(() => undefined);
          await client.query(`drop schema if exists "${config.schema}" cascade`).catch(() => undefined);
          await client.end();
        },
      };
    }
    case "graphile-worker": {
      const { makeWorkerUtils } = await import("graphile-worker");
      const pg = (await import("pg")).default;
      const config: PeerConfig = { peer, url: server.url, name: "noop", schema: `graphile_${id}` };
      const utils = await makeWorkerUtils({
        connectionString: server.url,
        schema: config.schema,
        logger: quietGraphileLogger(await import("graphile-worker")),
      });
      await utils.migrate();
      for (let start = 0; start < n; start += CHUNK) {
        const jobs = [];
        for (let i = start; i < Math.min(n, start + CHUNK); i++)
          jobs.push({ identifier: "noop", payload: { i } });
        await utils.addJobs(jobs);
      }
      const client = new pg.Client({ connectionString: server.url });
      await client.connect();
      return {
        config,
        async remaining() {
          const r = await client.query<{ n: number }>(
            `select count(*)::int as n from (select 1 from "${config.schema}"._private_jobs limit 1) x`,
          );
          return r.rows[0]?.n ?? 0;
        },
        async drop() {
          await utils.release();
          await client.query(`drop schema if exists "${config.schema}" cascade`).catch(() => undefined);
          await client.end();
        },
      };
    }
  }
}

type GraphileModule = typeof import("graphile-worker");

function quietGraphileLogger(mod: GraphileModule) {
  return new mod.Logger(() => (level: string, message: string) => {
    if (level === "error") process.stderr.write(`[graphile-worker] ${message}\n`);
  });
}

export interface PeerWorker {
  /** Starts consuming. */
  start(): Promise<void>;
  /** Stops and returns the job indexes this process ran (one entry per handler call). */
  stop(): Promise<number[]>;
}

/** Worker side: prepared but idle until start(). */
export async function preparePeerWorker(config: PeerConfig, settings: PeerSettings): Promise<PeerWorker> {
  const seen: number[] = [];
  switch (config.peer) {
    case "bullmq": {
      const { Worker } = await import("bullmq");
      const { Redis } = await import("ioredis");
      const connection = new Redis(config.url, { maxRetriesPerRequest: null });
      await connection.ping();
      const worker = new Worker(
        config.name,
        async (job) => {
          seen.push((job.data as { i: number }).i);
        },
        { connection, concurrency: settings.concurrency, autorun: false },
      );
      worker.on("error", () => {});
      await worker.waitUntilReady();
      return {
        async start() {
          void worker.run();
        },
        async stop() {
          await worker.close(true);
          connection.disconnect();
          return seen;
        },
      };
    }
    case "pg-boss": {
      const { PgBoss } = await import("pg-boss");
      const boss = new PgBoss({
        connectionString: config.url,
        schema: config.schema,
        supervise: false,
        schedule: false,
        migrate: false,
        max: settings.concurrency + 2,
      });
      boss.on("error", () => {});
      await boss.start();
      return {
        async start() {
          await boss.work(
            config.name,
            {
              localConcurrency: settings.concurrency,
              batchSize: settings.batch,
              burstWhenBatchFull: true,
              pollingIntervalSeconds: 0.5,
            },
            async (jobs) => {
              for (const job of jobs) seen.push((job.data as { i: number }).i);
            },
          );
        },
        async stop() {
          await boss.stop({ graceful: true, close: true, timeout: 5000 });
          return seen;
        },
      };
    }
    case "graphile-worker": {
      const mod = await import("graphile-worker");
      const pg = (await import("pg")).default;
      const pool = new pg.Pool({ connectionString: config.url, max: settings.concurrency + 2 });
      pool.on("error", () => {});
      pool.on("connect", (client) => client.on("error", () => {}));
      await Promise.all(Array.from({ length: settings.concurrency }, () => pool.query("select 1")));
      let runner: Awaited<ReturnType<GraphileModule["run"]>> | undefined;
      return {
        async start() {
          runner = await mod.run({
            pgPool: pool,
            schema: config.schema,
            concurrency: settings.concurrency,
            noHandleSignals: true,
            pollInterval: 500,
            logger: quietGraphileLogger(mod),
            taskList: {
              noop: async (payload) => {
                seen.push((payload as { i: number }).i);
              },
            },
            preset: {
              worker: {
                localQueue: { size: localQueueSize(settings) },
                completeJobBatchDelay: 0,
              },
            },
          });
        },
        async stop() {
          await runner?.stop();
          await pool.end();
          return seen;
        },
      };
    }
  }
}
