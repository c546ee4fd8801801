import { BackendError, ValidationError } from "@sayiir/persistence-core";
import { atTask, rejection, uid } from "@sayiir/persistence-core/conformance";
import type {} from "@sayiir/test-servers";
import { afterAll, describe, expect, inject, it } from "vitest";
import { LATEST_VERSION, MIGRATIONS, PostgresBackend } from "../src/index.js";
import { quoteIdentifier } from "../src/layout.js";
import { adminPool, closeAdminPools, dropSchema, serverName, testSchema } from "./subject.js";

const servers = inject("postgres");
afterAll(closeAdminPools);

describe("options", () => {
  it("exactly one of connectionString, poolConfig or pool; a sane schema name", () => {
    expect(() => new PostgresBackend({})).toThrow(ValidationError);
    expect(() => new PostgresBackend({ connectionString: "postgres://x", poolConfig: {} })).toThrow(
      ValidationError,
    );
    expect(() => new PostgresBackend({ connectionString: "postgres://x", schema: "" })).toThrow(
      ValidationError,
    );
    expect(() => new PostgresBackend({ connectionString: "postgres://x", schema: "a\u0000b" })).toThrow(
      ValidationError,
    );
    expect(() => new PostgresBackend({ connectionString: "postgres://x", schema: "x".repeat(64) })).toThrow(
      ValidationError,
    );
    expect(() => new PostgresBackend({ connectionString: "postgres://x", statementTimeoutMs: -1 })).toThrow(
      ValidationError,
    );
  });
});

describe("capabilities", () => {
  it("the server's clock, durable, one ready index, pushed wake-ups with a 10 s bound, db.system postgresql (declared without I/O)", async () => {
    const backend = new PostgresBackend({ connectionString: "postgres://x" });
    expect(backend.capabilities).toEqual({
      durable: true,
      clock: "server",
      clockSkewMs: 0,
      shards: 1,
      wakeUps: "push",
      wakeBoundMs: 10_000,
      dbSystem: "postgresql",
    });
    await backend.close();
  });
});

describe.skipIf(servers.length === 0)("migrate", () => {
  for (const server of servers) {
    describe(serverName(server), () => {
      it("the constructor does no schema work; operations before migrate() fail with BackendError", async () => {
        const schema = testSchema();
        const backend = new PostgresBackend({ connectionString: server.url, schema });
        try {
          expect(await backend.schemaVersion()).toBe(0);
          expect(await rejection(backend.loadSnapshot("x"))).toBeInstanceOf(BackendError);
          const exists = await adminPool(server.url).query("SELECT 1 FROM pg_namespace WHERE nspname = $1", [
            schema,
          ]);
          expect(exists.rowCount).toBe(0);
        } finally {
          await backend.close();
        }
      });

      it("8 processes migrating one fresh schema at once: all succeed, each version applied once", async () => {
        const schema = testSchema();
        const backends = Array.from(
          { length: 8 },
          () => new PostgresBackend({ poolConfig: { connectionString: server.url, max: 1 }, schema }),
        );
        try {
          const reports = await Promise.all(backends.map((b) => b.migrate()));
          expect(reports.flatMap((r) => r.applied).sort()).toEqual(MIGRATIONS.map((m) => m.version));
          for (const r of reports) expect(r.version).toBe(LATEST_VERSION);
          const rows = await adminPool(server.url).query(
            `SELECT version FROM ${quoteIdentifier(schema)}.sayiir_migrations ORDER BY version`,
          );
          expect(rows.rows.map((r) => r.version)).toEqual(MIGRATIONS.map((m) => m.version));
          // Idempotent: again applies nothing, and data written in between stays.
          const id = uid();
          await backends[0]?.saveSnapshot(atTask(id, "t1"));
          expect(await backends[1]?.migrate()).toEqual({ applied: [], version: LATEST_VERSION });
          expect(await backends[2]?.listSnapshots()).toEqual([id]);
          expect(await backends[3]?.schemaVersion()).toBe(LATEST_VERSION);
        } finally {
          await Promise.all(backends.map((b) => b.close()));
          await dropSchema(server.url, schema);
        }
      });

      it("two schemas in one database are independent", async () => {
        const [a, b] = [testSchema(), testSchema()];
        const one = new PostgresBackend({ connectionString: server.url, schema: a });
        const two = new PostgresBackend({ connectionString: server.url, schema: b });
        try {
          await one.migrate();
          await two.migrate();
          await one.saveSnapshot(atTask("same-id", "t1"));
          expect(await two.listSnapshots()).toEqual([]);
          expect(await two.claimTask("same-id", "t1", "w")).not.toBeNull();
          expect(await one.claimTask("same-id", "t1", "w")).not.toBeNull();
        } finally {
          await one.close();
          await two.close();
          await dropSchema(server.url, a);
          await dropSchema(server.url, b);
        }
      });
    });
  }
});
