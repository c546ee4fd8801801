import { ErrorCode } from "@sayiir/persistence-core";
import { atTask, claimOrFail, inProgress, sleep, uid } from "@sayiir/persistence-core/conformance";
import { type Cluster, type Redis, Redis as RedisClient } from "ioredis";
import { afterEach, describe, expect, it } from "vitest";
import type { RedisBackendOptions } from "../src/index.js";
import { FieldPrefix, MetaField } from "../src/layout.js";
import { decodeAttempts, encodeAttempts } from "../src/replies.js";
import { adminClient, createSubject, type RedisSubject, targets as servers, type Target } from "./subject.js";

/*
 * What the conformance kit cannot see of scheduling on Redis: the ready set per (shard, queue)
 * and its scores, the timer set holding future runAt/retryAt, the attempts field, records
 * written before issue 16 (no schedule fields), and a second run of failTasks (lost reply).
 */

const T0 = 1_700_000_000_000;

describe("attempts field format (no server needed)", () => {
  it("round-trips null, absent and present values, and an error holding '|'", () => {
    for (const a of [
      { count: 1, lastError: null, lastFailedAt: null },
      { count: 2, lastError: "a|b|c", lastFailedAt: T0, retryAt: T0 + 5 },
      { count: 3, lastError: "", lastFailedAt: T0, retryAt: null },
    ]) {
      expect(decodeAttempts(encodeAttempts(a))).toEqual(a);
    }
    expect(encodeAttempts({ count: 2, lastError: "x", lastFailedAt: 5, retryAt: null })).toBe("2|5|n|=x");
  });
});

const targets: Array<[string, Target | null]> = [
  ["standalone", servers.standalone],
  ["cluster", servers.cluster],
];

