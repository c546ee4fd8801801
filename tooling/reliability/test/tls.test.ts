// TLS options pass through to the drivers: a certificate generated at test time (openssl), a
// dedicated redis-server with only a TLS port and a dedicated PostgreSQL that rejects non-TLS
// connections. With the CA the backend works; without it (default verification) it fails typed.
import { execFileSync } from "node:child_process";
import { chownSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { outcome } from "../src/harness.ts";
import { LocalPostgres } from "../src/pg-server.ts";
import { freePort, LocalRedis, REDIS_SERVER_BIN } from "../src/redis-server.ts";

const SUITE = "tls";
let dir: string | undefined;
let cert: string | undefined;
let key: string | undefined;

beforeAll(() => {
  if (!existsSync("/usr/bin/openssl")) return;
  dir = mkdtempSync(join(tmpdir(), "sayiir-rel-tls-"));
  execFileSync(
    "openssl",
    [
      "req",
      "-x509",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-keyout",
      join(dir, "key.pem"),
      "-out",
      join(dir, "cert.pem"),
      "-days",
      "1",
      "-subj",
      "/CN=127.0.0.1",
      "-addext",
      "subjectAltName=IP:127.0.0.1,DNS:localhost",
    ],
    { stdio: "ignore" },
  );
  cert = join(dir, "cert.pem");
  key = join(dir, "key.pem");
});

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const snapshot = (id: string) => ({
  instanceId: id,
  definitionHash: "h",
  createdAt: 1,
  updatedAt: 1,
  state: { kind: "Failed" as const, error: "e" },
});

describe(SUITE, () => {
  it("redis over TLS (rediss): works with the CA, refused without it", async (ctx) => {
    if (cert === undefined || REDIS_SERVER_BIN === undefined) {
      console.warn(`[reliability] ${SUITE}: SKIPPED redis: needs openssl and redis-server`);
      ctx.skip("needs openssl and redis-server");
    }
    const { RedisBackend } = await import("@sayiir/persistence-redis").catch((error: Error) => {
      console.warn(`[reliability] ${SUITE}: SKIPPED redis: ${error.message}`);
      ctx.skip(error.message);
      throw error;
    });
    const port = await freePort();
    const server = await LocalRedis.start(
      [
        "--port",
        "0",
        "--tls-port",
        String(port),
        "--tls-cert-file",
        cert!,
        "--tls-key-file",
        key!,
        "--tls-ca-cert-file",
        cert!,
        "--tls-auth-clients",
        "no",
      ],
      port,
    );
    try {
      const ca = readFileSync(cert!);
      const good = new RedisBackend({
        redis: { host: "127.0.0.1", port, tls: { ca, servername: "127.0.0.1" } },
        keyPrefix: "tls",
        operationTimeoutMs: 3000,
      });
      await good.saveSnapshot(snapshot("tls-1"));
      expect((await good.loadSnapshot("tls-1")).instanceId).toBe("tls-1");
      await good.close();
      // The certificate is verified: without the CA the connection is refused.
      const unverified = new RedisBackend({ url: `rediss://127.0.0.1:${port}`, operationTimeoutMs: 2000 });
      expect(await outcome(unverified.loadSnapshot("tls-1"))).toBe("BACKEND");
      await unverified.close();
      // And plain TCP to a TLS-only port does not work either (the option is what enables TLS).
      const plain = new RedisBackend({ url: `redis://127.0.0.1:${port}`, operationTimeoutMs: 2000 });
      expect(await outcome(plain.loadSnapshot("tls-1"))).toBe("BACKEND");
      await plain.close();
    } finally {
      await server.stop();
    }
  });

  describe("postgres", () => {
    let server: LocalPostgres | undefined;
    let reason = "";
    beforeAll(async () => {
      if (cert === undefined) {
        reason = "needs openssl";
        return;
      }
      try {
        server = await LocalPostgres.start();
      } catch (error) {
        reason = `cannot start a dedicated PostgreSQL: ${(error as Error).message}`;
        return;
      }
      // Server files owned by the server's user; TLS on; plain TCP connections rejected.
      const data = join(server.dir, "data");
      for (const [name, from] of [
        ["server.crt", cert!],
        ["server.key", key!],
      ] as const) {
        writeFileSync(join(data, name), readFileSync(from), { mode: 0o600 });
        if (server.user) chownSync(join(data, name), server.user.uid, server.user.gid);
      }
      writeFileSync(
        join(data, "postgresql.auto.conf"),
        "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n",
      );
      writeFileSync(
        join(data, "pg_hba.conf"),
        "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n",
      );
      await server.kill();
      server.probeSsl = { ca: readFileSync(cert!, "utf8") };
      await server.spawn();
    }, 60_000);
    afterAll(async () => {
      await server?.stop();
    });

    it("works with ssl + CA, refused without TLS and without the CA", async (ctx) => {
      if (server === undefined) {
        console.warn(`[reliability] ${SUITE}: SKIPPED postgres: ${reason}`);
        ctx.skip(reason);
      }
      const { PostgresBackend } = await import("@sayiir/persistence-postgres");
      const url = server!.url;
      const ca = readFileSync(cert!, "utf8");
      const good = new PostgresBackend({
        poolConfig: { connectionString: url, ssl: { ca, rejectUnauthorized: true } },
        schema: "tls",
        connectionTimeoutMs: 5000,
      });
      await good.migrate();
      await good.saveSnapshot(snapshot("tls-1"));
      expect((await good.loadSnapshot("tls-1")).instanceId).toBe("tls-1");
      await good.close();
      const plain = new PostgresBackend({ connectionString: url, schema: "tls", connectionTimeoutMs: 5000 });
      expect(await outcome(plain.loadSnapshot("tls-1"))).toBe("BACKEND");
      await plain.close();
      const unverified = new PostgresBackend({
        poolConfig: { connectionString: url, ssl: { rejectUnauthorized: true } },
        schema: "tls",
        connectionTimeoutMs: 5000,
      });
      expect(await outcome(unverified.loadSnapshot("tls-1"))).toBe("BACKEND");
      await unverified.close();
    });
  });
});
