// Scenario 5 (issue 18): wake-up latency and idle cost. W idle workers over P processes (ours: one
// dispatcher per process with W/P slots, as the reference worker and the peers run); a producer
// saves one ready task at a time at random intervals; per task, the latency from the save's return
// to the claim's return (the peers: from add's return to the handler's start), both on the
// machine's monotonic clock (monoMs). Then nothing to do for S seconds: the requests the idle workers' processes send
// (the counters of scenario 1) and, as the server sees it, Redis's executed commands (INFO
// commandstats) or PostgreSQL's committed transactions (pg_stat_database.xact_commit).
import type { PersistentBackend } from "@sayiir/persistence-core";
import { redisCommandTotal } from "./counters.ts";
import { type PeerName, peerVersion, setupPeer } from "./peers.ts";
import type { ServerInfo } from "./servers.ts";
import type { BackendTarget } from "./targets.ts";
import { round3, type Summary, sleep, summarize } from "./util.ts";
import { monoMs } from "./wakeups-loop.ts";
import { type Consumers, forkConsumers, localConsumers } from "./wakeups-procs.ts";
import type { WakeJob } from "./wakeups-worker.ts";
import { readySnapshot } from "./workload.ts";

export interface WakeupsOptions {
  tasks: number;
  workers: number;
  processes: number;
  /** The idle phase, seconds. */
  idleS: number;
  /** The producer's gap before each save: uniform in [min, max] ms. */
  gapMs: [number, number];
  /** Upper bound of the wait for every task to be claimed. */
  timeoutMs: number;
}

export interface WakeupsResult {
  /** Our backend's label, or the peer's name. */
  system: string;
  peer: boolean;
  server: string;
  /** Ours: capabilities.wakeUps; the peers: how they wait. */
  wakeUps: string;
  /** Ours: capabilities.wakeBoundMs. */
  wakeBoundMs: number | null;
  tasks: number;
  /** Slots (concurrent tasks) in all. */
  workers: number;
  processes: number;
  /** How the workers are arranged, as printed: "2 processes x 1 dispatcher, 8 slots" (absent in older reports). */
  setup?: string;
  /** Save (add) return to claim return (handler start), ms. */
  latency: Summary;
  idleS: number;
  /** Requests the worker processes sent in the idle phase (null: not counted, e.g. SQLite). */
  idleRequests: number | null;
  idleRequestsPerSecondPerProcess: number | null;
  /** The server's side of the idle phase: what it counted, and how many. */
  idleServer: { what: string; count: number } | null;
  /** Every task got exactly once. */
  correct: boolean;
  problems: string[];
  errors: Record<string, number>;
  note?: string;
}

/** A look at the server's own counter (Redis commands executed, Postgres transactions committed). */
interface ServerCounter {
  what: string;
  read(): Promise<number>;
  close(): Promise<void>;
}

/** Lets the consumers settle into their waits (after the warm-up task, after the last task). */
const SETTLE_MS = 300;
/** The warm-up task's index: got before the clock starts, so every consumer is live and listening. */
const WARM_UP = -1;

function splitWorkers(workers: number, processes: number): number[] {
  return Array.from(
    { length: processes },
    (_, p) => Math.floor(workers / processes) + (p < workers % processes ? 1 : 0),
  ).filter((w) => w > 0);
}

