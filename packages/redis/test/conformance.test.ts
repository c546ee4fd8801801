import { runConformance } from "@sayiir/persistence-core/conformance";
import type { Cluster, Redis } from "ioredis";
import { afterAll, describe, inject } from "vitest";
import { adminClient, subjectFactory, type Target } from "./subject.js";

const standalone = inject("redis");
const cluster = inject("redisCluster");

// Standalone runs twice: with its default of one shard, and with 4 shards, where one script
// covers every shard (claim-next and discovery merge them by age inside Lua, completion spans
// them). The cluster runs with its default of 16 shards, one script per shard.
const targets: Array<{ name: string; target: Target | null; shards?: number }> = [
  {
    name: `redis standalone ${standalone?.version ?? "(no server)"}`,
    target: standalone ? { kind: "standalone", url: standalone.url } : null,
  },
  {
    name: `redis standalone ${standalone?.version ?? "(no server)"}, 4 shards`,
    target: standalone ? { kind: "standalone", url: standalone.url } : null,
    shards: 4,
  },
  {
    name: `redis cluster ${cluster?.version ?? "(no server)"}, ${cluster?.nodes.length ?? 0} masters`,
    target: cluster ? { kind: "cluster", nodes: cluster.nodes } : null,
  },
];

for (const { name, target, shards } of targets) {
  describe.skipIf(target === null)(name, () => {
    if (target === null) return;
    let admin: Redis | Cluster | undefined;
    const getAdmin = () => {
      admin ??= adminClient(target);
      return admin;
    };
    afterAll(async () => {
      await admin?.quit();
    });
    runConformance({
      name,
      capabilities: { durable: true, rawRecords: true },
      setup: subjectFactory(target, getAdmin, shards),
    });
  });
}
