// Secrets: no error message, stack, cause or log line of any adapter contains the password of its
// connection. Wrong-password connections against real servers (Postgres with password auth, a
// dedicated redis-server with requirepass), and for every server backend a password in the URL of
// a server that is not there.

import { type BackendName, BackendUnavailable } from "@sayiir/backends";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from "vitest";
import { LocalRedis, REDIS_SERVER_BIN } from "../src/redis-server.ts";
import { injectedUrls } from "../src/servers.ts";

const SUITE = "secrets";
/** Distinctive passwords (with characters that need URL encoding) that must never show up. */
const WRONG = "Wr0ng-S3cret@pw/x";
const RIGHT = "R1ght-S3cret@pw/x";
const enc = encodeURIComponent;

let logged: string[] = [];
beforeEach(() => {
  logged = [];
  for (const method of ["log", "info", "warn", "error", "debug"] as const) {
    const original = console[method].bind(console);
    vi.spyOn(console, method).mockImplementation((...args: unknown[]) => {
      logged.push(args.map(String).join(" "));
      original(...args);
    });
  }
  for (const stream of [process.stdout, process.stderr]) {
    const original = stream.write.bind(stream);
    vi.spyOn(stream, "write").mockImplementation(((chunk: unknown, ...rest: unknown[]) => {
      logged.push(String(chunk));
      return (original as (...a: unknown[]) => boolean)(chunk, ...rest);
    }) as typeof stream.write);
  }
});
afterEach(() => {
  vi.restoreAllMocks();
});

/** Every text an error exposes: message, stack, String(), and the same for its causes. */
function texts(error: unknown, depth = 0): string[] {
  if (depth > 5 || error === null || error === undefined) return [];
  if (!(error instanceof Error)) return [String(error)];
  const out = [error.message, error.stack ?? "", String(error)];
  const extra = error as unknown as Record<string, unknown>;
  for (const key of ["detail", "hint", "command", "address"])
    if (typeof extra[key] === "string") out.push(extra[key]);
  return [...out, ...texts(error.cause, depth + 1)];
}

function assertNoSecret(where: string, error: unknown, secrets: string[]): void {
  expect(error, `${where}: expected a failure`).toBeInstanceOf(Error);
  expect((error as { code?: string }).code, `${where}: ${(error as Error).message}`).toBe("BACKEND");
  for (const text of [...texts(error), ...logged]) {
    for (const secret of secrets) {
      expect(text.includes(secret), `${where}: "${secret}" appears in: ${text.slice(0, 300)}`).toBe(false);
    }
  }
}

const SECRETS = [WRONG, enc(WRONG), RIGHT, enc(RIGHT)];

async function adapter<T>(specifier: string, ctx: { skip: (note?: string) => void }): Promise<T> {
  try {
    return (await import(specifier)) as T;
  } catch (error) {
    const message = `${specifier} does not load: ${(error as Error).message.split("\n")[0]}`;
    console.warn(`[reliability] ${SUITE}: SKIPPED ${message}`);
    ctx.skip(message);
    throw new BackendUnavailable(message);
  }
}

async function failure(run: () => Promise<unknown>): Promise<unknown> {
  try {
    await run();
  } catch (error) {
    return error;
  }
  return undefined;
}

