import { ErrorCode } from "@sayiir/persistence-core";
import { atTask, claimOrFail as claim, finished, text, uid } from "@sayiir/persistence-core/conformance";
import { Redis } from "ioredis";
import { describe, expect, it } from "vitest";
import { RedisBackend } from "../src/index.js";
import {
  adminClient,
  connection,
  dropPrefix,
  scriptCalls,
  targets as servers,
  standalone,
  type Target,
} from "./subject.js";

/*
 * completeTasks where the conformance kit does not look: how many scripts a call sends (one on a
 * standalone server, whatever the shards; one per shard on a cluster), a batch that spans several
 * slots with refused items among the accepted ones, and the ready / lease index after it.
 */

const targets: Array<[string, Target | null]> = [
  ["standalone", servers.standalone],
  ["cluster", servers.cluster],
];

/** The kit's claimOrFail with this file's ttl of a minute. */
const claimOrFail = (backend: RedisBackend, id: string, task: string, worker: string) =>
  claim(backend, id, task, worker, 60_000);

for (const [name, target] of targets) {
  describe.skipIf(target === null)(`completeTasks (${name})`, () => {
    const t = target as Target;

    it("a batch over several shards: one script per call on standalone, one per shard on a cluster; each item judged alone", async () => {
      const keyPrefix = uid("complete");
      // Counts the completion script's calls, with the key each one is routed by.
      const completions = scriptCalls("completeTasks");
      // Standalone with 4 shards: the one script covers all of them.
      const backend = new RedisBackend({
        ...connection(t),
        keyPrefix,
        ...(t.kind === "standalone" ? { shards: 4 } : {}),
        faults: completions.faults,
      });
      const admin = adminClient(t);
      try {
        const plain = Array.from({ length: 8 }, (_, i) => `plain-${i}-${uid()}`);
        for (const id of plain) await backend.saveSnapshot(atTask(id, "t1"));
        const twoTasks = uid("two");
        await backend.saveSnapshot(atTask(twoTasks, "a"));
        const stale = uid("stale");
        await backend.saveSnapshot(atTask(stale, "t1"));
        const missing = uid("missing");
        const done = finished(uid("done"), { kind: "Completed", finalOutput: text("x") });
        await backend.saveSnapshot(done);

        const claims = await Promise.all(plain.map((id) => claimOrFail(backend, id, "t1", "w")));
        const onA = await claimOrFail(backend, twoTasks, "a", "w");
        const onB = await claimOrFail(backend, twoTasks, "b", "w");
        const lost = await claimOrFail(backend, stale, "t1", "w");
        await backend.releaseTaskClaim(stale, "t1", "w");
        await claimOrFail(backend, stale, "t1", "other");
        const onMissing = await claimOrFail(backend, missing, "t1", "w");
        const onDone = await claimOrFail(backend, done.instanceId, "t1", "w");

        const batch = [...claims.slice(0, 4), onA, lost, onMissing, ...claims.slice(4), onDone, onB];
        const shards = new Set(batch.map((c) => backend.layout.shardOf(c.instanceId)));
        expect(shards.size).toBeGreaterThan(2);
        const routed = completions.routed;
        expect(routed).toEqual([]);
        const outcomes = await backend.completeTasks(
          batch.map((claim) => ({ claim, output: text(`${claim.instanceId}/${claim.taskId}`) })),
        );

        expect(routed).toHaveLength(t.kind === "standalone" ? 1 : shards.size);
        if (t.kind === "cluster") {
          // Each script is routed by a key of its own shard.
          const routedShards = routed.map((key) => Number(/^\{[^:]+:(\d+)\}/.exec(key)?.[1]));
          expect(new Set(routedShards)).toEqual(shards);
        }
        const codes = outcomes.map((o) => (o === null ? null : o.code));
        expect(codes).toEqual([
          null,
          null,
          null,
          null,
          null,
          ErrorCode.ClaimLost,
          ErrorCode.NotFound,
          null,
          null,
          null,
          null,
          ErrorCode.Conflict,
          null,
        ]);
        for (const claim of [...claims, onA, onB]) {
          const loaded = await backend.loadSnapshot(claim.instanceId);
          if (loaded.state.kind !== "InProgress") throw new Error("not InProgress");
          expect(new TextDecoder().decode(loaded.state.completedTasks[claim.taskId]?.output)).toBe(
            `${claim.instanceId}/${claim.taskId}`,
          );
        }
        // Refused items kept their claims (the stale one: the other worker's).
        expect(await backend.claimTask(stale, "t1", "probe", 1000)).toBeNull();
        expect(await backend.claimTask(missing, "t1", "probe", 1000)).toBeNull();
        expect(await backend.claimTask(done.instanceId, "t1", "probe", 1000)).toBeNull();
        // Nothing completed is offered again; the index holds only the stale instance (claimed).
        expect(await backend.findAvailableTasks("w", 100)).toEqual([]);
        const sizes = async (key: (s: number) => string) =>
          (await Promise.all(backend.layout.allShards().map((s) => admin.zcard(key(s))))).reduce(
            (a, b) => a + b,
            0,
          );
        expect(await sizes((s) => backend.layout.ready(s))).toBe(0);
        expect(await sizes((s) => backend.layout.leased(s))).toBe(1);
      } finally {
        await backend.close();
        await dropPrefix(admin, keyPrefix);
        admin.disconnect();
      }
    });

    it("finishing a task other than the position keeps the instance ready, with the new updatedAt", async () => {
      const keyPrefix = uid("complete-side");
      const backend = new RedisBackend({ ...connection(t), keyPrefix });
      try {
        const [side, other] = [uid("side"), uid("other")];
        await backend.saveSnapshot(atTask(side, "main", { updatedAt: 1_000 }));
        await backend.saveSnapshot(atTask(other, "main", { updatedAt: 2_000 }));
        const claim = await claimOrFail(backend, side, "side-task", "w");
        const before = Date.now();
        expect(await backend.completeTasks([{ claim, output: text("side") }])).toEqual([null]);
        // side's updatedAt moved to now, so it is now the younger one.
        const found = await backend.findAvailableTasks("w", 10);
        expect(found.map((f) => [f.instanceId, f.taskId])).toEqual([
          [other, "main"],
          [side, "main"],
        ]);
        expect((await backend.loadSnapshot(side)).updatedAt).toBeGreaterThanOrEqual(before - 2_000);
        // Its input is now the side task's output (lastCompletedTaskId).
        expect(new TextDecoder().decode(found[1]?.input)).toBe("side");
      } finally {
        await backend.close();
        const admin = adminClient(t);
        await dropPrefix(admin, keyPrefix);
        admin.disconnect();
      }
    });
  });
}

