import {
  decodeSnapshotHeader,
  ErrorCode,
  encodeSnapshotHeader,
  ValidationError,
} from "@sayiir/persistence-core";
import { atTask, finished, rejection, text, uid } from "@sayiir/persistence-core/conformance";
import { Cluster, Redis } from "ioredis";
import { describe, expect, inject, it } from "vitest";
import { fnv1a, MetaField, RedisBackend } from "../src/index.js";
import type { FaultHooks } from "../src/scripts/index.js";
import { adminClient, connection, dropPrefix, targets as servers, type Target } from "./subject.js";

describe("options (no server needed)", () => {
  it("refuses a key prefix that would break the hash tag, and ambiguous connection options", () => {
    for (const keyPrefix of ["", "a{b", "a}b", "x\0"]) {
      expect(() => new RedisBackend({ url: "redis://127.0.0.1:1", keyPrefix })).toThrow(ValidationError);
    }
    expect(() => new RedisBackend({})).toThrow(ValidationError);
    expect(() => new RedisBackend({ url: "redis://127.0.0.1:1", redis: {} })).toThrow(ValidationError);
    expect(() => new RedisBackend({ url: "redis://127.0.0.1:1", shards: 0 })).toThrow(ValidationError);
    expect(() => new RedisBackend({ redis: { keyPrefix: "app:", lazyConnect: true } })).toThrow(/keyPrefix/);
  });

  it("hashes ids to shards stably (FNV-1a of the UTF-8 bytes)", () => {
    expect(fnv1a("")).toBe(0x811c9dc5);
    expect(fnv1a("a")).toBe(0xe40c292c);
    expect(fnv1a("foobar")).toBe(0xbf9cf968);
  });

  it("a password in the URL never shows in an error", async () => {
    const backend = new RedisBackend({
      url: "redis://user:s3cret-pw@127.0.0.1:1",
      operationTimeoutMs: 300,
      redis: undefined,
    });
    const error = await rejection(backend.listSnapshots());
    expect(error).toMatchObject({ code: ErrorCode.Backend });
    expect(String((error as Error).message)).not.toContain("s3cret-pw");
    await backend.close();
  });

  it("scrubs a URL password in both its percent-encoded and decoded forms, cluster seed URLs included", async () => {
    const encoded = "p%40ss%2Fw0rd%3A";
    const decoded = "p@ss/w0rd:";
    // A driver error that quotes the password both ways (as a URL or a config dump might), from
    // every script (the first operation reads the layout record, then loads).
    const faults: FaultHooks = {
      aroundScript: () =>
        Promise.reject(new Error(`cannot connect to redis://:${encoded}@host (password ${decoded})`)),
    };
    const leaky = async (backend: RedisBackend) => {
      const error = await rejection(backend.loadSnapshot("x"));
      expect(error).toMatchObject({ code: ErrorCode.Backend });
      const message = String((error as Error).message);
      expect(message).toContain("cannot connect");
      expect(message).not.toContain(encoded);
      expect(message).not.toContain(decoded);
      await backend.close();
    };
    await leaky(
      new RedisBackend({ url: `redis://user:${encoded}@127.0.0.1:1`, operationTimeoutMs: 300, faults }),
    );
    await leaky(
      new RedisBackend({
        cluster: {
          nodes: [`redis://:${encoded}@127.0.0.1:1`],
          options: { lazyConnect: true },
        },
        operationTimeoutMs: 300,
        faults,
      }),
    );
  });
});

const targets: Array<[string, Target | null]> = [
  ["standalone", servers.standalone],
  ["cluster", servers.cluster],
];

