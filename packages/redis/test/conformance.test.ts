import { runConformance } from "@sayiir/persistence-core/conformance";
import type { Cluster, Redis } from "ioredis";
import { afterAll, describe, inject } from "vitest";
import { adminClient, subjectFactory, type Target } from "./subject.js";

const standalone = inject("redis");
const cluster = inject("redisCluster");

const targets: Array<{ name: string; target: Target | null }> = [
  {
    name: `redis standalone ${standalone?.version ?? "(no server)"}`,
    target: standalone ? { kind: "standalone", url: standalone.url } : null,
  },
  {
    name: `redis cluster ${cluster?.version ?? "(no server)"}, ${cluster?.nodes.length ?? 0} masters`,
    target: cluster ? { kind: "cluster", nodes: cluster.nodes } : null,
  },
];

for (const { name, target } of targets) {
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
      setup: subjectFactory(target, getAdmin),
    });
  });
}