describe.skipIf(standalone === null)("one script per call on standalone (MONITOR)", () => {
  it("claim-next, completion and discovery over 4 shards are one EVALSHA each", async () => {
    const url = standalone!.url;
    const keyPrefix = uid("one-script");
    const backend = new RedisBackend({ url, keyPrefix, shards: 4 });
    const admin = new Redis(url);
    let monitor: Redis | undefined;
    try {
      const ids = Array.from({ length: 12 }, (_, i) => `${String(i).padStart(2, "0")}-${uid()}`);
      for (const [i, id] of ids.entries())
        await backend.saveSnapshot(atTask(id, "t1", { updatedAt: 1_000 + i }));
      expect(new Set(ids.slice(0, 8).map((id) => backend.layout.shardOf(id))).size).toBeGreaterThan(1);
      // Loads the scripts on the connection (the first call of each is an EVAL).
      const warm = await backend.claimAvailableTasks("w", 1, 60_000);
      await backend.completeTasks(warm.map(({ claim }) => ({ claim, output: text("warm") })));
      await backend.findAvailableTasks("w", 1);
      monitor = await new Redis(url).monitor();
      const seen: string[] = [];
      monitor.on("monitor", (_time: string, args: string[]) => {
        if (args.some((a) => typeof a === "string" && a.includes(keyPrefix)))
          seen.push(String(args[0]).toLowerCase());
      });
      await new Promise((r) => setTimeout(r, 50));
      const claimed = await backend.claimAvailableTasks("w", 8, 60_000);
      // The global oldest, in order, across the shards.
      expect(claimed.map((c) => c.instanceId)).toEqual(ids.slice(1, 9));
      const outcomes = await backend.completeTasks(
        claimed.map(({ claim }) => ({ claim, output: text("out") })),
      );
      expect(outcomes).toEqual(claimed.map(() => null));
      expect((await backend.findAvailableTasks("w", 10)).map((f) => f.instanceId)).toEqual(ids.slice(9));
      await new Promise((r) => setTimeout(r, 100));
      // MONITOR also lists the commands each script runs; only EVALSHA / EVAL are round trips.
      expect(seen.filter((c) => c === "evalsha" || c === "eval")).toEqual(["evalsha", "evalsha", "evalsha"]);
      // Per task: completion reads and writes the instance hash once each.
      expect(seen.filter((c) => c === "hset")).toHaveLength(8 + 8);
    } finally {
      monitor?.disconnect();
      await dropPrefix(admin, keyPrefix);
      await admin.quit();
      await backend.close();
    }
  });
});
