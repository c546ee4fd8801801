import { atTask, finished, patternBytes, text, uid } from "@sayiir/persistence-core/conformance";
import { Cluster, type Redis } from "ioredis";
import { describe, expect, it } from "vitest";
import { RedisBackend } from "../src/index.js";
import { adminClient, connection, dropPrefix, targets as servers, type Target } from "./subject.js";

/*
 * Retention and reads where the conformance kit does not look: two clients purging one store at
 * once, what loadTaskResult and loadTaskClaims transfer beside a large output (bytes read on the
 * backend's own sockets, a measurement, not a timing), and the migration of a store whose
 * finished instances predate the finish-time index.
 */

const targets: Array<[string, Target | null]> = [
  ["standalone", servers.standalone],
  ["cluster", servers.cluster],
];

/** Bytes the backend's client has read from Redis so far, over all its connections. */
function bytesRead(backend: RedisBackend): number {
  const client = backend.client;
  const nodes: Redis[] = client instanceof Cluster ? client.nodes("all") : [client];
  return nodes.reduce((sum, node) => sum + (node.stream?.bytesRead ?? 0), 0);
}

/** The bytes `read` makes the backend read from Redis. */
async function transferOf(backend: RedisBackend, read: () => Promise<unknown>): Promise<number> {
  const before = bytesRead(backend);
  await read();
  return bytesRead(backend) - before;
}

/** Purges until a call deletes nothing; the total this client deleted. */
async function drain(backend: RedisBackend, finishedBefore: number): Promise<number> {
  let total = 0;
  for (;;) {
    const n = await backend.purgeFinished({ finishedBefore, limit: 7 });
    if (n === 0) return total;
    total += n;
  }
}

/** Every key of the prefix (on every master of a cluster), but the expiring request records. */
async function keysOf(admin: Redis | Cluster, prefix: string): Promise<string[]> {
  if (admin instanceof Cluster) await admin.ping();
  const nodes = admin instanceof Cluster ? admin.nodes("master") : [admin];
  const keys: string[] = [];
  for (const node of nodes) keys.push(...(await node.keys(`{${prefix}:*`)));
  return keys.filter((key) => !/^\{[^}]*\}:q:/.test(key)).sort();
}

