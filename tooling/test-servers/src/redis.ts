// Redis: a standalone server and a 3-master Redis Cluster (redis-replicas.ts: one with replicas).
// Local servers are Debian's `redis-server` (apt-get install redis-server, done by install.ts), each
// on a free 127.0.0.1 port with no persistence and a throw-away dir.
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { Redis } from "ioredis";
import type { ObtainSpec, Started } from "./acquire.ts";
import { CONTAINER_IMAGES } from "./config.ts";
import { stopOnFailure } from "./container-runtime.ts";
import type { RedisClusterInfo, ServerControl, ServerInfo } from "./index.ts";
import { log, since } from "./log.ts";
import { CLUSTER_BUS_OFFSET, freePort } from "./ports.ts";
import {
  deathReason,
  findExecutable,
  type ManagedProcess,
  makeTempDir,
  removeTempDir,
  run,
  startProcess,
  stopProcess,
} from "./process.ts";
import { parseInfo, redisCommand } from "./resp.ts";
import { pollUntil } from "./wait.ts";

export const HOST = "127.0.0.1";
const START_TIMEOUT_MS = 20_000;

export interface RedisVersion {
  /** "Redis" or "Valkey" */
  product: string;
  version: string;
}

/** Reads the version with the official client (`INFO server`). */
export async function readRedisVersion(url: string): Promise<RedisVersion> {
  const client = new Redis(url, {
    lazyConnect: true,
    maxRetriesPerRequest: 1,
    retryStrategy: () => null,
    connectTimeout: 5000,
  });
  // Without a listener ioredis prints every connection error; keep the last one for our message
  // (connect() itself only says "Connection is closed").
  let lastError: Error | undefined;
  client.on("error", (error: Error) => {
    lastError = error;
  });
  try {
    await client.connect().catch((error: unknown) => {
      throw lastError ?? error;
    });
    const info = parseInfo(await client.info("server"));
    const valkey = info.get("valkey_version");
    if (valkey || info.get("server_name") === "valkey") return { product: "Valkey", version: valkey ?? "?" };
    return { product: "Redis", version: info.get("redis_version") ?? "?" };
  } finally {
    client.disconnect();
  }
}

export function redisServerBinary(): string | undefined {
  return (
    process.env.SAYIIR_TEST_REDIS_SERVER_BIN ?? findExecutable("redis-server", ["/usr/bin", "/usr/sbin"])
  );
}

// ---------------------------------------------------------------------------------------------
// Standalone

export const redisSpec: ObtainSpec<ServerInfo> = {
  kind: "redis",
  async fromEnv(url) {
    const v = await readRedisVersion(url);
    return [
      {
        info: {
          kind: "redis",
          url,
          server: `${v.product} (SAYIIR_TEST_REDIS_URL)`,
          version: v.version,
          source: "env",
        },
        stop: async () => {},
      },
    ];
  },
  async fromContainers() {
    const { GenericContainer, Wait } = await import("testcontainers");
    const container = await new GenericContainer(CONTAINER_IMAGES.redis)
      .withExposedPorts(6379)
      .withWaitStrategy(Wait.forLogMessage("Ready to accept connections"))
      .start();
    const url = `redis://${container.getHost()}:${container.getMappedPort(6379)}`;
    const v = await stopOnFailure(container, readRedisVersion(url));
    return [
      {
        info: {
          kind: "redis",
          url,
          server: `${v.product} (container ${CONTAINER_IMAGES.redis})`,
          version: v.version,
          source: "testcontainers",
        },
        stop: async () => void (await container.stop()),
      },
    ];
  },
  localPlans() {
    const bin = redisServerBinary();
    if (!bin) return [{ available: false, label: "redis-server", reason: "redis-server is not installed" }];
    return [{ available: true, label: "redis-server", start: () => startLocalRedis(bin) }];
  },
};

