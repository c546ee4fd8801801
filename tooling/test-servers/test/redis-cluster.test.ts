import { Cluster } from "ioredis";
import { describe, expect, inject, it } from "vitest";

const cluster = inject("redisCluster");

describe.skipIf(!cluster)(
  `redis cluster: ${cluster ? `${cluster.server} ${cluster.version}` : inject("testServersUnavailable")["redis-cluster"]}`,
  () => {
    it("has 3 masters in state ok, and routes keys across slots", async () => {
      const client = new Cluster(cluster!.nodes, { redisOptions: { maxRetriesPerRequest: 1 } });
      try {
        const info = await client.cluster("INFO");
        expect(info).toContain("cluster_state:ok");
        expect(info).toMatch(/cluster_size:3\b/);
        const masters = client.nodes("master");
        expect(masters).toHaveLength(3);
        for (const node of masters) {
          const nodeInfo = await node.cluster("INFO");
          expect(nodeInfo).toContain("cluster_state:ok");
          expect(await node.info("server")).toContain(`redis_version:${cluster!.version}`);
        }
        // Keys spread over every master.
        const keys = Array.from({ length: 30 }, (_, i) => `smoke:${i}`);
        await Promise.all(keys.map((k) => client.set(k, k)));
        expect(await Promise.all(keys.map((k) => client.get(k)))).toEqual(keys);
        const perMaster = await Promise.all(masters.map((m) => m.dbsize()));
        expect(perMaster.every((n) => n > 0)).toBe(true);
      } finally {
        client.disconnect();
      }
    });
  },
);
