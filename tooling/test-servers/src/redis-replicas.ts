// A local Redis Cluster of 3 masters with one replica each (6 redis-server processes on 127.0.0.1)
// and a short cluster-node-timeout, for failover tests: kill a master, and its replica takes over
// in a few seconds. Not a vitest global setup (a test that kills a node owns its cluster): tests
// call startReplicaCluster() and stop() themselves. The 3-master cluster of redis.ts (no replicas)
// stays what the adapter suites use.
import type { ServerControl } from "./index.ts";
import { log, since } from "./log.ts";
import { CLUSTER_BUS_OFFSET } from "./ports.ts";
import { findExecutable, makeTempDir, removeTempDir, stopProcess } from "./process.ts";
import { createCluster, HOST, type RedisNode, redisServerBinary, startRedisNode } from "./redis.ts";
import { parseInfo, redisCommand } from "./resp.ts";
import { pollUntil } from "./wait.ts";

/** One line of CLUSTER NODES, as one node sees the others. */
export interface ClusterNodeState {
  id: string;
  port: number;
  role: "master" | "replica";
  /** The master's id, for a replica. */
  masterId: string | null;
  /** Flagged fail (or pfail) by the node asked. */
  failing: boolean;
  /** Slots served (masters). */
  slots: number;
  /** The line of the node asked. */
  myself: boolean;
}

export interface Failover {
  /** The replica now serving the dead master's slots. */
  newMasterPort: number;
  /** From the call to cluster_state:ok on every live node with the new master in place. */
  ms: number;
}

export interface ReplicaCluster {
  /** Every node (masters first at start; roles change on failover): seed nodes for a client. */
  nodes: Array<{ host: string; port: number }>;
  /** One per node, same order: pid, port, data directory and log of each redis-server. */
  controls: ServerControl[];
  nodeTimeoutMs: number;
  /** CLUSTER NODES as the given live node (default: the first live one) sees it. */
  topology(askPort?: number): Promise<ClusterNodeState[]>;
  /** SIGKILLs the redis-server on this port (no shutdown, nothing flushed to its replica). */
  kill(port: number): void;
  /** Starts a killed node again on its port and directory; resolves once it replicates its heir. */
  restart(port: number): Promise<void>;
  /** Waits until the replica of the killed master serves its slots and every live node says ok. */
  waitForFailover(deadPort: number, timeoutMs?: number): Promise<Failover>;
  stop(): Promise<void>;
}

export function parseClusterNodes(text: string): ClusterNodeState[] {
  return text
    .split("\n")
    .map((line) => line.trim())
    .filter(Boolean)
    .map((line) => {
      const [id, address, flags, master, , , , , ...slots] = line.split(" ");
      const port = Number(/:(\d+)@/.exec(address ?? "")?.[1] ?? 0);
      const flagList = (flags ?? "").split(",");
      let count = 0;
      for (const range of slots) {
        if (range.startsWith("[")) continue; // a slot being migrated
        const [from, to] = range.split("-").map(Number);
        count += to === undefined ? 1 : to - from! + 1;
      }
      return {
        id: id ?? "",
        port,
        role: flagList.includes("master") ? "master" : "replica",
        masterId: master === "-" || master === undefined ? null : master,
        failing: flagList.includes("fail") || flagList.includes("fail?"),
        slots: count,
        myself: flagList.includes("myself"),
      } satisfies ClusterNodeState;
    });
}