for (const [name, target] of targets) {
  describe.skipIf(target === null)(`retention and reads (${name})`, () => {
    const t = target as Target;
    // Standalone with 4 shards: one script covers them all; the cluster: one per shard.
    const options = (keyPrefix: string) => ({
      ...connection(t),
      keyPrefix,
      ...(t.kind === "standalone" ? { shards: 4 } : {}),
    });

    it("two clients purging at once: their counts add up to what finished, and nothing of it is left", async () => {
      const keyPrefix = uid("purge");
      const one = new RedisBackend(options(keyPrefix));
      const two = new RedisBackend(options(keyPrefix));
      const admin = adminClient(t);
      try {
        const done: string[] = [];
        for (let i = 0; i < 40; i++) {
          const completed = finished(`c-${i}-${uid()}`, { kind: "Completed", finalOutput: text("ok") });
          const failed = finished(`f-${i}-${uid()}`, { kind: "Failed", error: "boom" });
          const cancelled = `x-${i}-${uid()}`;
          await Promise.all([one.saveSnapshot(completed), one.saveSnapshot(failed)]);
          await one.saveSnapshot(atTask(cancelled, "t2", { completed: { t1: text("one") } }));
          await one.claimTask(cancelled, "t2", "w", 60_000);
          await one.sendEvent(cancelled, "never", text("late"));
          await one.cancelWorkflow(cancelled);
          done.push(completed.instanceId, failed.instanceId, cancelled);
        }
        const running = Array.from({ length: 5 }, (_, i) => `r-${i}-${uid()}`);
        for (const id of running) {
          await one.saveSnapshot(atTask(id, "t1"));
          await one.sendEvent(id, "kept", text("payload"));
        }
        const cutOff = Date.now() + 5_000;

        const [byOne, byTwo] = await Promise.all([drain(one, cutOff), drain(two, cutOff)]);
        expect(byOne + byTwo).toBe(done.length);
        expect((await one.listSnapshots()).sort()).toEqual(running.sort());
        expect(await two.purgeFinished({ finishedBefore: cutOff, limit: 100 })).toBe(0);
        // Nothing of the purged instances is left: only the running ones' hashes and events,
        // the shards' ids sets and floors, their ready sets, the store record.
        const layout = one.layout;
        const expected = new Set([layout.record()]);
        for (const id of running) {
          const k = layout.instance(id);
          for (const key of [k.meta, k.events, k.eventOrder, k.ids, k.ready]) expected.add(key);
        }
        for (const id of done) expected.add(layout.instance(id).floor);
        expect(await keysOf(admin, keyPrefix)).toEqual([...expected].sort());
      } finally {
        await Promise.all([one.close(), two.close()]);
        await dropPrefix(admin, keyPrefix);
        await admin.quit();
      }
    });

    it("loadTaskResult of a 1 KiB output beside a 20 MiB one reads about 1 KiB from Redis; loadTaskClaims none of them", async () => {
      const keyPrefix = uid("reads");
      const backend = new RedisBackend(options(keyPrefix));
      const admin = adminClient(t);
      try {
        const id = uid();
        const small = patternBytes(1024, 3);
        const big = patternBytes(20 << 20, 5);
        await backend.saveSnapshot(atTask(id, "t3", { completed: { small, big }, last: "big" }));
        await backend.claimTask(id, "t3", "w", 60_000);

        const one = await transferOf(backend, async () => {
          expect(Buffer.from((await backend.loadTaskResult(id, "small")) ?? []).equals(small)).toBe(true);
        });
        expect(one).toBeGreaterThanOrEqual(1024);
        expect(one).toBeLessThan(4096);
        const claims = await transferOf(backend, async () => {
          expect(await backend.loadTaskClaims(id)).toHaveLength(1);
        });
        expect(claims).toBeLessThan(1024);
        // The same measure sees the large output when it is the one asked for.
        const large = await transferOf(backend, () => backend.loadTaskResult(id, "big"));
        expect(large).toBeGreaterThanOrEqual(20 << 20);
      } finally {
        await backend.close();
        await dropPrefix(admin, keyPrefix);
        await admin.quit();
      }
    });

    it("a store finished before the finish-time index: the first purge indexes those instances by their updatedAt", async () => {
      const keyPrefix = uid("migrate");
      const writer = new RedisBackend(options(keyPrefix));
      const admin = adminClient(t);
      try {
        const hourAgo = Date.now() - 3_600_000;
        const old = {
          ...finished(uid("old"), { kind: "Completed", finalOutput: text("old") }),
          updatedAt: hourAgo,
        };
        const recent = {
          ...finished(uid("recent"), { kind: "Failed", error: "late" }),
          updatedAt: Date.now(),
        };
        const running = uid("running");
        await writer.saveSnapshot(old);
        await writer.saveSnapshot(recent);
        await writer.saveSnapshot(atTask(running, "t1", { updatedAt: hourAgo }));
        await writer.close();
        // What a store written before this version looks like: no finish time, no index, no mark.
        const layout = writer.layout;
        for (const id of [old.instanceId, recent.instanceId]) {
          const k = layout.instance(id);
          await admin.hdel(k.meta, "e");
          await admin.del(layout.finished(k.shard));
        }
        await admin.hdel(layout.record(), "finishIndex");

        const backend = new RedisBackend(options(keyPrefix));
        try {
          // A terminal save before the migration gives the instance the time the migration would.
          await backend.saveSnapshot(old);
          const oldKeys = layout.instance(old.instanceId);
          expect(await admin.hget(oldKeys.meta, "e")).toBe(String(hourAgo));
          expect(await admin.zscore(layout.finished(oldKeys.shard), old.instanceId)).toBe(String(hourAgo));
          // Finished within the last half hour by the store's clock: only `old` is before the cut-off.
          expect(await backend.purgeFinished({ finishedBefore: Date.now() - 1_800_000, limit: 100 })).toBe(1);
          expect((await backend.listSnapshots()).sort()).toEqual([recent.instanceId, running].sort());
          expect(await admin.hget(layout.record(), "finishIndex")).toBe("1");
          const k = layout.instance(recent.instanceId);
          expect(await admin.zscore(layout.finished(k.shard), recent.instanceId)).toBe(
            String(recent.updatedAt),
          );
          expect(await backend.purgeFinished({ finishedBefore: Date.now() + 5_000, limit: 100 })).toBe(1);
          expect(await backend.listSnapshots()).toEqual([running]);
        } finally {
          await backend.close();
        }
      } finally {
        await dropPrefix(admin, keyPrefix);
        await admin.quit();
      }
    });
  });
}
