// Redis Cluster failover: reference workers (@sayiir/worker, in this process, each with its own
// backend and Cluster client) run workflows on a 3-master + 3-replica cluster while one master is
// SIGKILLed; its replica takes over and the run goes on. Every claim and write the workers got an
// answer for is recorded (recorder.ts); failover-analysis.ts then counts what the failover lost.
//
// Replication is asynchronous and, on one machine, usually a fraction of a millisecond behind: a
// bare kill rarely loses anything. `lagMs` freezes the victim's replica (SIGSTOP) that long before
// the kill and thaws it right after, so every write of that window reached no replica: the window
// in which a real replica lags (a slow link, a busy replica) made reproducible.
//
// Command line (the long form, a cluster of its own):
//   node src/failover.ts [--acks] [--lag-ms 400] [--workers 4]
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { createSnapshot, type PersistentBackend } from "@sayiir/persistence-core";
import { RedisBackend, type ReplicaAcks } from "@sayiir/persistence-redis";
import { bytes, runWorker, startWorkflow, text } from "@sayiir/worker";
import { Redis } from "ioredis";
import { type EndState, type LossFigures, measureLosses } from "./failover-analysis.ts";
import { type ReplicaCluster, startReplicaCluster } from "./failover-cluster.ts";
import { type RecordedEvent, recordingBackend } from "./recorder.ts";
import { expectedOutput, soakWorkflows, type WorkflowKind } from "./soak/workload.ts";

export interface FailoverOptions {
  cluster: ReplicaCluster;
  /** The adapter option under test; undefined: today's behaviour (the master's reply is the ack). */
  replicaAcks?: ReplicaAcks;
  workers?: number;
  workflowsPerSecond?: number;
  /** Running time before the kill. */
  beforeKillMs?: number;
  /** How long the victim's replica is frozen before the kill (0: a bare kill). */
  lagMs?: number;
  /** Running time after the failover while the heir has no replica, before the dead node is restarted. */
  noReplicaMs?: number;
  /** Running time (new workflows) once the dead node is back as a replica. */
  afterMs?: number;
  drainTimeoutMs?: number;
  leaseMs?: number;
  log?: (line: string) => void;
}

export interface FailoverReport extends LossFigures, EndState {
  acks: string;
  victimPort: number;
  newMasterPort: number;
  failoverMs: number;
  /** From the restart of the dead node to its replica link being up. */
  rejoinMs: number;
  lagMs: number;
  /** Workflow starts whose call failed (outcome unknown): left out of the end-state checks. */
  startsFailed: number;
  /** Snapshot writes of the probe loops (8 backends, from just before the lag until the kill) acknowledged. */
  probeWrites: number;
  /** Probe writes that failed (WAIT refusals with the option, connection errors at the kill). */
  probesRefused: number;
  /** Acknowledged probe writes missing after the failover. */
  lostProbeWrites: number;
  /** Operations of the workers that failed with an error (BackendError during the failover, WAIT refusals). */
  workerErrors: number;
  ms: number;
}

const KINDS: WorkflowKind[] = ["pipeline", "fanout", "urgent"];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function openBackend(
  cluster: ReplicaCluster,
  keyPrefix: string,
  acks: ReplicaAcks | undefined,
): RedisBackend {
  return new RedisBackend({
    cluster: { nodes: cluster.nodes },
    keyPrefix,
    operationTimeoutMs: 3000,
    ...(acks === undefined ? {} : { replicaAcks: acks }),
  });
}