export async function startReplicaCluster(options: { nodeTimeoutMs?: number } = {}): Promise<ReplicaCluster> {
  const bin = redisServerBinary();
  const cli = findExecutable("redis-cli", ["/usr/bin"]);
  if (!bin || !cli) throw new Error("redis-server / redis-cli are not installed");
  const nodeTimeoutMs = options.nodeTimeoutMs ?? 1000;
  const started = performance.now();
  const dir = makeTempDir("redis-replicas");
  const nodes: RedisNode[] = [];
  const dead = new Set<number>();
  const stop = async (): Promise<void> => {
    await Promise.all(nodes.map((n) => stopProcess(n.process, "SIGKILL", 1000)));
    removeTempDir(dir);
  };
  try {
    const args = [
      "--cluster-enabled",
      "yes",
      "--cluster-config-file",
      "nodes.conf",
      "--cluster-node-timeout",
      String(nodeTimeoutMs),
      // A replica takes over however long it was cut off (the test decides what is stale).
      "--cluster-replica-validity-factor",
      "0",
      // A replica's (re)sync starts at once, not after the default 5 s wait for more replicas.
      "--repl-diskless-sync-delay",
      "0",
    ];
    // redis-cli makes the first three masters and gives each one replica among the last three.
    const addresses = await createCluster({ bin, cli, dir, args, nodes, count: 6, replicas: 1 });
    const live = () => addresses.filter((a) => !dead.has(a.port));
    const topology = async (askPort?: number) =>
      parseClusterNodes(await redisCommand(HOST, askPort ?? live()[0]!.port, ["CLUSTER", "NODES"]));
    // Ready: every node says ok, 3 masters serve every slot, and every replica's link is up (a
    // master killed before its replica synced could not fail over).
    await pollUntil(
      async () => {
        for (const a of addresses) {
          const info = parseInfo(await redisCommand(HOST, a.port, ["CLUSTER", "INFO"]));
          if (info.get("cluster_state") !== "ok" || info.get("cluster_slots_assigned") !== "16384") return;
        }
        const seen = await topology();
        const replicas = seen.filter((n) => n.role === "replica");
        if (replicas.length !== 3 || seen.filter((n) => n.role === "master" && n.slots > 0).length !== 3)
          return;
        for (const r of replicas) {
          const info = parseInfo(await redisCommand(HOST, r.port, ["INFO", "replication"]));
          if (info.get("master_link_status") !== "up") return;
        }
        return true;
      },
      { what: "a 3+3 cluster in sync", timeoutMs: 30_000, intervalMs: 50 },
    );
    const controls = nodes.map((n) => n.control);
    // Who replicates whom, as of the last settled topology (start, failover, restart): a
    // failover's heir is the dead master's replica.
    const replicaOf = new Map<number, string>();
    const recordRoles = async () => {
      replicaOf.clear();
      // Each node's own word: another node's view of a restarted one lags behind the gossip.
      for (const a of live()) {
        const self = (await topology(a.port)).find((n) => n.myself);
        if (self?.masterId) replicaOf.set(a.port, self.masterId);
      }
    };
    await recordRoles();
    const wasReplicaOf = (node: ClusterNodeState, master: ClusterNodeState) =>
      replicaOf.get(node.port) === master.id;
    log(
      `redis-replicas: 3 masters + 3 replicas (${nodes.map((n) => n.port).join(", ")}) in ${since(started)} ms`,
    );
    return {
      nodes: addresses,
      controls,
      nodeTimeoutMs,
      topology,
      kill(port) {
        const node = nodes.find((n) => n.port === port);
        if (node === undefined) throw new Error(`no node on port ${port}`);
        dead.add(port);
        process.kill(node.control.pid, "SIGKILL");
      },
      async restart(port) {
        const at = nodes.findIndex((n) => n.port === port);
        if (at < 0 || !dead.has(port)) throw new Error(`no killed node on port ${port}`);
        const old = nodes[at]!;
        await stopProcess(old.process, "SIGKILL", 1000);
        const node = await startRedisNode(bin, dir, args, [CLUSTER_BUS_OFFSET], port);
        nodes[at] = node;
        controls[at] = node.control;
        dead.delete(port);
        // Back in service once it replicates its heir (WAIT can count it again).
        await pollUntil(
          async () => {
            const info = parseInfo(await redisCommand(HOST, port, ["INFO", "replication"]).catch(() => ""));
            return info.get("role") === "slave" && info.get("master_link_status") === "up" ? true : undefined;
          },
          { what: `:${port} to replicate again`, timeoutMs: 30_000, intervalMs: 50 },
        );
        await recordRoles();
      },
      async waitForFailover(deadPort, timeoutMs = 30_000) {
        const from = performance.now();
        const newMasterPort = await pollUntil(
          async () => {
            const seen = await topology().catch(() => undefined);
            if (seen === undefined) return;
            const gone = seen.find((n) => n.port === deadPort);
            // The dead master's slots have moved: to its replica, now a master.
            if (gone === undefined || gone.slots > 0) return;
            const heir = seen.find(
              (n) => n.role === "master" && n.slots > 0 && !n.failing && wasReplicaOf(n, gone),
            );
            if (heir === undefined) return;
            for (const a of live()) {
              const info = parseInfo(await redisCommand(HOST, a.port, ["CLUSTER", "INFO"]).catch(() => ""));
              if (info.get("cluster_state") !== "ok") return;
            }
            return heir.port;
          },
          { what: `a replica to take over from :${deadPort}`, timeoutMs, intervalMs: 50 },
        );
        const ms = Math.round(performance.now() - from);
        await recordRoles();
        return { newMasterPort, ms };
      },
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}
