import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BackendError, createSnapshot, ErrorCode, ValidationError } from "@sayiir/persistence-core";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RedisBackend, type RedisBackendOptions } from "../src/index.js";

/*
 * Option replicaAcks on a master with one replica of this test's own (two redis-server processes):
 * every write script is followed by WAIT on the same connection; with the replica frozen
 * (SIGSTOP) a write fails with BackendError "may be lost on failover" where, without the option,
 * it succeeds although no replica has it. Reads never WAIT. The Cluster path (WAIT on the node
 * that ran the script, across a real failover) is tested in tooling/reliability
 * (test/cluster-failover.test.ts).
 */

const serverBin = process.env.SAYIIR_TEST_REDIS_SERVER_BIN ?? "redis-server";
const haveServer = spawnSync(serverBin, ["--version"]).status === 0;
// Generous: in CI the replica shares 2 busy cores with every other suite, and an acknowledgement
// can take well over 150 ms (a CI run saw 0 of 1 replicas acknowledge within 150 ms).
const ACK_TIMEOUT_MS = 1000;

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => resolve(typeof address === "object" && address ? address.port : 0));
    });
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** One redis-server on loopback, no persistence, in a throw-away directory. */
async function startServer(dir: string, extra: string[]): Promise<{ port: number; child: ChildProcess }> {
  const port = await freePort();
  const child = spawn(
    serverBin,
    [
      "--port",
      String(port),
      "--bind",
      "127.0.0.1",
      "--save",
      "",
      "--appendonly",
      "no",
      "--dir",
      dir,
      ...extra,
    ],
    { stdio: "ignore" },
  );
  const client = new Redis({ port, host: "127.0.0.1", lazyConnect: true, retryStrategy: () => 50 });
  client.on("error", () => {});
  try {
    for (let i = 0; ; i++) {
      if ((await client.ping().catch(() => "")) === "PONG") break;
      if (i > 200) throw new Error(`redis-server on ${port} did not start`);
      await sleep(25);
    }
  } finally {
    client.disconnect();
  }
  return { port, child };
}

let dir = "";
let master: { port: number; child: ChildProcess } | undefined;
let replica: { port: number; child: ChildProcess } | undefined;
let admin: Redis;
const backends: RedisBackend[] = [];

function open(options: Partial<RedisBackendOptions> = {}): RedisBackend {
  const backend = new RedisBackend({
    url: `redis://127.0.0.1:${master!.port}`,
    keyPrefix: `acks_${process.pid}`,
    operationTimeoutMs: 2000,
    ...options,
  });
  backends.push(backend);
  return backend;
}

/** How many WAIT commands the master has run so far. */
async function waitCalls(): Promise<number> {
  const stats = await admin.info("commandstats");
  return Number(/cmdstat_wait:calls=(\d+)/.exec(stats)?.[1] ?? 0);
}

async function freezeReplica<T>(body: () => Promise<T>): Promise<T> {
  replica!.child.kill("SIGSTOP");
  try {
    return await body();
  } finally {
    replica!.child.kill("SIGCONT");
  }
}