async function startLocalRedis(bin: string): Promise<Started<ServerInfo>> {
  const started = performance.now();
  const dir = makeTempDir("redis");
  try {
    const node = await startRedisNode(bin, dir, []);
    const url = `redis://${HOST}:${node.port}`;
    const v = await readRedisVersion(url);
    log(`redis: local redis-server on :${node.port} started in ${since(started)} ms`);
    return {
      info: {
        kind: "redis",
        url,
        server: `${v.product} (local ${bin})`,
        version: v.version,
        source: "local",
        control: node.control,
      },
      stop: async () => {
        await stopProcess(node.process, "SIGTERM");
        removeTempDir(dir);
      },
    };
  } catch (error) {
    removeTempDir(dir);
    throw error;
  }
}

export interface RedisNode {
  port: number;
  process: ManagedProcess;
  control: ServerControl;
}

/**
 * Starts one redis-server in `parentDir/<port>`; retries on another port if the bind fails. With
 * `fixedPort`: on that port only, in its existing directory (a restart, e.g. of a cluster node
 * that must find its nodes.conf again).
 */
export async function startRedisNode(
  bin: string,
  parentDir: string,
  extraArgs: string[],
  portOffsets: number[] = [],
  fixedPort?: number,
): Promise<RedisNode> {
  let lastError: unknown;
  for (let attempt = 0; attempt < (fixedPort === undefined ? 3 : 1); attempt++) {
    const port = fixedPort ?? (await freePort(portOffsets));
    const dir = join(parentDir, String(port));
    mkdirSync(dir, { recursive: true });
    const proc = startProcess({
      name: `redis-server :${port}`,
      command: bin,
      args: [
        "--port",
        String(port),
        "--bind",
        HOST,
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        dir,
        "--daemonize",
        "no",
        "--protected-mode",
        "yes",
        ...extraArgs,
      ],
      dir,
    });
    try {
      await pollUntil(
        async () => ((await redisCommand(HOST, port, ["PING"])) === "PONG" ? true : undefined),
        {
          what: `redis-server on ${HOST}:${port} to answer PING`,
          timeoutMs: START_TIMEOUT_MS,
          intervalMs: 20,
          abortIf: () => deathReason(proc),
        },
      );
      return {
        port,
        process: proc,
        control: { pid: proc.pid, pgid: proc.pid, port, dataDir: dir, logFile: proc.logFile },
      };
    } catch (error) {
      lastError = error;
      await stopProcess(proc, "SIGKILL", 1000);
      if (!/Address already in use/i.test(String(error))) throw error;
    }
  }
  throw lastError;
}

// ---------------------------------------------------------------------------------------------
// Cluster: 3 masters, no replicas

export const redisClusterSpec: ObtainSpec<RedisClusterInfo> = {
  kind: "redis-cluster",
  async fromEnv(value) {
    const nodes = parseNodes(value);
    const first = nodes[0]!;
    const state = await waitForClusterOk(nodes, 10_000);
    const v = await readRedisVersion(`redis://${first.host}:${first.port}`);
    return [
      {
        info: {
          kind: "redis-cluster",
          url: `redis://${first.host}:${first.port}`,
          server: `${v.product} Cluster, ${state.masters} masters (SAYIIR_TEST_REDIS_CLUSTER_NODES)`,
          version: v.version,
          source: "env",
          nodes,
        },
        stop: async () => {},
      },
    ];
  },
  // No container path: a cluster in containers must announce host-reachable addresses, which
  // needs host networking; use SAYIIR_TEST_REDIS_CLUSTER_NODES with your own cluster instead.
  localPlans() {
    const bin = redisServerBinary();
    const cli = findExecutable("redis-cli", ["/usr/bin"]);
    if (!bin || !cli) {
      return [
        {
          available: false,
          label: "redis-server + redis-cli",
          reason: "redis-server / redis-cli are not installed",
        },
      ];
    }
    return [
      {
        available: true,
        label: "3 redis-server --cluster-enabled",
        start: () => startLocalCluster(bin, cli),
      },
    ];
  },
};

function parseNodes(value: string): Array<{ host: string; port: number }> {
  const nodes = value
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean)
    .map((s) => {
      const m = /^(.+):(\d+)$/.exec(s);
      if (!m) throw new Error(`expected host:port, got ${JSON.stringify(s)}`);
      return { host: m[1]!, port: Number(m[2]) };
    });
  if (nodes.length === 0) throw new Error("no nodes listed");
  return nodes;
}