for (const [name, target] of targets) {
  describe.skipIf(target === null)(`scheduling records (${name})`, () => {
    const t = target as Target;
    const opened: RedisSubject[] = [];
    const subject = async (extra: Partial<RedisBackendOptions> = {}): Promise<RedisSubject> => {
      const s = await createSubject(
        {},
        { ...(t.kind === "standalone" ? { url: t.url } : { cluster: { nodes: t.nodes } }), ...extra },
      );
      opened.push(s);
      return s;
    };
    const admin = (): Redis | Cluster => adminClient(t);
    afterEach(async () => {
      for (const s of opened.splice(0)) {
        await s.backend.close();
        await s.cleanup();
      }
    });

    it("one ready set per (shard, queue), score = readyAt + (priority - 3) x agingMs; a future runAt waits in the timer set", async () => {
      const { backend } = await subject({ agingMs: 1_000 });
      const a = admin();
      const plain = uid("plain");
      const gpu = uid("gpu");
      const later = uid("later");
      await backend.saveSnapshot(atTask(plain, "t1", { updatedAt: T0 }));
      await backend.saveSnapshot(
        inProgress(gpu, {
          updatedAt: T0,
          position: { kind: "AtTask", taskId: "t1", priority: 1, queue: "gpu" },
        }),
      );
      const runAt = Date.now() + 60_000;
      await backend.saveSnapshot(
        inProgress(later, { position: { kind: "AtTask", taskId: "t1", runAt, priority: 5 } }),
      );
      const kp = backend.layout.instance(plain);
      const kg = backend.layout.instance(gpu);
      const kl = backend.layout.instance(later);
      expect(await a.zscore(kp.ready, plain)).toBe(String(T0));
      expect(await a.zscore(backend.layout.queueReady(kg.shard, "gpu"), gpu)).toBe(String(T0 - 2_000));
      expect(await a.zscore(kg.ready, gpu)).toBeNull();
      expect(await a.hmget(kg.meta, MetaField.queue, MetaField.priority, MetaField.offset)).toEqual([
        "gpu",
        "1",
        "-2000",
      ]);
      // Defaults write no field at all.
      expect(
        await a.hmget(kp.meta, MetaField.queue, MetaField.priority, MetaField.offset, MetaField.due),
      ).toEqual([null, null, null, null]);
      expect(await a.zscore(kl.timers, later)).toBe(String(runAt));
      expect(await a.zscore(kl.ready, later)).toBeNull();
      expect(await a.hget(kl.meta, MetaField.due)).toBe(String(runAt));
      // Discovery of "default" never reads the gpu set, and the other way round.
      expect(
        (await backend.findAvailableTasks("w", 10, { queues: ["gpu"] })).map((x) => x.instanceId),
      ).toEqual([gpu]);
      // Moving to another queue leaves the old queue's set.
      await backend.saveSnapshot(atTask(gpu, "t1", { updatedAt: T0 + 1 }));
      expect(await a.zscore(backend.layout.queueReady(kg.shard, "gpu"), gpu)).toBeNull();
      expect(await a.zscore(kg.ready, gpu)).toBe(String(T0 + 1));
    });

    it("failTasks writes the attempts field and the due time (timer set), or 'h' (held: in no set)", async () => {
      const { backend } = await subject();
      const a = admin();
      const id = uid();
      const k = backend.layout.instance(id);
      await backend.saveSnapshot(atTask(id, "t1", { updatedAt: T0 }));
      let claim = await claimOrFail(backend, id, "t1", "worker-1", 60_000);
      const retryAt = Date.now() + 60_000;
      expect(await backend.failTasks([{ claim, error: "boom|x", retryAt }])).toEqual([null]);
      const raw = await a.hget(k.meta, `${FieldPrefix.attempts}t1`);
      expect(raw).toMatch(new RegExp(`^1\\|\\d+\\|${retryAt}\\|=boom\\|x$`));
      expect(await a.hget(k.meta, MetaField.due)).toBe(String(retryAt));
      expect(await a.zscore(k.timers, id)).toBe(String(retryAt));
      expect(await a.zscore(k.ready, id)).toBeNull();
      claim = await claimOrFail(backend, id, "t1", "worker-2", 60_000);
      expect(await backend.failTasks([{ claim, error: "fatal", retryAt: null }])).toEqual([null]);
      expect(await a.hget(k.meta, MetaField.due)).toBe("h");
      for (const key of [k.ready, k.leased, k.timers]) expect(await a.zscore(key, id)).toBeNull();
      expect((await backend.loadSnapshot(id)).attempts?.t1).toMatchObject({
        count: 2,
        lastError: "fatal",
        retryAt: null,
      });
      // A save that moves the position clears the hold (the new task has no attempts).
      await backend.saveSnapshot(atTask(id, "t2", { updatedAt: T0 + 5 }));
      expect(await a.hget(k.meta, MetaField.due)).toBeNull();
      expect(await a.zscore(k.ready, id)).toBe(String(T0 + 5));
    });

    it("a second run of the same failTasks call (its reply lost) answers OK and counts once", async () => {
      let twice = true;
      const { backend } = await subject({
        faults: {
          aroundScript: async (script, _args, run) => {
            if (script !== "failTasks" || !twice) return run();
            twice = false;
            await run();
            return run();
          },
        },
      });
      const id = uid();
      await backend.saveSnapshot(atTask(id, "t1"));
      const claim = await claimOrFail(backend, id, "t1", "worker-1", 60_000);
      expect(await backend.failTasks([{ claim, error: "e", retryAt: null }])).toEqual([null]);
      expect((await backend.loadSnapshot(id)).attempts?.t1?.count).toBe(1);
      // Another call with the same (now released) claim is refused.
      expect((await backend.failTasks([{ claim, error: "e", retryAt: null }]))[0]?.code).toBe(
        ErrorCode.ClaimLost,
      );
    });

    it("a record written before issue 16 (no queue, priority, offset, due fields) is queue 'default', priority 3", async () => {
      const { backend } = await subject({ agingMs: 1_000 });
      const a = admin();
      const p = uid("old");
      const old = `${p}-old`;
      const fresh = `${p}-new`;
      await backend.saveSnapshot(atTask(old, "t1", { updatedAt: T0 + 10 }));
      await backend.saveSnapshot(atTask(fresh, "t1", { updatedAt: T0 + 20 }));
      const k = backend.layout.instance(old);
      // What the previous release wrote: the same hash without the new fields, score = updatedAt.
      await a.hdel(k.meta, MetaField.queue, MetaField.priority, MetaField.offset, MetaField.due);
      await a.zadd(k.ready, T0 + 10, old);
      const found = (await backend.findAvailableTasks("w", 100)).filter((x) => x.instanceId.startsWith(p));
      expect(found.map((x) => [x.instanceId, x.priority, x.queue, x.attempt])).toEqual([
        [old, 3, "default", 1],
        [fresh, 3, "default", 1],
      ]);
      const claimed = (await backend.claimAvailableTasks("w", 100, 60_000)).filter((x) =>
        x.instanceId.startsWith(p),
      );
      expect(claimed.map((x) => x.instanceId)).toEqual([old, fresh]);
      expect((await backend.loadSnapshot(old)).attempts).toBeUndefined();
    });

    it("a task is due at the later of its runAt and its retryAt (saveSnapshot and failTasks)", async () => {
      const { backend } = await subject();
      const a = admin();
      const p = uid("late");
      const runAt = Date.now() + 3_600_000;
      const position = { kind: "AtTask" as const, taskId: "t1", runAt };
      await backend.saveSnapshot({
        ...inProgress(`${p}-a`, { position }),
        attempts: { t1: { count: 1, lastError: "x", lastFailedAt: T0, retryAt: T0 } },
      });
      const ka = backend.layout.instance(`${p}-a`);
      expect(await a.hget(ka.meta, MetaField.due)).toBe(String(runAt));
      expect(await a.zscore(ka.timers, `${p}-a`)).toBe(String(runAt));
      // A failure whose retry is already past does not make the task due before its runAt.
      await backend.saveSnapshot(inProgress(`${p}-b`, { position }));
      const claim = await claimOrFail(backend, `${p}-b`, "t1", "worker-1", 60_000);
      expect(await backend.failTasks([{ claim, error: "e", retryAt: Date.now() - 1_000 }])).toEqual([null]);
      const kb = backend.layout.instance(`${p}-b`);
      expect(await a.hget(kb.meta, MetaField.due)).toBe(String(runAt));
      const mine = async () =>
        (await backend.findAvailableTasks("w", 100)).filter((x) => x.instanceId.startsWith(p));
      expect(await mine()).toEqual([]);
      // A later retry wins over an earlier runAt.
      const past = Date.now() - 5_000;
      const retryAt = Date.now() + 3_600_000;
      await backend.saveSnapshot({
        ...inProgress(`${p}-c`, { position: { kind: "AtTask", taskId: "t1", runAt: past } }),
        attempts: { t1: { count: 1, lastError: "x", lastFailedAt: T0, retryAt } },
      });
      expect(await a.hget(backend.layout.instance(`${p}-c`).meta, MetaField.due)).toBe(String(retryAt));
      expect(await mine()).toEqual([]);
    });

    it("due timers of another queue never delay a queue's own (one timer set per shard and queue)", async () => {
      const { backend } = await subject();
      const p = uid("tq");
      const base = Date.now() + 300;
      for (let i = 0; i < 5; i++) {
        await backend.saveSnapshot(
          inProgress(`${p}-b${i}`, { position: { kind: "AtTask", taskId: "t1", runAt: base, queue: "qb" } }),
        );
      }
      await backend.saveSnapshot(
        inProgress(`${p}-a`, { position: { kind: "AtTask", taskId: "t1", runAt: base + 50, queue: "qa" } }),
      );
      const k = backend.layout.instance(`${p}-a`);
      expect(await admin().zscore(backend.layout.timers(k.shard, "qa"), `${p}-a`)).toBe(String(base + 50));
      await sleep(base + 100 - Date.now());
      const got: string[] = [];
      for (let i = 0; i < 3; i++) {
        for (const x of await backend.claimAvailableTasks("w", 1, 60_000, { queues: ["qa"] }))
          got.push(x.instanceId);
      }
      expect(got).toEqual([`${p}-a`]);
    });

    it("due timers are served by effective time: a due priority-1 task beats earlier priority-5 ones", async () => {
      const { backend } = await subject({ agingMs: 1_000 });
      const p = uid("tp");
      const base = Date.now() + 300;
      for (let i = 0; i < 12; i++) {
        await backend.saveSnapshot(
          inProgress(`${p}-5-${String(i).padStart(2, "0")}`, {
            position: { kind: "AtTask", taskId: "t1", runAt: base + i, priority: 5 },
          }),
        );
      }
      await backend.saveSnapshot(
        inProgress(`${p}-1`, { position: { kind: "AtTask", taskId: "t1", runAt: base + 20, priority: 1 } }),
      );
      await sleep(base + 100 - Date.now());
      const found = await backend.findAvailableTasks("w", 1);
      expect(found.map((x) => x.instanceId)).toEqual([`${p}-1`]);
      const claimed = await backend.claimAvailableTasks("w", 1, 60_000);
      expect(claimed.map((x) => x.instanceId)).toEqual([`${p}-1`]);
    });

    it("claim-next with several queues merges their ready sets by score, then id", async () => {
      const { backend } = await subject({ agingMs: 1_000 });
      const p = uid("merge");
      const save = (id: string, updatedAt: number, queue: string, priority = 3) =>
        backend.saveSnapshot(
          inProgress(`${p}-${id}`, {
            updatedAt,
            position: { kind: "AtTask", taskId: "t1", queue, priority },
          }),
        );
      await save("a", T0 + 3_000, "q1");
      await save("b", T0 + 1_000, "q2");
      await save("c", T0 + 5_000, "q2", 1);
      await save("d", T0 + 2_000, "q1", 4);
      await sleep(10);
      const claimed = await backend.claimAvailableTasks("w", 10, 60_000, { queues: ["q1", "q2"] });
      // Keys: b 1000, c 5000 - 2000 = 3000, a 3000, d 2000 + 1000 = 3000 -> b, then a, c, d by id.
      expect(claimed.map((x) => x.instanceId)).toEqual([`${p}-b`, `${p}-a`, `${p}-c`, `${p}-d`]);
    });
  });
}

