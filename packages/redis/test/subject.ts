import { randomUUID } from "node:crypto";
import type { ConformanceSubject, SubjectOptions } from "@sayiir/persistence-core/conformance";
import type {} from "@sayiir/test-servers";
import { Cluster, Redis } from "ioredis";
import { RedisBackend, type RedisBackendOptions } from "../src/index.js";

/** Where the tests run: a standalone server (url) or a cluster (seed nodes). */
export type Target =
  | { kind: "standalone"; url: string }
  | { kind: "cluster"; nodes: Array<{ host: string; port: number }> };

/** Connection options of a backend that opens its own client on the target. */
export function connection(target: Target): RedisBackendOptions {
  return target.kind === "standalone" ? { url: target.url } : { cluster: { nodes: target.nodes } };
}

/** A plain client on the target, for set-up and clean-up outside the backend. */
export function adminClient(target: Target): Redis | Cluster {
  const client = target.kind === "standalone" ? new Redis(target.url) : new Cluster(target.nodes);
  client.on("error", () => {});
  return client;
}

/** Deletes every key of one backend's prefix (on every master of a cluster). */
export async function dropPrefix(admin: Redis | Cluster, prefix: string): Promise<void> {
  // A new Cluster client knows its nodes only once connected.
  if (admin instanceof Cluster) await admin.ping();
  const nodes = admin instanceof Cluster ? admin.nodes("master") : [admin];
  for (const node of nodes) {
    let cursor = "0";
    do {
      const [next, keys] = await node.scan(cursor, "MATCH", `{${prefix}:*`, "COUNT", 1000);
      cursor = next;
      // One UNLINK per key: keys of different shards live in different slots.
      await Promise.all(keys.map((key) => node.unlink(key)));
    } while (cursor !== "0");
  }
}

/**
 * The conformance subject factory: every call gets its own key prefix on the shared server.
 * `shards` overrides the default count (1 on standalone, 16 on a cluster).
 */
export function subjectFactory(target: Target, admin: () => Redis | Cluster, shards?: number) {
  return async ({ maxPayloadBytes }: SubjectOptions): Promise<ConformanceSubject> => {
    const keyPrefix = `t-${randomUUID()}`;
    const options: RedisBackendOptions = {
      ...connection(target),
      keyPrefix,
      ...(shards === undefined ? {} : { shards }),
      ...(maxPayloadBytes === undefined ? {} : { maxPayloadBytes }),
    };
    const backend = new RedisBackend(options);
    return {
      backend,
      connect: async () => new RedisBackend(options),
      corruptSnapshot: async (instanceId) => {
        await admin().hset(backend.layout.instance(instanceId).meta, "h", "not a snapshot");
      },
      cleanup: async () => dropPrefix(admin(), keyPrefix),
    };
  };
}
