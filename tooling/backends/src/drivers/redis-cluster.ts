// The Redis adapter on a Redis Cluster: the server is its seed nodes "host:port,host:port"; a
// storage is a key prefix, as on a standalone server, whose keys spread over every master.
import type { Cluster } from "ioredis";
import type { Driver } from "../driver.ts";
import { redis } from "./redis.ts";

function seedNodes(nodes: string): Array<{ host: string; port: number }> {
  return nodes.split(",").map((node) => {
    const at = node.trim().lastIndexOf(":");
    return { host: node.slice(0, at).trim(), port: Number(node.slice(at + 1)) };
  });
}

async function admin(nodes: string): Promise<Cluster> {
  const { Cluster } = await import("ioredis");
  const client = new Cluster(seedNodes(nodes));
  client.on("error", () => {});
  // A new Cluster client knows its masters only once connected.
  await client.ping();
  return client;
}

export const redisCluster: Driver = {
  name: "redis",
  server: "redis-cluster",
  specifier: redis.specifier,
  className: redis.className,
  async place({ url, storage, fresh }) {
    return { backend: "redis", url, storage: storage ?? fresh };
  },
  options(config, client) {
    // A proxy cannot stand in front of a cluster: its clients follow the nodes' own addresses.
    if (client.via !== undefined) throw new Error("redis-cluster: no fault proxy in front of a cluster");
    return {
      cluster: { nodes: seedNodes(config.url!) },
      keyPrefix: config.storage,
      maxPayloadBytes: client.maxPayloadBytes,
      ...(client.timeoutMs ? { operationTimeoutMs: client.timeoutMs } : {}),
    };
  },
  async drop(config, { throwAwayServer }) {
    const client = await admin(config.url!);
    try {
      for (const node of client.nodes("master")) {
        if (throwAwayServer) {
          await node.flushall();
          continue;
        }
        let cursor = "0";
        do {
          const [next, keys] = await node.scan(cursor, "MATCH", `{${config.storage}:*`, "COUNT", 5000);
          cursor = next;
          // One UNLINK per key: the keys of different shards live in different slots.
          await Promise.all(keys.map((key) => node.unlink(key)));
        } while (cursor !== "0");
      }
    } finally {
      client.disconnect();
    }
  },
};