/** "8", or "9/8" when the workers do not split evenly. */
function slotsText(split: readonly number[]): string {
  return split.every((n) => n === split[0]) ? String(split[0]) : split.join("/");
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? "" : "es"}`;
}

async function serverCounter(
  kind: "redis" | "postgres" | undefined,
  url: string | null,
): Promise<ServerCounter | undefined> {
  if (url === null || kind === undefined) return undefined;
  if (kind === "redis")
    return { what: "Redis commands executed", read: () => redisCommandTotal(url), close: async () => {} };
  const pg = (await import("pg")).default;
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  return {
    what: "PostgreSQL transactions committed (pg_stat_database, flushed lazily)",
    async read() {
      await client.query("select pg_stat_clear_snapshot()");
      const r = await client.query<{ n: string }>(
        "select xact_commit::text as n from pg_stat_database where datname = current_database()",
      );
      return Number(r.rows[0]?.n ?? 0);
    },
    close: () => client.end(),
  };
}

interface Measured {
  latencies: number[];
  problems: string[];
  errors: Record<string, number>;
  idleRequests: number | null;
  idleServer: number | null;
}

/** Resolves once the consumers have got `n` tasks in all; throws at `deadline`. */
async function gotAll(consumers: Consumers, n: number, deadline: number): Promise<void> {
  while ((await consumers.count()).claims < n) {
    if (Date.now() > deadline)
      throw new Error(`not every task was got by ${new Date(deadline).toISOString()}`);
    await sleep(20);
  }
}

/**
 * The warm-up task (untimed: a consumer's first wait may open its listener), the producer, the
 * wait for every claim, the idle phase, the stop; latencies and the checks.
 */
async function measure(
  consumers: Consumers,
  produce: (i: number) => Promise<string>,
  o: WakeupsOptions,
  server: ServerCounter | undefined,
): Promise<Measured> {
  const saved = new Map<string, number>();
  let stopped = false;
  try {
    const deadline = Date.now() + o.timeoutMs;
    const warmUp = await produce(WARM_UP);
    await gotAll(consumers, 1, deadline);
    await sleep(SETTLE_MS);
    const [min, max] = o.gapMs;
    for (let i = 0; i < o.tasks; i++) {
      await sleep(min + Math.random() * (max - min));
      const key = await produce(i);
      saved.set(key, monoMs());
    }
    await gotAll(consumers, o.tasks + 1, deadline);
    await sleep(SETTLE_MS);
    // Two reads back to back: what reading costs the server, subtracted from the idle delta.
    const s0 = await server?.read();
    const s1 = await server?.read();
    const c0 = await consumers.count();
    await sleep(o.idleS * 1000);
    const c1 = await consumers.count();
    const s2 = await server?.read();
    const { claims, errors } = await consumers.stop();
    stopped = true;
    const first = new Map<string, number>();
    const problems: string[] = [];
    let warmUps = 0;
    for (const [key, at] of claims) {
      if (key === warmUp) warmUps++;
      else if (!saved.has(key)) problems.push(`got ${key}, which was never saved`);
      else if (first.has(key)) problems.push(`${key} got twice`);
      else first.set(key, at);
    }
    if (warmUps !== 1) problems.push(`the warm-up task ${warmUp} got ${warmUps} times`);
    const latencies: number[] = [];
    for (const [key, at] of saved) {
      const claimed = first.get(key);
      if (claimed === undefined) problems.push(`${key} never got`);
      else latencies.push(claimed - at);
    }
    return {
      latencies,
      problems: problems.slice(0, 10),
      errors,
      idleRequests: c0.requests === null || c1.requests === null ? null : c1.requests - c0.requests,
      idleServer:
        s0 === undefined || s1 === undefined || s2 === undefined ? null : Math.max(0, s2 - s1 - (s1 - s0)),
    };
  } finally {
    if (!stopped) await consumers.stop().catch(() => undefined);
  }
}

function row(
  base: Omit<
    WakeupsResult,
    | "latency"
    | "idleRequests"
    | "idleRequestsPerSecondPerProcess"
    | "idleServer"
    | "correct"
    | "problems"
    | "errors"
  >,
  m: Measured,
  what: string | undefined,
): WakeupsResult {
  return {
    ...base,
    latency: summarize(m.latencies),
    idleRequests: m.idleRequests,
    idleRequestsPerSecondPerProcess:
      m.idleRequests === null ? null : round3(m.idleRequests / base.idleS / base.processes),
    idleServer: what === undefined || m.idleServer === null ? null : { what, count: m.idleServer },
    correct: m.problems.length === 0,
    problems: m.problems,
    errors: m.errors,
  };
}

/** Scenario 5 on one of our backends. */
export async function runWakeups(target: BackendTarget, o: WakeupsOptions): Promise<WakeupsResult> {
  const store = await target.createStore("wake");
  let producer: PersistentBackend | undefined;
  let local: PersistentBackend | undefined;
  let server: ServerCounter | undefined;
  try {
    producer = await store.open(2);
    // A backend that learns its mode from the server (MongoDB: a change stream or not) knows it
    // after its first wait: a look of 0 ms, then the capabilities are the ones its workers use.
    await producer.waitForTasks({ timeoutMs: 0 });
    const { wakeUps, wakeBoundMs, durable } = producer.capabilities;
    // A store that lives in this process (memory) cannot be shared with worker processes.
    // One dispatcher per process; the in-memory store runs the same dispatchers in this process.
    const split = splitWorkers(o.workers, Math.max(1, o.processes));
    const processes = durable ? split.length : 1;
    let consumers: Consumers;
    if (durable) {
      const jobs: WakeJob[] = split.map((slots, p) => ({
        kind: "sayiir",
        store: store.config,
        slots,
        prefix: `p${p}`,
      }));
      consumers = await forkConsumers(jobs);
    } else {
      local = await store.open(o.workers + 2);
      consumers = localConsumers(local, split);
    }
    const dispatchers = durable ? "1 dispatcher" : `${split.length} dispatchers`;
    const kind = target.name === "redis" || target.name === "postgres" ? target.name : undefined;
    server = await serverCounter(kind, store.config.url);
    const backend = producer;
    const m = await measure(
      consumers,
      async (i) => {
        const id = `wake-${i}`;
        await backend.saveSnapshot(readySnapshot(id, i));
        return id;
      },
      o,
      server,
    );
    return row(
      {
        system: target.label,
        peer: false,
        server: target.server,
        wakeUps,
        wakeBoundMs,
        tasks: o.tasks,
        workers: o.workers,
        processes,
        setup: `${plural(processes, "process")} x ${dispatchers}, ${slotsText(split)} slots`,
        idleS: o.idleS,
        ...(durable ? {} : { note: "in-process backend: its dispatchers share one process" }),
      },
      m,
      server?.what,
    );
  } finally {
    await server?.close().catch(() => undefined);
    await local?.close().catch(() => undefined);
    await producer?.close().catch(() => undefined);
    await store.drop().catch((e: unknown) => process.stderr.write(`[bench] drop failed: ${String(e)}\n`));
  }
}

/** The peers of scenario 5: the ones that wait on their server rather than poll it. */
export const WAKE_PEERS: readonly PeerName[] = ["graphile-worker", "bullmq"];

/** How each peer waits, for the report. */
const PEER_WAIT: Partial<Record<PeerName, string>> = {
  bullmq: "blocking BZPOPMIN (Worker)",
  "graphile-worker": "LISTEN/NOTIFY (+ 2 s poll)",
};

/** Each peer's consumer in one process, for the report. */
const PEER_CONSUMER: Partial<Record<PeerName, string>> = {
  bullmq: "1 Worker",
  "graphile-worker": "1 run()",
};

/** The producer side of a peer: add one job whose data is `{ i }`. */
async function peerProducer(peer: PeerName, url: string, name: string, schema: string) {
  if (peer === "bullmq") {
    const { Queue } = await import("bullmq");
    const { Redis } = await import("ioredis");
    const connection = new Redis(url, { maxRetriesPerRequest: null });
    const queue = new Queue(name, { connection });
    return {
      add: async (i: number) => void (await queue.add("noop", { i }, { removeOnComplete: true })),
      close: async () => {
        await queue.close();
        connection.disconnect();
      },
    };
  }
  const { makeWorkerUtils, Logger } = await import("graphile-worker");
  const utils = await makeWorkerUtils({ connectionString: url, schema, logger: new Logger(() => () => {}) });
  return {
    add: async (i: number) => void (await utils.addJob("noop", { i })),
    close: async () => void (await utils.release()),
  };
}

/** Scenario 5 on a peer (BullMQ, graphile-worker), same server, same workers, same producer. */
export async function runWakeupsPeer(
  peer: PeerName,
  info: ServerInfo,
  o: WakeupsOptions,
): Promise<WakeupsResult> {
  const store = await setupPeer(peer, info, 0);
  const { config } = store;
  let producer: Awaited<ReturnType<typeof peerProducer>> | undefined;
  let server: ServerCounter | undefined;
  try {
    producer = await peerProducer(peer, config.url, config.name, config.schema);
    const split = splitWorkers(o.workers, Math.max(1, o.processes));
    const consumers = await forkConsumers(split.map((slots) => ({ kind: "peer", config, slots })));
    server = await serverCounter(peer === "bullmq" ? "redis" : "postgres", config.url);
    const add = producer.add;
    const produce = async (i: number) => {
      await add(i);
      return String(i);
    };
    const m = await measure(consumers, produce, o, server);
    return row(
      {
        system: peer,
        peer: true,
        server: `${info.server} ${info.version}, ${peer} ${peerVersion(peer)}`,
        wakeUps: PEER_WAIT[peer] ?? "?",
        wakeBoundMs: null,
        tasks: o.tasks,
        workers: o.workers,
        processes: split.length,
        setup: `${plural(split.length, "process")} x ${PEER_CONSUMER[peer] ?? "?"}, concurrency ${slotsText(split)}`,
        idleS: o.idleS,
      },
      m,
      server?.what,
    );
  } finally {
    await server?.close().catch(() => undefined);
    await producer?.close().catch(() => undefined);
    await store.drop().catch(() => undefined);
  }
}
