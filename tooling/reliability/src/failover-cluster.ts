// The 3-master + 3-replica Redis Cluster of @sayiir/test-servers (src/redis-replicas.ts), loaded
// by URL: that package exports only its global setups and public types, and this package's
// rootDir keeps its sources out of our program (tooling/bench loads its servers the same way).
// The shapes below restate what this suite uses of that module.

export interface ClusterNodeState {
  id: string;
  port: number;
  role: "master" | "replica";
  masterId: string | null;
  failing: boolean;
  slots: number;
  myself: boolean;
}

export interface ReplicaCluster {
  nodes: Array<{ host: string; port: number }>;
  controls: Array<{ pid: number; port: number }>;
  nodeTimeoutMs: number;
  topology(askPort?: number): Promise<ClusterNodeState[]>;
  kill(port: number): void;
  /** Starts a killed node again (same port and directory); resolves once it replicates its heir. */
  restart(port: number): Promise<void>;
  waitForFailover(deadPort: number, timeoutMs?: number): Promise<{ newMasterPort: number; ms: number }>;
  stop(): Promise<void>;
}

const MODULE = new URL("../../test-servers/src/redis-replicas.ts", import.meta.url);

export async function startReplicaCluster(options: { nodeTimeoutMs?: number } = {}): Promise<ReplicaCluster> {
  const mod = (await import(MODULE.href)) as {
    startReplicaCluster(options: { nodeTimeoutMs?: number }): Promise<ReplicaCluster>;
  };
  return mod.startReplicaCluster(options);
}