for (const [name, target] of targets) {
  describe.skipIf(target === null)(`clients and prefixes (${name})`, () => {
    const t = target as Target;

    it("close() leaves a user-provided client open", async () => {
      const client: Redis | Cluster = t.kind === "standalone" ? new Redis(t.url) : new Cluster(t.nodes);
      const keyPrefix = uid("own");
      try {
        const backend = new RedisBackend({ client, keyPrefix });
        await backend.saveSnapshot(atTask(uid(), "t1"));
        await backend.close();
        expect(client.status).toBe("ready");
        expect(await client.ping()).toBe("PONG");
        // A second backend on the same client works, and sees the data.
        const again = new RedisBackend({ client, keyPrefix });
        expect(await again.findAvailableTasks("w", 10)).toHaveLength(1);
        await again.close();
        await dropPrefix(client, keyPrefix);
      } finally {
        await client.quit();
      }
    });

    it("close() closes a client the backend opened", async () => {
      const backend = new RedisBackend({ ...connection(t), keyPrefix: uid("owned") });
      await backend.listSnapshots();
      await backend.close();
      expect(backend.client.status).toBe("end");
    });

    it("key prefixes isolate applications sharing one Redis", async () => {
      const pa = uid("app-a");
      const pb = uid("app-b");
      const a = new RedisBackend({ ...connection(t), keyPrefix: pa });
      const b = new RedisBackend({ ...connection(t), keyPrefix: pb });
      try {
        const id = "same-id";
        await a.saveSnapshot(atTask(id, "t1", { initialInput: text("from-a") }));
        expect(await b.listSnapshots()).toEqual([]);
        expect(await b.findAvailableTasks("w", 10)).toEqual([]);
        expect(await rejection(b.loadSnapshot(id))).toMatchObject({ code: ErrorCode.NotFound });
        const claim = await a.claimTask(id, "t1", "w", 60_000);
        expect(claim).not.toBeNull();
        // The same (instance, task) under another prefix is a different claim.
        expect(await b.claimTask(id, "t1", "w", 60_000)).not.toBeNull();
        await b.saveSnapshot(atTask(id, "t2"));
        expect((await a.findAvailableTasks("w", 10)).length).toBe(0);
        expect((await b.findAvailableTasks("w", 10)).map((x) => x.taskId)).toEqual(["t2"]);
      } finally {
        await a.close();
        await b.close();
        const admin = adminClient(t);
        await dropPrefix(admin, pa);
        await dropPrefix(admin, pb);
        await admin.quit();
      }
    });

    it("the ready index holds only ready tasks, kept in step with every write", async () => {
      const keyPrefix = uid("idx");
      const backend = new RedisBackend({ ...connection(t), keyPrefix, shards: 4 });
      const admin = adminClient(t);
      const readyCount = async () => {
        const counts = await Promise.all(
          backend.layout.allShards().map((s) => admin.zcard(backend.layout.ready(s))),
        );
        return counts.reduce((x, y) => x + y, 0);
      };
      try {
        const ids = Array.from({ length: 40 }, () => uid());
        await Promise.all(
          ids.map((id) => backend.saveSnapshot(atTask(id, "t1", { completed: { t1: text("done") } }))),
        );
        expect(await readyCount()).toBe(0);
        await Promise.all(ids.slice(0, 5).map((id) => backend.saveSnapshot(atTask(id, "t2"))));
        expect(await readyCount()).toBe(5);
        await backend.saveTaskResult(ids[0]!, "t2", text("x"));
        await backend.deleteSnapshot(ids[1]!);
        expect(await readyCount()).toBe(3);
        expect(await backend.findAvailableTasks("w", 100)).toHaveLength(3);
      } finally {
        await backend.close();
        await dropPrefix(admin, keyPrefix);
        await admin.quit();
      }
    });

    it("a stray ready-index entry (keys changed behind the scripts' back) is neither found nor claimed, and is dropped", async () => {
      const keyPrefix = uid("stray");
      const backend = new RedisBackend({ ...connection(t), keyPrefix, shards: 2 });
      const admin = adminClient(t);
      try {
        const [done, resulted, good] = ["a-done", "b-resulted", "c-good"];
        await backend.saveSnapshot(finished(done, { kind: "Completed", finalOutput: text("x") }));
        await backend.saveSnapshot(atTask(resulted, "t1", { updatedAt: 2 }));
        await backend.saveSnapshot(atTask(good, "t1", { updatedAt: 3 }));
        // The output of resulted's position task, and done in the ready set, written by hand.
        await admin.hset(backend.layout.instance(resulted).meta, "r:t1", "out");
        await admin.zadd(backend.layout.instance(done).ready, 1, done);
        expect((await backend.findAvailableTasks("w", 10)).map((f) => f.instanceId)).toEqual([good]);
        await admin.zadd(backend.layout.instance(done).ready, 1, done);
        await admin.zadd(backend.layout.instance(resulted).ready, 2, resulted);
        expect((await backend.claimAvailableTasks("w", 10, 60_000)).map((c) => c.instanceId)).toEqual([good]);
        for (const id of [done, resulted]) {
          const k = backend.layout.instance(id);
          expect(await admin.zscore(k.ready, id)).toBeNull();
          expect(await admin.zscore(k.leased, id)).toBeNull();
        }
      } finally {
        await backend.close();
        await dropPrefix(admin, keyPrefix);
        await admin.quit();
      }
    });

    it("claimed ready tasks wait in the lease set, so discovery never walks past them", async () => {
      const keyPrefix = uid("lease");
      const backend = new RedisBackend({ ...connection(t), keyPrefix, shards: 2 });
      const admin = adminClient(t);
      const cards = async (key: (s: number) => string) => {
        const counts = await Promise.all(backend.layout.allShards().map((s) => admin.zcard(key(s))));
        return counts.reduce((x, y) => x + y, 0);
      };
      try {
        const ids = Array.from({ length: 300 }, (_, i) => `${String(i).padStart(3, "0")}-${uid()}`);
        await Promise.all(
          ids.map((id, i) => backend.saveSnapshot(atTask(id, "t1", { updatedAt: 1_700_000_000_000 + i }))),
        );
        // The 290 oldest are claimed (10 of them with a short ttl); 10 stay unclaimed.
        await Promise.all(ids.slice(0, 280).map((id) => backend.claimTask(id, "t1", "w", 60_000)));
        await Promise.all(ids.slice(280, 290).map((id) => backend.claimTask(id, "t1", "w", 200)));
        expect(await cards((s) => backend.layout.ready(s))).toBe(10);
        expect(await cards((s) => backend.layout.leased(s))).toBe(290);
        expect((await backend.findAvailableTasks("w", 5)).map((x) => x.instanceId)).toEqual(
          ids.slice(290, 295),
        );
        await new Promise((r) => setTimeout(r, 300));
        // Expired leases are back, in updatedAt order.
        expect((await backend.findAvailableTasks("w", 5)).map((x) => x.instanceId)).toEqual(
          ids.slice(280, 285),
        );
        expect(await cards((s) => backend.layout.ready(s))).toBe(20);
        await backend.releaseTaskClaim(ids[0]!, "t1", "w");
        expect((await backend.findAvailableTasks("w", 1)).map((x) => x.instanceId)).toEqual([ids[0]]);
        expect(await cards((s) => backend.layout.leased(s))).toBe(279);
      } finally {
        await backend.close();
        await dropPrefix(admin, keyPrefix);
        await admin.quit();
      }
    });

    it("the shard count is recorded with the store: a backend without the option takes it, a different one is refused", async () => {
      const keyPrefix = uid("layout");
      const admin = adminClient(t);
      const first = new RedisBackend({ ...connection(t), keyPrefix, shards: 4 });
      const plain = new RedisBackend({ ...connection(t), keyPrefix });
      const wrong = new RedisBackend({ ...connection(t), keyPrefix, shards: 8 });
      try {
        const ids = Array.from({ length: 20 }, () => uid());
        for (const id of ids) await first.saveSnapshot(atTask(id, "t1"));
        expect(await admin.hget(first.layout.record(), "shards")).toBe("4");
        // Without the option: the default (1 on standalone, 16 on a cluster) until the record is read.
        expect(plain.layout.shards).toBe(t.kind === "standalone" ? 1 : 16);
        expect((await plain.listSnapshots()).sort()).toEqual([...ids].sort());
        expect(plain.layout.shards).toBe(4);
        expect(await plain.findAvailableTasks("w", 100)).toHaveLength(20);
        // A different count would strand the data: every operation is refused.
        for (const attempt of [
          wrong.listSnapshots(),
          wrong.loadSnapshot(ids[0]!),
          wrong.findAvailableTasks("w", 1),
        ]) {
          const error = await rejection(attempt);
          expect(error).toMatchObject({ code: ErrorCode.Validation });
          expect(String((error as Error).message)).toMatch(/has 4 shards.*says 8/);
        }
      } finally {
        await Promise.all([first.close(), plain.close(), wrong.close()]);
        await dropPrefix(admin, keyPrefix);
        admin.disconnect();
      }
    });

    it("a new store gets the default shard count of its kind", async () => {
      const keyPrefix = uid("layout-default");
      const admin = adminClient(t);
      const backend = new RedisBackend({ ...connection(t), keyPrefix });
      try {
        await backend.saveSnapshot(atTask(uid(), "t1"));
        expect(await admin.hget(backend.layout.record(), "shards")).toBe(
          t.kind === "standalone" ? "1" : "16",
        );
      } finally {
        await backend.close();
        await dropPrefix(admin, keyPrefix);
        admin.disconnect();
      }
    });

    it("the initial input is stored once, in its own field; a record with it inside the header (earlier versions) still loads", async () => {
      const keyPrefix = uid("initial");
      const backend = new RedisBackend({ ...connection(t), keyPrefix });
      const admin = adminClient(t);
      try {
        const id = uid();
        const snapshot = atTask(id, "t1", { initialInput: text("the input") });
        await backend.saveSnapshot(snapshot);
        const key = backend.layout.instance(id).meta;
        const header = await admin.hgetBuffer(key, MetaField.header);
        expect(
          decodeSnapshotHeader(new Uint8Array(header!), id, { results: [], lastCompletedTaskId: null })
            .initialInput,
        ).toBeUndefined();
        expect(
          new TextDecoder().decode((await admin.hgetBuffer(key, MetaField.initialInput)) ?? undefined),
        ).toBe("the input");
        // What earlier versions wrote: the initial input inside the header as well.
        await admin.hset(key, MetaField.header, Buffer.from(encodeSnapshotHeader(snapshot)));
        expect(new TextDecoder().decode((await backend.loadSnapshot(id)).initialInput)).toBe("the input");
        expect(new TextDecoder().decode((await backend.findAvailableTasks("w", 1))[0]?.input)).toBe(
          "the input",
        );
        // Only in the header: still loads.
        await admin.hdel(key, MetaField.initialInput);
        expect(new TextDecoder().decode((await backend.loadSnapshot(id)).initialInput)).toBe("the input");
      } finally {
        await backend.close();
        await dropPrefix(admin, keyPrefix);
        admin.disconnect();
      }
    });

    it("a forged listing cursor is a ValidationError", async () => {
      const backend = new RedisBackend({ ...connection(t), keyPrefix: uid("cur") });
      try {
        for (const cursor of ["nope", "r1.999.AA", "r2.0.AA"]) {
          expect(await rejection(backend.listSnapshotsPage({ cursor, limit: 5 }))).toMatchObject({
            code: ErrorCode.Validation,
          });
        }
      } finally {
        await backend.close();
      }
    });
  });
}