describe.skipIf(servers.standalone === null)("queues cost (standalone, MONITOR)", () => {
  it("claim-next and discovery of one queue never touch another queue's ready set", async () => {
    const url = (servers.standalone as { url: string }).url;
    const s = await createSubject({}, { url, shards: 2 });
    let monitor: Redis | undefined;
    try {
      for (let i = 0; i < 6; i++) {
        const queue = i % 2 === 0 ? "gpu" : "default";
        await s.backend.saveSnapshot(
          inProgress(`${i}-${uid()}`, {
            updatedAt: T0 + i,
            position: { kind: "AtTask", taskId: "t1", queue },
          }),
        );
      }
      await s.backend.findAvailableTasks("w", 1); // loads the layout and a script
      await s.backend.claimAvailableTasks("w", 1, 60_000); // loads the script on the connection
      monitor = await new RedisClient(url).monitor();
      const seen: string[][] = [];
      monitor.on("monitor", (_time: string, args: string[]) => {
        if (args.some((a) => typeof a === "string" && a.includes(s.keyPrefix))) seen.push(args.map(String));
      });
      await sleep(50);
      expect(await s.backend.claimAvailableTasks("w", 10, 60_000)).toHaveLength(2);
      expect(await s.backend.findAvailableTasks("w", 10)).toHaveLength(0);
      await sleep(100);
      expect(seen.length).toBeGreaterThan(0);
      expect(seen.filter((a) => a.some((x) => x.includes("}:ready:")))).toEqual([]);
      seen.length = 0;
      expect(await s.backend.claimAvailableTasks("w", 10, 60_000, { queues: ["gpu"] })).toHaveLength(3);
      await sleep(100);
      expect(seen.filter((a) => a.some((x) => x.endsWith("}:ready")))).toEqual([]);
    } finally {
      monitor?.disconnect();
      await s.backend.close();
      await s.cleanup();
    }
  });
});
