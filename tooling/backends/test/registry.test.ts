import { existsSync } from "node:fs";
import { dirname } from "node:path";
import { atTask } from "@sayiir/persistence-core/conformance";
import { describe, expect, it } from "vitest";
import {
  BackendUnavailable,
  createRegistry,
  parseBackendName,
  type StoreConfig,
  serverAddress,
  urlsFromEnv,
} from "../src/index.ts";

describe("names and servers", () => {
  it("accepts every backend name and the mongodb alias, and names what it accepts otherwise", () => {
    expect(parseBackendName("mongo")).toBe("mongo");
    expect(parseBackendName("mongodb")).toBe("mongo");
    expect(parseBackendName("sqlite")).toBe("sqlite");
    expect(() => parseBackendName("mysql")).toThrow(/memory, sqlite, redis, postgres, mongo, dynamodb/);
  });

  it("finds a backend's server address in the URLs, by server kind", () => {
    const urls = { mongodb: "mongodb://127.0.0.1:4000", redis: "redis://localhost" };
    expect(serverAddress("mongo", urls)).toEqual({ host: "127.0.0.1", port: 4000 });
    expect(serverAddress("redis", urls)).toEqual({ host: "localhost", port: 6379 });
    expect(serverAddress("postgres", urls)).toBeNull();
    expect(serverAddress("sqlite", urls)).toBeNull();
    expect(urlsFromEnv({ SAYIIR_TEST_DYNAMODB_ENDPOINT: "http://x:1" }).dynamodb).toBe("http://x:1");
  });
});

describe("subjects without a server", () => {
  const registry = createRegistry({ prefix: "backends_test" });

  it("memory: clients share one store in this process; it is not durable", async () => {
    const subject = await registry.memory.create({});
    const other = await subject.connect();
    await subject.backend.saveSnapshot(atTask("m-1", "t"));
    expect((await other.loadSnapshot("m-1")).instanceId).toBe("m-1");
    expect(subject.backend.capabilities.durable).toBe(false);
    await subject.corrupt?.("m-1");
    await expect(other.loadSnapshot("m-1")).rejects.toMatchObject({ code: "SERIALIZATION" });
    await expect(registry.memory.open(subject.config)).rejects.toThrow(/lives in one process/);
  });

  it("sqlite: a fresh migrated file, another client by config, corruption, cleanup", async () => {
    const subject = await registry.sqlite.create({}, { tag: "t1" });
    expect(subject.config).toMatchObject({ backend: "sqlite", url: null, storage: subject.storage });
    const config: StoreConfig = JSON.parse(JSON.stringify(subject.config));
    const other = await registry.sqlite.open(config);
    await subject.backend.saveSnapshot(atTask("s-1", "t"));
    expect((await other.loadSnapshot("s-1")).instanceId).toBe("s-1");
    expect(other.capabilities.durable).toBe(true);
    await subject.corrupt?.("s-1");
    await expect(other.loadSnapshot("s-1")).rejects.toMatchObject({ code: "SERIALIZATION" });
    await other.close();
    await subject.backend.close();
    expect(existsSync(subject.storage)).toBe(true);
    await subject.cleanup();
    expect(existsSync(dirname(subject.storage))).toBe(false);
  });
});

describe("what cannot run is reported", () => {
  it("an adapter that does not load is BackendUnavailable with its package and the reason", async () => {
    const registry = createRegistry({
      modules: { sqlite: () => Promise.reject(new Error("no dist\nstack")) },
    });
    const failure = registry.sqlite.create({});
    await expect(failure).rejects.toBeInstanceOf(BackendUnavailable);
    await expect(failure).rejects.toThrow("@sayiir/persistence-sqlite does not load");
    await expect(registry.sqlite.create({})).rejects.toThrow(/: no dist$/);
    await expect(registry.sqlite.available({})).rejects.toThrow("@sayiir/persistence-sqlite does not load");
    await expect(createRegistry().sqlite.available({})).resolves.toBeUndefined();
    await expect(createRegistry().redis.available({})).rejects.toThrow("no redis server");
  });

  it("a module without the backend class, and a missing server, too", async () => {
    const registry = createRegistry({ modules: { sqlite: async () => ({}) } });
    await expect(registry.sqlite.create({})).rejects.toThrow(
      "@sayiir/persistence-sqlite exports no SqliteBackend",
    );
    await expect(registry.redis.create({ redis: null })).rejects.toThrow(
      new BackendUnavailable("no redis server"),
    );
  });
});

describe("client options reach the adapter's constructor", () => {
  it("storage, proxy, short timeouts, pool size and the tool's tuning (merged one level deep)", async () => {
    const seen: Array<Record<string, unknown>> = [];
    class FakePostgres {
      constructor(options: Record<string, unknown>) {
        seen.push(options);
      }
      async close() {}
    }
    const registry = createRegistry({
      prefix: "tool",
      client: { poolSize: 3 },
      tune: (name) =>
        name === "postgres" ? { statementTimeoutMs: 99, poolConfig: { keepAlive: false } } : undefined,
      modules: { postgres: async () => ({ PostgresBackend: FakePostgres }) },
    });
    const subject = await registry.postgres.create(
      { postgres: "postgres://u@db:5432/x" },
      { tag: "Scen", via: { host: "127.0.0.1", port: 9 }, timeoutMs: 50 },
    );
    expect(subject.storage).toMatch(/^tool_scen_[0-9a-f]{12}$/);
    // The migrator (straight to the server, no short timeouts), then the first client.
    expect(seen[0]).toMatchObject({
      poolConfig: { connectionString: "postgres://u@db:5432/x", max: 3, keepAlive: false },
      schema: subject.storage,
      statementTimeoutMs: 99,
    });
    expect(seen[0]).not.toHaveProperty("queryTimeoutMs");
    expect(seen[1]).toMatchObject({
      poolConfig: { connectionString: "postgres://u@127.0.0.1:9/x", max: 3, keepAlive: false },
      queryTimeoutMs: 50,
      statementTimeoutMs: 99,
    });
    await subject.connect({ direct: true, poolSize: 1 });
    expect(seen[2]).toMatchObject({ poolConfig: { connectionString: "postgres://u@db:5432/x", max: 1 } });
  });
});