const standaloneInfo = inject("redis");
describe.skipIf(standaloneInfo === null)("a standalone store from before the layout record", () => {
  it("written with the former default of 16 shards, it is read with 16, not stranded by the new default of 1", async () => {
    const url = standaloneInfo!.url;
    const keyPrefix = uid("legacy");
    const admin = new Redis(url);
    const old = new RedisBackend({ url, keyPrefix, shards: 16 });
    try {
      const ids = Array.from({ length: 40 }, () => uid());
      for (const id of ids) await old.saveSnapshot(atTask(id, "t1"));
      expect(new Set(ids.map((id) => old.layout.shardOf(id))).size).toBeGreaterThan(1);
      // What a store written before the record existed looks like.
      await admin.del(old.layout.record());
      const upgraded = new RedisBackend({ url, keyPrefix });
      try {
        expect((await upgraded.listSnapshots()).sort()).toEqual([...ids].sort());
        expect(upgraded.layout.shards).toBe(16);
        expect(await upgraded.findAvailableTasks("w", 100)).toHaveLength(40);
        expect(await admin.hget(old.layout.record(), "shards")).toBe("16");
      } finally {
        await upgraded.close();
      }
    } finally {
      await old.close();
      await dropPrefix(admin, keyPrefix);
      await admin.quit();
    }
  });
});

