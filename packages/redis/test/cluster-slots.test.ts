import { atTask, text, uid } from "@sayiir/persistence-core/conformance";
import type { Cluster } from "ioredis";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { RedisBackend } from "../src/index.js";
import { adminClient, dropPrefix } from "./subject.js";

/*
 * Cluster safety. Every script must touch the keys of one slot: its KEYS, and the keys the shard
 * scripts build from the shard's base. CLUSTER KEYSLOT (the server's own hash) checks that for
 * every key the layout produces, with ids that hold "{", "}" and ":"; then a mixed workload over
 * many instances runs on the cluster and no command may fail (CROSSSLOT or otherwise).
 */

const info = inject("redisCluster");
const TRICKY_IDS = [
  "plain",
  "{tag}",
  "}{",
  "a:b",
  "{",
  "}",
  "{}x",
  "x{y}z",
  "ünï-✓-🚀",
  "é".repeat(512),
  "$gt",
  "a".repeat(512),
];

describe.skipIf(info === null)("cluster: one slot per script", () => {
  let admin: Cluster;
  const prefix = uid("slots");
  beforeAll(() => {
    admin = adminClient({ kind: "cluster", nodes: info?.nodes ?? [] }) as Cluster;
  });
  afterAll(async () => {
    await dropPrefix(admin, prefix);
    await admin.quit();
  });

  const slot = async (key: string): Promise<number> => Number(await admin.cluster("KEYSLOT", key));

  it("every key of an instance, its shard's sets and the keys built in scripts share one slot", async () => {
    const backend = new RedisBackend({ cluster: { nodes: info?.nodes ?? [] }, keyPrefix: prefix });
    try {
      for (const id of TRICKY_IDS) {
        const k = backend.layout.instance(id);
        const keys = [k.meta, k.ready, k.leased, k.ids, k.floor, k.timers, k.events, k.eventOrder];
        // What the shard scripts build in Lua from "{P:" .. shard .. "}:", and the instance
        // scripts from the instance key's base.
        keys.push(
          `${backend.layout.tagStart()}${k.shard}}:m:${id}`,
          `${backend.layout.tagStart()}${k.shard}}:floor`,
          `${backend.layout.tagStart()}${k.shard}}:timers`,
          backend.layout.finished(k.shard),
          `${k.base}done`,
          `${k.base}q:0123abcd`,
          `${k.base}e:${id}`,
          `${k.base}o:${id}`,
        );
        const slots = new Set(await Promise.all(keys.map(slot)));
        expect(slots.size, `keys of ${JSON.stringify(id)}`).toBe(1);
        expect([...slots][0]).toBe(await slot(`{${prefix}:${k.shard}}`));
      }
    } finally {
      await backend.close();
    }
  });

  it("the shards spread over more than one master", async () => {
    const backend = new RedisBackend({ cluster: { nodes: info?.nodes ?? [] }, keyPrefix: prefix });
    try {
      const slots = await Promise.all(backend.layout.allShards().map((s) => slot(backend.layout.ready(s))));
      expect(new Set(slots).size).toBe(backend.layout.shards);
      const ranges = (await admin.cluster("SLOTS")) as unknown as Array<[number, number, [string, number]]>;
      const owners = new Set(
        slots.map((s) => {
          const range = ranges.find(([lo, hi]) => s >= lo && s <= hi);
          return range ? `${range[2][0]}:${range[2][1]}` : "none";
        }),
      );
      expect(owners.has("none")).toBe(false);
      expect(owners.size).toBeGreaterThan(1);
    } finally {
      await backend.close();
    }
  });

  it("a mixed workload over 300 instances never fails (no CROSSSLOT, no MOVED leak)", async () => {
    const backend = new RedisBackend({ cluster: { nodes: info?.nodes ?? [] }, keyPrefix: prefix });
    try {
      const ids = [...TRICKY_IDS, ...Array.from({ length: 288 }, (_, i) => `${uid("w")}:{${i % 7}}`)];
      await Promise.all(
        ids.map((id, i) => backend.saveSnapshot(atTask(id, "t1", { updatedAt: 1_700_000_000_000 + i }))),
      );
      await Promise.all(ids.slice(0, 100).map((id) => backend.saveTaskResult(id, "side", text(id))));
      const claims = await Promise.all(
        ids.slice(100, 150).map((id) => backend.claimTask(id, "t1", "w1", 60_000)),
      );
      expect(claims.every((c) => c !== null)).toBe(true);
      await Promise.all(ids.slice(100, 120).map((id) => backend.extendTaskClaim(id, "t1", "w1", 60_000)));
      await Promise.all(ids.slice(100, 120).map((id) => backend.releaseTaskClaim(id, "t1", "w1")));
      const found = await backend.findAvailableTasks("w", 10_000);
      expect(found).toHaveLength(ids.length - 30);
      // (saveTaskResult moved the first 100 to the end: updatedAt = max(old, now).)
      expect(found.map((t) => t.instanceId).sort()).toEqual(ids.filter((_, i) => i < 120 || i >= 150).sort());
      expect(found.slice(0, 20).map((t) => t.instanceId)).toEqual(ids.slice(100, 120));
      const claimed = await backend.claimAvailableTasks("w2", 10_000, 60_000);
      expect(claimed.map((c) => c.instanceId)).toEqual(found.map((t) => t.instanceId));
      await Promise.all(ids.slice(0, 50).map((id) => backend.deleteSnapshot(id)));
      expect((await backend.listSnapshots()).sort()).toEqual(ids.slice(50).sort());
      const loaded = await Promise.all(ids.slice(50, 100).map((id) => backend.loadSnapshot(id)));
      expect(loaded.map((s) => s.instanceId)).toEqual(ids.slice(50, 100));
      // Retention: cancel (the finish-time index), the two reads, a purge over every shard.
      await Promise.all(ids.slice(50, 80).map((id) => backend.cancelWorkflow(id)));
      const results = await Promise.all(ids.slice(50, 80).map((id) => backend.loadTaskResult(id, "side")));
      expect(results.map((r) => new TextDecoder().decode(r ?? undefined))).toEqual(ids.slice(50, 80));
      await Promise.all(ids.slice(50, 80).map((id) => backend.loadTaskClaims(id)));
      const cutOff = Date.now() + 5_000;
      expect(await backend.purgeFinished({ finishedBefore: cutOff, limit: 10_000 })).toBe(30);
      expect((await backend.listSnapshots()).sort()).toEqual(ids.slice(80).sort());
    } finally {
      await backend.close();
    }
  }, 60_000);
});