interface ClusterState {
  masters: number;
}

/** Polls `CLUSTER INFO` on every node until each says cluster_state:ok with all slots assigned. */
export async function waitForClusterOk(
  nodes: Array<{ host: string; port: number }>,
  timeoutMs: number,
  abortIf?: () => string | undefined,
): Promise<ClusterState> {
  return pollUntil(
    async () => {
      let masters = 0;
      for (const n of nodes) {
        const info = parseInfo(await redisCommand(n.host, n.port, ["CLUSTER", "INFO"]));
        if (info.get("cluster_state") !== "ok" || info.get("cluster_slots_assigned") !== "16384")
          return undefined;
        masters = Number(info.get("cluster_size") ?? 0);
      }
      return { masters };
    },
    {
      what: `cluster_state:ok on ${nodes.map((n) => `${n.host}:${n.port}`).join(", ")}`,
      timeoutMs,
      intervalMs: 50,
      ...(abortIf ? { abortIf } : {}),
    },
  );
}

/**
 * Starts `count` cluster-enabled nodes in `dir` (pushed into `nodes` as they come up, so the
 * caller can stop them whatever happens) and joins them with `redis-cli --cluster create`, which
 * makes the first count / (replicas + 1) masters and gives each `replicas` replicas. Returns their
 * addresses; the caller waits for the state it needs.
 */
export async function createCluster(o: {
  bin: string;
  cli: string;
  dir: string;
  args: string[];
  nodes: RedisNode[];
  count: number;
  replicas: number;
}): Promise<Array<{ host: string; port: number }>> {
  // Ports are picked one after the other (so they differ), the servers then start in parallel.
  const results = await Promise.allSettled(
    Array.from({ length: o.count }, () => startRedisNode(o.bin, o.dir, o.args, [CLUSTER_BUS_OFFSET])),
  );
  for (const r of results) if (r.status === "fulfilled") o.nodes.push(r.value);
  const failed = results.find((r) => r.status === "rejected");
  if (failed) throw (failed as PromiseRejectedResult).reason;
  const addresses = o.nodes.map((n) => ({ host: HOST, port: n.port }));
  await run(
    o.cli,
    [
      "--cluster",
      "create",
      ...addresses.map((a) => `${a.host}:${a.port}`),
      "--cluster-replicas",
      String(o.replicas),
      "--cluster-yes",
    ],
    { timeoutMs: 30_000 },
  );
  return addresses;
}

async function startLocalCluster(bin: string, cli: string): Promise<Started<RedisClusterInfo>> {
  const started = performance.now();
  const dir = makeTempDir("redis-cluster");
  const nodes: RedisNode[] = [];
  const stopAll = async (): Promise<void> => {
    await Promise.all(nodes.map((n) => stopProcess(n.process, "SIGTERM")));
    removeTempDir(dir);
  };
  try {
    const clusterArgs = [
      "--cluster-enabled",
      "yes",
      "--cluster-config-file",
      "nodes.conf",
      "--cluster-node-timeout",
      "5000",
    ];
    const addresses = await createCluster({ bin, cli, dir, args: clusterArgs, nodes, count: 3, replicas: 0 });
    const state = await waitForClusterOk(addresses, 30_000, () =>
      nodes.map((n) => deathReason(n.process)).find(Boolean),
    );
    const url = `redis://${HOST}:${nodes[0]!.port}`;
    const v = await readRedisVersion(url);
    log(
      `redis-cluster: 3 local nodes (${nodes.map((n) => n.port).join(", ")}) ready in ${since(started)} ms`,
    );
    return {
      info: {
        kind: "redis-cluster",
        url,
        server: `${v.product} Cluster, ${state.masters} masters (local ${bin})`,
        version: v.version,
        source: "local",
        nodes: addresses,
        control: nodes[0]!.control,
        nodeControls: nodes.map((n) => n.control),
      },
      stop: stopAll,
    };
  } catch (error) {
    await stopAll();
    throw error;
  }
}