describe.skipIf(!haveServer)("replicaAcks (master + one replica)", () => {
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "sayiir-redis-acks-"));
    master = await startServer(join(dir, ""), []);
    replica = await startServer(dir, [
      "--replicaof",
      "127.0.0.1",
      String(master.port),
      "--dbfilename",
      "r.rdb",
    ]);
    admin = new Redis({ port: master.port, host: "127.0.0.1" });
    admin.on("error", () => {});
    // The replica must be in sync before WAIT can count it.
    for (let i = 0; ; i++) {
      const info = await admin.info("replication");
      if (/slave0:.*state=online/.test(info)) break;
      if (i > 400) throw new Error(`replica not online: ${info}`);
      await sleep(25);
    }
  });

  afterAll(async () => {
    replica?.child.kill("SIGCONT");
    await Promise.all(backends.map((b) => b.close().catch(() => {})));
    admin?.disconnect();
    master?.child.kill("SIGKILL");
    replica?.child.kill("SIGKILL");
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("refuses invalid settings before any I/O", () => {
    const url = "redis://127.0.0.1:1";
    const bad = (replicaAcks: unknown, operationTimeoutMs?: number) => () =>
      new RedisBackend({ url, replicaAcks, operationTimeoutMs } as RedisBackendOptions);
    expect(bad({ replicas: 0, timeoutMs: 100 })).toThrow(ValidationError);
    expect(bad({ replicas: 1.5, timeoutMs: 100 })).toThrow(ValidationError);
    // 0 is WAIT's "block for ever".
    expect(bad({ replicas: 1, timeoutMs: 0 })).toThrow(ValidationError);
    expect(bad({ replicas: 1, timeoutMs: 1000 }, 1000)).toThrow(/operationTimeoutMs/);
    expect(bad({ replicas: 1 })).toThrow(ValidationError);
  });

  it("WAITs after every write script, on the master that ran it, and never after a read", async () => {
    const backend = open({ replicaAcks: { replicas: 1, timeoutMs: ACK_TIMEOUT_MS } });
    const id = `wf-${Date.now()}`;
    await backend.saveSnapshot(createSnapshot(id, "hash"));
    const before = await waitCalls();
    await backend.saveSnapshot(createSnapshot(id, "hash"));
    const claim = await backend.claimTask(id, "t1", "w1", 30_000);
    expect(claim).not.toBeNull();
    await backend.saveTaskResult(id, "t1", new TextEncoder().encode("out"), { claim: claim! });
    expect(await waitCalls()).toBe(before + 3);
    const reads = await waitCalls();
    await backend.loadSnapshot(id);
    await backend.loadTaskResult(id, "t1");
    expect(await waitCalls()).toBe(reads);
  });

  it("reports a write no replica acknowledged as a BackendError (without the option: a success)", async () => {
    const acked = open({ replicaAcks: { replicas: 1, timeoutMs: ACK_TIMEOUT_MS } });
    const plain = open();
    const id = `wf-frozen-${Date.now()}`;
    await acked.saveSnapshot(createSnapshot(id, "hash"));
    await plain.saveSnapshot(createSnapshot(id, "hash"));
    await freezeReplica(async () => {
      const started = performance.now();
      const error = await acked.claimTask(id, "t1", "w1", 30_000).then(
        () => null,
        (e: unknown) => e,
      );
      const ms = performance.now() - started;
      expect(error).toBeInstanceOf(BackendError);
      expect((error as BackendError).code).toBe(ErrorCode.Backend);
      expect(String((error as Error).message)).toMatch(/0 of 1 replica\(s\).*may be lost on failover/);
      // WAIT gave up after its timeout, not the operation timeout (tolerance for a loaded machine).
      expect(ms).toBeGreaterThanOrEqual(ACK_TIMEOUT_MS - 20);
      expect(ms).toBeLessThan(1900);
      // The write was not undone: the master holds the claim (WAIT reports, it does not roll back).
      expect(await plain.claimTask(id, "t1", "w2", 30_000)).toBeNull();
      // Without the option the same kind of write succeeds with no replica holding it.
      expect(await plain.claimTask(id, "t2", "w1", 30_000)).not.toBeNull();
      // Reads do not wait for replicas.
      await acked.loadSnapshot(id);
    });
    // The replica is back and catches up: writes are acknowledged again.
    for (let i = 0; ; i++) {
      const ok = await acked.claimTask(id, "t3", "w1", 30_000).then(
        (c) => c !== null,
        () => false,
      );
      if (ok) break;
      if (i > 40) throw new Error("writes still unacknowledged after the replica resumed");
      await sleep(50);
    }
  });

  it("fails every write when more replicas are asked for than exist", async () => {
    const backend = open({ replicaAcks: { replicas: 2, timeoutMs: ACK_TIMEOUT_MS } });
    await expect(backend.saveSnapshot(createSnapshot(`wf-two-${Date.now()}`, "hash"))).rejects.toThrow(
      /1 of 2 replica\(s\).*may be lost on failover/,
    );
  });
});