export async function runFailover(options: FailoverOptions): Promise<FailoverReport> {
  const started = Date.now();
  const { cluster } = options;
  const log = options.log ?? ((line: string) => console.info(line));
  const acks = options.replicaAcks;
  const lagMs = options.lagMs ?? 400;
  const perTick = Math.max(1, Math.round((options.workflowsPerSecond ?? 20) / 10));
  const keyPrefix = `failover_${acks === undefined ? "plain" : "acks"}_${Date.now().toString(36)}`;
  const logDir = await mkdtemp(join(tmpdir(), "sayiir-failover-"));
  const admin = openBackend(cluster, keyPrefix, acks);
  const workflows = soakWorkflows([5, 30]);
  const definitions = KINDS.map((k) => workflows[k]);
  const stop = new AbortController();
  const backends: PersistentBackend[] = [];
  let workerErrors = 0;
  const loops = Array.from({ length: options.workers ?? 4 }, (_, n) => {
    const workerId = `w${n}`;
    const backend = recordingBackend(
      openBackend(cluster, keyPrefix, acks),
      workerId,
      join(logDir, `${workerId}.log`),
    );
    backends.push(backend);
    return runWorker({
      backend,
      workerId,
      workflows: definitions,
      leaseMs: options.leaseMs ?? 2000,
      batch: 4,
      maxIdleMs: 50,
      signal: stop.signal,
    }).then((stats) => {
      workerErrors += stats.errors;
    });
  });

  // Starts: an answered start is a workflow that must end Completed; a failed one is left out.
  const acked = new Map<string, { kind: WorkflowKind; input: Uint8Array }>();
  let startsFailed = 0;
  let next = 0;
  const feeding = { on: true };
  const feed = (async () => {
    while (feeding.on) {
      await Promise.all(
        Array.from({ length: perTick }, async () => {
          const n = next++;
          const kind = KINDS[n % KINDS.length]!;
          const id = `fo/wf-${n}`;
          const input = bytes(`order-${n}`);
          try {
            await startWorkflow(admin, workflows[kind], id, input);
            acked.set(id, { kind, input });
          } catch {
            startsFailed++;
          }
        }),
      );
      await sleep(100);
    }
  })();

  // Probes: plain snapshot writes in a tight loop around the kill, many per lagged window.
  const probes = { on: true, acked: [] as string[], failed: 0 };
  let victimPort = 0;
  let failover = { newMasterPort: 0, ms: 0 };
  let rejoinMs = 0;
  try {
    await sleep(options.beforeKillMs ?? 1500);
    const topology = await cluster.topology();
    const victim = topology.find((n) => n.role === "master" && n.slots > 0)!;
    const replica = topology.find((n) => n.masterId === victim.id)!;
    const replicaPid = cluster.controls.find((c) => c.port === replica.port)!.pid;
    victimPort = victim.port;
    // The lag: the replica frozen, and its replication link cut from the master's side, so the
    // master's writes from here on reach no replica (a frozen replica alone would still find them
    // in its socket buffer when thawed).
    const probing = probe(cluster, keyPrefix, acks, probes);
    if (lagMs > 0) {
      process.kill(replicaPid, "SIGSTOP");
      await cutReplicas(victim.port);
      await sleep(lagMs);
    } else {
      await sleep(100);
    }
    cluster.kill(victim.port);
    if (lagMs > 0) process.kill(replicaPid, "SIGCONT");
    // Timed from the kill (a probe write in flight to the dead node may hang until its timeout).
    const failing = cluster.waitForFailover(victim.port);
    failing.catch(() => {}); // awaited below, after the probes
    probes.on = false;
    await probing;
    log(`[failover] killed master :${victim.port} (its replica :${replica.port} cut off ${lagMs} ms before)`);
    failover = await failing;
    log(`[failover] :${failover.newMasterPort} took over in ${failover.ms} ms`);
    // The heir has no replica until the dead node comes back as one: with replicaAcks every write
    // of its slots is refused meanwhile (the price of the option). Then the run goes on.
    await sleep(options.noReplicaMs ?? 500);
    const restarted = Date.now();
    await cluster.restart(victim.port);
    rejoinMs = Date.now() - restarted;
    log(`[failover] :${victim.port} back as a replica in ${rejoinMs} ms`);
    await sleep(options.afterMs ?? 1000);
  } finally {
    feeding.on = false;
    probes.on = false;
    await feed;
  }

  try {
    const end = await settle(admin, acked, Date.now() + (options.drainTimeoutMs ?? 20_000));
    stop.abort();
    await Promise.all(loops);
    const events = await readEvents(logDir);
    const lostProbes: string[] = [];
    for (const id of probes.acked) {
      const gone = await admin.loadSnapshot(id).then(
        () => false,
        (e: unknown) => (e as { code?: string }).code === "NOT_FOUND",
      );
      if (gone) lostProbes.push(id);
    }
    const report: FailoverReport = {
      acks: acks === undefined ? "off" : `WAIT ${acks.replicas} ${acks.timeoutMs}`,
      victimPort,
      newMasterPort: failover.newMasterPort,
      failoverMs: failover.ms,
      rejoinMs,
      lagMs,
      startsFailed,
      workerErrors,
      probeWrites: probes.acked.length,
      probesRefused: probes.failed,
      lostProbeWrites: lostProbes.length,
      ...measureLosses(events),
      ...end,
      ms: Date.now() - started,
    };
    const { violations, ...figures } = report;
    log(`[failover] ${JSON.stringify({ ...figures, violations: violations.length })}`);
    for (const v of violations.slice(0, 10)) log(`[failover] lost: ${v}`);
    return report;
  } finally {
    stop.abort();
    await Promise.allSettled(loops);
    await Promise.allSettled([admin, ...backends].map((b) => b.close()));
    await rm(logDir, { recursive: true, force: true });
  }
}

