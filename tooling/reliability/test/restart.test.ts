// Server restart mid-run, for Redis and Postgres, on dedicated local servers (killing the shared
// ones would disturb the other test files): the server is SIGKILLed while claims and fenced writes
// are in flight; every operation fails typed within a bound, the same backend instance recovers
// once the server is back on the same port and data, and nothing is half-applied or lost.
// Redis runs with appendonly + appendfsync always, so an acknowledged write survives kill -9.

import { BackendUnavailable, type ServerUrls } from "@sayiir/backends";
import { describe, expect, it } from "vitest";
import { timed } from "../src/harness.ts";
import { inFlightUnderFault } from "../src/inflight.ts";
import { LocalPostgres } from "../src/pg-server.ts";
import { LocalRedis, REDIS_SERVER_BIN } from "../src/redis-server.ts";
import { BACKENDS } from "../src/registry.ts";

const SUITE = "server restart";
const BOUND_MS = 15_000;
const RECOVERY_MS = 30_000;

interface Server {
  urls: ServerUrls;
  kill: () => Promise<void>;
  restart: () => Promise<void>;
  stop: () => Promise<void>;
}

const SERVERS: Array<["redis" | "postgres", () => Promise<Server>]> = [
  [
    "redis",
    async () => {
      if (REDIS_SERVER_BIN === undefined) throw new BackendUnavailable("no redis-server binary");
      const server = await LocalRedis.start(["--appendonly", "yes", "--appendfsync", "always"]);
      return {
        urls: { redis: `redis://127.0.0.1:${server.port}` },
        kill: () => server.kill(),
        restart: () => server.spawn(),
        stop: () => server.stop(),
      };
    },
  ],
  [
    "postgres",
    async () => {
      let server: LocalPostgres;
      try {
        server = await LocalPostgres.start();
      } catch (error) {
        throw new BackendUnavailable(`cannot start a dedicated PostgreSQL: ${(error as Error).message}`);
      }
      return {
        urls: { postgres: server.url },
        kill: () => server.kill(),
        restart: () => server.spawn(),
        stop: () => server.stop(),
      };
    },
  ],
];

describe(SUITE, () => {
  for (const [name, start] of SERVERS) {
    it(`${name}: killed mid-run and restarted: typed failures within ${BOUND_MS} ms, recovery, nothing half-applied`, async (ctx) => {
      let server: Server;
      try {
        server = await start();
      } catch (error) {
        if (error instanceof BackendUnavailable) {
          console.warn(`[reliability] ${SUITE}: SKIPPED backend ${name}: ${error.message}`);
          ctx.skip(error.message);
        }
        throw error;
      }
      try {
        const subject = await BACKENDS[name].create(server.urls, { timeoutMs: 1000 });
        const opened = [subject.backend];
        try {
          let outage: Array<{ result: string; ms: number }> = [];
          const report = await inFlightUnderFault({
            b: subject.backend,
            direct: async () => {
              const b = await subject.connect({ timeoutMs: 1000 });
              opened.push(b);
              return b;
            },
            fault: async () => {
              await server.kill();
              // While the server is down: every kind of call fails typed, within the bound.
              const b = subject.backend;
              outage = await Promise.all([
                timed(b.loadSnapshot("m-0"), BOUND_MS + 1000),
                timed(b.claimTask("m-0", "x", "w", 1000), BOUND_MS + 1000),
                timed(b.claimAvailableTasks("w", 5, 1000), BOUND_MS + 1000),
              ]);
            },
            heal: () => server.restart(),
            boundMs: BOUND_MS,
            recoveryMs: RECOVERY_MS,
            prefix: `restart-${name}`,
          });
          console.info(
            `[reliability] ${SUITE} ${name}: outage ${outage.map((o) => `${o.result} in ${o.ms} ms`).join(", ")}; ` +
              `${report.written} written, ${report.claimedOnly} claimed only, ${report.untouched} untouched, ${report.typedFailures} typed failures`,
          );
          for (const o of outage) {
            expect(o.result).toBe("BACKEND");
            expect(o.ms).toBeLessThan(BOUND_MS);
          }
        } finally {
          await Promise.allSettled(opened.map((b) => b.close()));
          await subject.cleanup().catch(() => {});
        }
      } finally {
        await server.stop();
      }
    });
  }
});