describe.skipIf(standaloneInfo === null)("round trips (standalone, MONITOR)", () => {
  it("a snapshot with 40 MiB of outputs loads in one command; a task result writes one output", async () => {
    const url = standaloneInfo!.url;
    const keyPrefix = uid("rt");
    const backend = new RedisBackend({ url, keyPrefix });
    const admin = new Redis(url);
    let monitor: Redis | undefined;
    try {
      const id = uid();
      const outputs: Record<string, Uint8Array> = {};
      for (let i = 0; i < 8; i++) outputs[`task-${i}`] = new Uint8Array(5 * 1024 * 1024).fill(i);
      await backend.saveSnapshot(atTask(id, "task-9", { completed: outputs }));
      await backend.loadSnapshot(id); // loads the script (EVALSHA, NOSCRIPT, EVAL) once
      await backend.saveTaskResult(id, "warm", text("x"));
      // MONITOR starts after the 40 MiB write (it would echo 160 MiB of escaped arguments).
      monitor = await new Redis(url).monitor();
      const seen: string[] = [];
      monitor.on("monitor", (_time: string, args: string[]) => {
        if (args.some((a) => typeof a === "string" && a.includes(keyPrefix)))
          seen.push(String(args[0]).toLowerCase());
      });
      await new Promise((r) => setTimeout(r, 50));
      const loaded = await backend.loadSnapshot(id);
      expect(loaded.state.kind === "InProgress" && Object.keys(loaded.state.completedTasks)).toHaveLength(9);
      await backend.saveTaskResult(id, "one-more", text("small"));
      await new Promise((r) => setTimeout(r, 100));
      // One EVALSHA each (MONITOR also lists the commands a script runs, which are not round trips).
      expect(seen.filter((c) => c === "evalsha" || c === "eval")).toEqual(["evalsha", "evalsha"]);
      // The task result wrote its one output, not the whole snapshot.
      expect(seen.filter((c) => c === "hset").length).toBeLessThanOrEqual(2);
      await dropPrefix(admin, keyPrefix);
    } finally {
      monitor?.disconnect();
      await admin.quit();
      await backend.close();
    }
  });
});