/** Waits until every acknowledged start is Completed or gone (a lost start never comes back), then reads the end state. */
async function settle(
  admin: PersistentBackend,
  acked: ReadonlyMap<string, { kind: WorkflowKind; input: Uint8Array }>,
  deadline: number,
): Promise<EndState> {
  const look = (id: string) =>
    admin.loadSnapshot(id).then(
      (s) => s,
      (e: unknown) => ((e as { code?: string }).code === "NOT_FOUND" ? null : undefined),
    );
  let pending = [...acked.keys()];
  while (pending.length > 0 && Date.now() < deadline) {
    const still: string[] = [];
    for (const id of pending) {
      const s = await look(id);
      if (s === undefined || (s !== null && s.state.kind === "InProgress")) still.push(id);
    }
    pending = still;
    if (pending.length > 0) await sleep(200);
  }
  const end: EndState = {
    workflows: acked.size,
    completed: 0,
    lostStarts: 0,
    incomplete: 0,
    wrongOutput: 0,
    endViolations: [],
  };
  for (const [id, { kind, input }] of acked) {
    const s = await look(id);
    if (s === null) {
      end.lostStarts++;
      end.endViolations.push(`${id}: started (acknowledged), gone after the failover`);
    } else if (s === undefined || s.state.kind !== "Completed") {
      end.incomplete++;
      end.endViolations.push(`${id}: ${s === undefined ? "unreadable" : s.state.kind} at the end`);
    } else {
      end.completed++;
      if (text(s.state.finalOutput) !== expectedOutput(kind, id, input)) end.wrongOutput++;
    }
  }
  return end;
}

/** 8 backends writing fresh snapshots back to back until `state.on` is false: which acknowledged ones survive? */
async function probe(
  cluster: ReplicaCluster,
  keyPrefix: string,
  acks: ReplicaAcks | undefined,
  state: { on: boolean; acked: string[]; failed: number },
): Promise<void> {
  const backends = Array.from({ length: 8 }, () => openBackend(cluster, keyPrefix, acks));
  let n = 0;
  try {
    await Promise.all(
      backends.map(async (backend) => {
        while (state.on) {
          const id = `fo/probe-${n++}`;
          try {
            await backend.saveSnapshot(createSnapshot(id, "probe"));
            state.acked.push(id);
          } catch {
            state.failed++;
          }
        }
      }),
    );
  } finally {
    await Promise.allSettled(backends.map((b) => b.close()));
  }
}

/** Closes every replica connection of a master (CLIENT KILL TYPE replica). */
async function cutReplicas(port: number): Promise<void> {
  const client = new Redis({ host: "127.0.0.1", port, lazyConnect: true, maxRetriesPerRequest: 0 });
  client.on("error", () => {});
  try {
    await client.connect();
    await client.call("CLIENT", "KILL", "TYPE", "replica");
  } finally {
    client.disconnect();
  }
}

async function readEvents(dir: string): Promise<RecordedEvent[]> {
  const events: RecordedEvent[] = [];
  for (const file of await readdir(dir)) {
    for (const line of (await readFile(join(dir, file), "utf8")).split("\n")) {
      if (line) events.push(JSON.parse(line) as RecordedEvent);
    }
  }
  return events;
}

// Command line: node src/failover.ts [--acks] [--lag-ms 400]
if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({
    options: {
      acks: { type: "boolean", default: false },
      "lag-ms": { type: "string", default: "400" },
      workers: { type: "string", default: "4" },
    },
  });
  const cluster = await startReplicaCluster({ nodeTimeoutMs: 1000 });
  try {
    const report = await runFailover({
      cluster,
      lagMs: Number(values["lag-ms"]),
      workers: Number(values.workers),
      ...(values.acks ? { replicaAcks: { replicas: 1, timeoutMs: 100 } } : {}),
    });
    console.info(JSON.stringify(report, null, 2));
  } finally {
    await cluster.stop();
  }
}