describe(SUITE, () => {
  describe("postgres with a wrong password", () => {
    it("authentication failure: BackendError without the password, in every connection form", async (ctx) => {
      const url = injectedUrls().postgres;
      if (!url) {
        console.warn(`[reliability] ${SUITE}: SKIPPED postgres: no server`);
        ctx.skip("no postgres server");
      }
      const { PostgresBackend } = await adapter<typeof import("@sayiir/persistence-postgres")>(
        "@sayiir/persistence-postgres",
        ctx,
      );
      const pg = (await import("pg")).default;
      const wrongUrl = new URL(url!);
      wrongUrl.password = enc(WRONG);
      // Is the server checking passwords at all (pg_hba trust would accept any)?
      const probe = new pg.Client({ connectionString: wrongUrl.toString(), connectionTimeoutMillis: 5000 });
      const trusted = await probe.connect().then(
        () => true,
        () => false,
      );
      await probe.end().catch(() => {});
      if (trusted) {
        console.warn(
          `[reliability] ${SUITE}: postgres accepts any password here (trust auth); only the unreachable-server path is tested`,
        );
        ctx.skip("postgres uses trust authentication");
      }
      const forms: Array<[string, () => InstanceType<typeof PostgresBackend>]> = [
        [
          "connectionString",
          () => new PostgresBackend({ connectionString: wrongUrl.toString(), connectionTimeoutMs: 5000 }),
        ],
        [
          "poolConfig.connectionString",
          () =>
            new PostgresBackend({
              poolConfig: { connectionString: wrongUrl.toString() },
              connectionTimeoutMs: 5000,
            }),
        ],
        [
          "poolConfig.password",
          () => {
            const u = new URL(url!);
            return new PostgresBackend({
              poolConfig: {
                host: u.hostname,
                port: Number(u.port),
                user: u.username,
                database: u.pathname.slice(1),
                password: WRONG,
              },
              connectionTimeoutMs: 5000,
            });
          },
        ],
        [
          "key=value string",
          () => {
            const u = new URL(url!);
            return new PostgresBackend({
              connectionString: `host=${u.hostname} port=${u.port} user=${u.username} dbname=${u.pathname.slice(1)} password=${WRONG}`,
              connectionTimeoutMs: 5000,
            });
          },
        ],
      ];
      for (const [form, make] of forms) {
        const backend = make();
        try {
          for (const [op, run] of [
            ["loadSnapshot", () => backend.loadSnapshot("x")],
            ["migrate", () => backend.migrate()],
            ["claimTask", () => backend.claimTask("x", "t", "w", 1000)],
          ] as const) {
            const error = await failure(run);
            assertNoSecret(`postgres ${form} ${op}`, error, SECRETS);
            expect((error as Error).cause, `${form}: the driver error is kept as cause`).toBeDefined();
          }
        } finally {
          await backend.close().catch(() => {});
        }
      }
    });
  });

  describe("redis with a wrong password (dedicated redis-server with requirepass)", () => {
    let server: LocalRedis | undefined;
    beforeAll(async () => {
      if (REDIS_SERVER_BIN !== undefined) server = await LocalRedis.start(["--requirepass", RIGHT]);
    });
    afterAll(async () => {
      await server?.stop();
    });

    it("WRONGPASS / NOAUTH: BackendError without the password, in every connection form", async (ctx) => {
      if (server === undefined) {
        console.warn(`[reliability] ${SUITE}: SKIPPED redis: no redis-server binary`);
        ctx.skip("no redis-server binary");
      }
      const { RedisBackend } = await adapter<typeof import("@sayiir/persistence-redis")>(
        "@sayiir/persistence-redis",
        ctx,
      );
      const port = server!.port;
      // The right password works (so the failure below is the password, not the setup).
      const ok = new RedisBackend({
        url: `redis://:${enc(RIGHT)}@127.0.0.1:${port}`,
        keyPrefix: "sec",
        operationTimeoutMs: 3000,
      });
      await ok.saveSnapshot({
        instanceId: "x",
        definitionHash: "h",
        createdAt: 1,
        updatedAt: 1,
        state: { kind: "Failed", error: "e" },
      });
      await ok.close();
      const forms: Array<[string, () => InstanceType<typeof RedisBackend>]> = [
        [
          "url (no user)",
          () =>
            new RedisBackend({ url: `redis://:${enc(WRONG)}@127.0.0.1:${port}`, operationTimeoutMs: 3000 }),
        ],
        [
          "url (default user)",
          () =>
            new RedisBackend({
              url: `redis://default:${enc(WRONG)}@127.0.0.1:${port}`,
              operationTimeoutMs: 3000,
            }),
        ],
        [
          "redis.password",
          () =>
            new RedisBackend({
              redis: { host: "127.0.0.1", port, password: WRONG },
              operationTimeoutMs: 3000,
            }),
        ],
        [
          "no password",
          () => new RedisBackend({ url: `redis://127.0.0.1:${port}`, operationTimeoutMs: 3000 }),
        ],
      ];
      for (const [form, make] of forms) {
        const backend = make();
        try {
          for (const [op, run] of [
            ["loadSnapshot", () => backend.loadSnapshot("x")],
            ["claimTask", () => backend.claimTask("x", "t", "w", 1000)],
          ] as const) {
            const started = Date.now();
            const error = await failure(run);
            assertNoSecret(`redis ${form} ${op}`, error, SECRETS);
            expect(Date.now() - started, `${form} ${op} fails within the operation timeout`).toBeLessThan(
              10_000,
            );
          }
        } finally {
          await backend.close().catch(() => {});
        }
      }
    });
  });

  describe("a password in the URL of a server that is not there", () => {
    const cases: Array<
      [
        BackendName,
        string,
        (ctx: {
          skip: (note?: string) => void;
        }) => Promise<{ run: () => Promise<unknown>; close: () => Promise<void> }>,
      ]
    > = [
      [
        "postgres",
        "@sayiir/persistence-postgres",
        async (ctx) => {
          const { PostgresBackend } = await adapter<typeof import("@sayiir/persistence-postgres")>(
            "@sayiir/persistence-postgres",
            ctx,
          );
          const b = new PostgresBackend({
            connectionString: `postgres://u:${enc(WRONG)}@127.0.0.1:1/db`,
            connectionTimeoutMs: 2000,
          });
          return { run: () => b.loadSnapshot("x"), close: () => b.close() };
        },
      ],
      [
        "redis",
        "@sayiir/persistence-redis",
        async (ctx) => {
          const { RedisBackend } = await adapter<typeof import("@sayiir/persistence-redis")>(
            "@sayiir/persistence-redis",
            ctx,
          );
          const b = new RedisBackend({
            url: `redis://user:${enc(WRONG)}@127.0.0.1:1`,
            operationTimeoutMs: 2000,
          });
          return { run: () => b.loadSnapshot("x"), close: () => b.close() };
        },
      ],
      [
        "mongo",
        "@sayiir/persistence-mongo",
        async (ctx) => {
          const mod = await adapter<Record<string, unknown>>("@sayiir/persistence-mongo", ctx);
          const MongoBackend = mod.MongoBackend as new (
            o: object,
          ) => { loadSnapshot: (id: string) => Promise<unknown>; close: () => Promise<void> };
          const b = new MongoBackend({
            url: `mongodb://user:${enc(WRONG)}@127.0.0.1:1/?authSource=admin`,
            database: "x",
            clientOptions: { serverSelectionTimeoutMS: 2000, connectTimeoutMS: 2000 },
          });
          return { run: () => b.loadSnapshot("x"), close: () => b.close() };
        },
      ],
      [
        "dynamodb",
        "@sayiir/persistence-dynamodb",
        async (ctx) => {
          const mod = await adapter<Record<string, unknown>>("@sayiir/persistence-dynamodb", ctx);
          const DynamoDBBackend = mod.DynamoDBBackend as new (
            o: object,
          ) => { loadSnapshot: (id: string) => Promise<unknown>; close: () => Promise<void> };
          const b = new DynamoDBBackend({
            tableName: "secrets-test",
            requestTimeoutMs: 2000,
            maxAttempts: 1,
            clientConfig: {
              endpoint: "http://127.0.0.1:1",
              region: "us-east-1",
              credentials: { accessKeyId: "AKIDSECRETTEST", secretAccessKey: WRONG },
            },
          });
          return { run: () => b.loadSnapshot("x"), close: () => b.close() };
        },
      ],
    ];
    for (const [name, , make] of cases) {
      it(`${name}: connection failure message carries no password`, async (ctx) => {
        const { run, close } = await make(ctx);
        try {
          assertNoSecret(`${name} unreachable`, await failure(run), SECRETS);
        } finally {
          await close().catch(() => {});
        }
      });
    }
  });

  it("can fail: a BackendError whose cause echoes the password is caught", () => {
    const leaky = Object.assign(new Error("login failed"), {
      code: "BACKEND",
      cause: new Error(`auth failed for redis://u:${enc(WRONG)}@h`),
    });
    expect(() => assertNoSecret("leaky", leaky, SECRETS)).toThrow(/appears in/);
  });
});
