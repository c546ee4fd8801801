import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BackendError, ErrorCode } from "@sayiir/persistence-core";
import { atTask, eventually, rejection, text, uid } from "@sayiir/persistence-core/conformance";
import { Cluster, Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RedisBackend } from "../src/index.js";
import { adminClient, dropPrefix, targets as servers, type Target } from "./subject.js";

/*
 * Connection loss on a redis-server of this test's own (killing the shared one would break the
 * other suites): killed, paused (SIGSTOP: the socket stays open and nothing answers) and
 * restarted. Every failing operation must be a BackendError within a bounded time, and the same
 * backend must work again once Redis is back.
 */

const serverBin = process.env.SAYIIR_TEST_REDIS_SERVER_BIN ?? "redis-server";
const haveServer = spawnSync(serverBin, ["--version"]).status === 0;
const TIMEOUT_MS = 1000;

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

class OwnServer {
  process: ChildProcess | undefined;
  readonly dir = mkdtempSync(join(tmpdir(), "sayiir-redis-loss-"));
  constructor(readonly port: number) {}

  async start(): Promise<void> {
    // appendonly + everysec: data written before the kill survives the restart (see README).
    this.process = spawn(
      serverBin,
      [
        "--port",
        String(this.port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "yes",
        "--dir",
        this.dir,
      ],
      { stdio: "ignore" },
    );
    const probe = new Redis({
      port: this.port,
      host: "127.0.0.1",
      lazyConnect: true,
      retryStrategy: () => null,
    });
    probe.on("error", () => {});
    await eventually("the own redis-server to answer", async () => {
      try {
        if (probe.status !== "ready") await probe.connect();
        return (await probe.ping()) === "PONG" ? true : undefined;
      } catch {
        return undefined;
      }
    });
    probe.disconnect();
  }

  async kill(): Promise<void> {
    const child = this.process;
    if (!child || child.exitCode !== null) return;
    await new Promise<void>((resolve) => {
      child.once("exit", () => resolve());
      child.kill("SIGKILL");
    });
  }

  async remove(): Promise<void> {
    if (this.process?.exitCode === null) this.process.kill("SIGCONT");
    await this.kill();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

async function timedRejection(promise: Promise<unknown>): Promise<{ error: unknown; ms: number }> {
  const started = Date.now();
  const error = await rejection(promise);
  return { error, ms: Date.now() - started };
}

describe.skipIf(!haveServer)("connection loss (own redis-server)", () => {
  let server: OwnServer;
  let url: string;

  beforeAll(async () => {
    server = new OwnServer(await freePort());
    url = `redis://127.0.0.1:${server.port}`;
    await server.start();
  });
  afterAll(async () => {
    await server?.remove();
  });

  it("server killed: BackendError within the bound, then the same backend recovers", async () => {
    const backend = new RedisBackend({ url, keyPrefix: uid("loss"), operationTimeoutMs: TIMEOUT_MS });
    try {
      const id = uid();
      await backend.saveSnapshot(atTask(id, "t1"));
      await server.kill();
      for (const op of [
        () => backend.loadSnapshot(id),
        () => backend.saveTaskResult(id, "t1", text("x")),
        () => backend.claimAvailableTasks("w", 5, 1000),
        () => backend.listSnapshots(),
      ]) {
        const { error, ms } = await timedRejection(op());
        expect(error).toBeInstanceOf(BackendError);
        expect(error).toMatchObject({ code: ErrorCode.Backend });
        expect(ms).toBeLessThan(TIMEOUT_MS + 1500);
      }
      await server.start();
      // Appendonly: the snapshot saved before the kill is still there; the backend reconnects by itself.
      const loaded = await eventually("the backend to work again", async () => {
        try {
          return await backend.loadSnapshot(id);
        } catch {
          return undefined;
        }
      });
      expect(loaded.instanceId).toBe(id);
      await backend.saveTaskResult(id, "t1", text("after"));
      expect(await backend.findAvailableTasks("w", 10)).toEqual([]);
    } finally {
      await backend.close();
    }
  }, 30_000);

  it("server paused (socket open, no answers): BackendError within the bound, then recovery", async () => {
    const backend = new RedisBackend({ url, keyPrefix: uid("pause"), operationTimeoutMs: TIMEOUT_MS });
    try {
      const id = uid();
      await backend.saveSnapshot(atTask(id, "t1"));
      server.process?.kill("SIGSTOP");
      try {
        const { error, ms } = await timedRejection(backend.claimTask(id, "t1", "w", 5000));
        expect(error).toBeInstanceOf(BackendError);
        expect(ms).toBeLessThan(TIMEOUT_MS + 1500);
      } finally {
        server.process?.kill("SIGCONT");
      }
      // The first claim after SIGCONT can time out on the client although Redis ran it (the reply
      // came too late): its claim is live but unknown to us, and later claims of t2 answer null
      // until it expires. A short ttl keeps that wait short; the bound leaves room for a loaded machine.
      const claim = await eventually(
        "a claim after the pause",
        async () => {
          try {
            return (await backend.claimTask(id, "t2", "w", 300)) ?? undefined;
          } catch {
            return undefined;
          }
        },
        10_000,
      );
      expect(claim.token).toBeGreaterThan(0);
    } finally {
      await backend.close();
    }
  }, 30_000);

  it("a backend created while Redis is down fails in bounded time and works once it is up", async () => {
    await server.kill();
    const backend = new RedisBackend({ url, keyPrefix: uid("down"), operationTimeoutMs: TIMEOUT_MS });
    try {
      const { error, ms } = await timedRejection(backend.listSnapshots());
      expect(error).toBeInstanceOf(BackendError);
      expect(ms).toBeLessThan(TIMEOUT_MS + 1500);
      await server.start();
      await eventually("the backend to connect", async () => {
        try {
          return await backend.listSnapshots();
        } catch {
          return undefined;
        }
      });
      await backend.saveSnapshot(atTask(uid(), "t1"));
      expect(await backend.findAvailableTasks("w", 10)).toHaveLength(1);
    } finally {
      await backend.close();
    }
  }, 30_000);
});

// On the shared servers: the server side kills the backend's connections (CLIENT KILL, by the
// connection name, so that the other test files running at the same time keep theirs), as a
// failover or a proxy restart would; the backend reconnects and carries on.
const targets: Array<[string, Target | null]> = [
  ["standalone", servers.standalone],
  ["cluster", servers.cluster],
];

async function killByName(node: Redis, name: string): Promise<number> {
  const list = String(await node.call("CLIENT", "LIST", "TYPE", "normal"));
  const ids = list
    .split("\n")
    .filter((line) => line.includes(` name=${name} `))
    .map((line) => /(?:^|\s)id=(\d+)/.exec(line)?.[1])
    .filter((id): id is string => id !== undefined);
  for (const id of ids) await node.call("CLIENT", "KILL", "ID", id);
  return ids.length;
}

for (const [name, target] of targets) {
  describe.skipIf(target === null)(`connections killed by the server (${name})`, () => {
    it("operations keep working after CLIENT KILL of every backend connection", async () => {
      if (target === null) return;
      const admin = adminClient(target);
      const connectionName = `victim-${process.pid}-${Date.now()}`;
      const client =
        target.kind === "standalone"
          ? new Redis(target.url, { connectionName })
          : new Cluster(target.nodes, { redisOptions: { connectionName } });
      client.on("error", () => {});
      const keyPrefix = uid("kill");
      const backend = new RedisBackend({ client, keyPrefix, operationTimeoutMs: 3000 });
      try {
        const ids = Array.from({ length: 20 }, () => uid());
        for (const id of ids) await backend.saveSnapshot(atTask(id, "t1"));
        if (admin instanceof Cluster) await admin.ping();
        const nodes = admin instanceof Cluster ? admin.nodes("master") : [admin];
        const killed = (await Promise.all(nodes.map((node) => killByName(node, connectionName)))).reduce(
          (a, b) => a + b,
          0,
        );
        expect(killed).toBeGreaterThan(0);
        const results = await Promise.allSettled(ids.map((id) => backend.loadSnapshot(id)));
        for (const r of results) {
          if (r.status === "rejected") expect(r.reason).toBeInstanceOf(BackendError);
        }
        const claimed = await eventually("claims after the kill", async () => {
          try {
            return await backend.claimAvailableTasks("w", 100, 60_000);
          } catch {
            return undefined;
          }
        });
        expect(claimed.map((c) => c.instanceId).sort()).toEqual([...ids].sort());
      } finally {
        await backend.close();
        await dropPrefix(admin, keyPrefix);
        client.disconnect();
        admin.disconnect();
      }
    }, 30_000);
  });
}
