// What the adapter's replicaAcks option costs: the same write loop with and without it, on a
// standalone master with one replica and on the 3-master + 3-replica cluster, all local. One cycle
// is a workflow's three fenced-path writes: saveSnapshot, claimTask, saveTaskResult (each a script,
// so each one WAIT with the option). Figures go to the Redis README's "Replica acknowledgements".
//   node src/failover-cost.ts [--seconds 3] [--concurrency 16]
import { parseArgs } from "node:util";
import { createSnapshot } from "@sayiir/persistence-core";
import { RedisBackend, type RedisBackendOptions, type ReplicaAcks } from "@sayiir/persistence-redis";
import { startReplicaCluster } from "./failover-cluster.ts";
import { LocalRedis } from "./redis-server.ts";

export interface CostFigures {
  target: string;
  acks: string;
  cyclesPerSecond: number;
  writesPerSecond: number;
  p50Ms: number;
  p99Ms: number;
}

const quantile = (sorted: number[], q: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0;

export async function measureCost(
  target: string,
  connection: RedisBackendOptions,
  acks: ReplicaAcks | undefined,
  seconds: number,
  concurrency: number,
): Promise<CostFigures> {
  const backend = new RedisBackend({
    ...connection,
    keyPrefix: `cost_${acks ? "acks" : "plain"}_${Date.now().toString(36)}`,
    ...(acks ? { replicaAcks: acks } : {}),
  });
  const latencies: number[] = [];
  let cycles = 0;
  const timed = async <T>(write: () => Promise<T>): Promise<T> => {
    const at = performance.now();
    const out = await write();
    latencies.push(performance.now() - at);
    return out;
  };
  try {
    // Warm-up: scripts loaded, slots known, layout record read.
    await backend.saveSnapshot(createSnapshot("warm", "h"));
    const end = performance.now() + seconds * 1000;
    let next = 0;
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (performance.now() < end) {
          const id = `c-${next++}`;
          await timed(() => backend.saveSnapshot(createSnapshot(id, "h")));
          const claim = await timed(() => backend.claimTask(id, "t", "w", 30_000));
          await timed(() => backend.saveTaskResult(id, "t", new Uint8Array([1]), { claim: claim! }));
          cycles++;
        }
      }),
    );
  } finally {
    await backend.close();
  }
  latencies.sort((a, b) => a - b);
  return {
    target,
    acks: acks ? `WAIT ${acks.replicas} ${acks.timeoutMs}` : "off",
    cyclesPerSecond: Math.round(cycles / seconds),
    writesPerSecond: Math.round(latencies.length / seconds),
    p50Ms: Number(quantile(latencies, 0.5).toFixed(2)),
    p99Ms: Number(quantile(latencies, 0.99).toFixed(2)),
  };
}

const { values } = parseArgs({
  options: { seconds: { type: "string", default: "3" }, concurrency: { type: "string", default: "16" } },
});
const seconds = Number(values.seconds);
const concurrency = Number(values.concurrency);
const acks: ReplicaAcks = { replicas: 1, timeoutMs: 100 };
const rows: CostFigures[] = [];

const master = await LocalRedis.start(["--repl-diskless-sync-delay", "0"]);
const replica = await LocalRedis.start(["--replicaof", "127.0.0.1", String(master.port)]);
try {
  await new Promise((r) => setTimeout(r, 500)); // the replica's first sync (no diskless delay)
  const standalone = { url: `redis://127.0.0.1:${master.port}` };
  for (const a of [undefined, acks])
    rows.push(await measureCost("standalone + 1 replica", standalone, a, seconds, concurrency));
} finally {
  await replica.stop();
  await master.stop();
}
const cluster = await startReplicaCluster();
try {
  const nodes = { cluster: { nodes: cluster.nodes } };
  for (const a of [undefined, acks])
    rows.push(await measureCost("cluster 3+3", nodes, a, seconds, concurrency));
} finally {
  await cluster.stop();
}
console.table(rows);
