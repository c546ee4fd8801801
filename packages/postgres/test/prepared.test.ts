import { atTask, text } from "@sayiir/persistence-core/conformance";
import type {} from "@sayiir/test-servers";
import pg from "pg";
import { afterAll, describe, expect, inject, it } from "vitest";
import { PostgresBackend } from "../src/index.js";
import { closeAdminPools, dropSchema, serverName, testSchema } from "./subject.js";

const servers = inject("postgres");
afterAll(closeAdminPools);

const prepared = async (pool: pg.Pool) =>
  (await pool.query<{ name: string }>("SELECT name FROM pg_prepared_statements ORDER BY name")).rows.map(
    (r) => r.name,
  );

/** One claim-next, one completeTasks and one load through `backend`. */
async function cycle(backend: PostgresBackend, prefix: string): Promise<void> {
  const ids = [`${prefix}"a,b`, `${prefix}{c}\\d`, `${prefix}é 😀'`];
  for (const id of ids) await backend.saveSnapshot(atTask(id, "t1", { initialInput: text(`in ${id}`) }));
  const claimed = await backend.claimAvailableTasks("w", 10, 60_000);
  expect(claimed.map((t) => t.instanceId).sort()).toEqual([...ids].sort());
  for (const t of claimed) expect(new TextDecoder().decode(t.input)).toBe(`in ${t.instanceId}`);
  const outcomes = await backend.completeTasks(
    claimed.map((t) => ({ claim: t.claim, output: text(`out ${t.instanceId}`) })),
  );
  expect(outcomes).toEqual(claimed.map(() => null));
  for (const id of ids) {
    const loaded = await backend.loadSnapshot(id);
    if (loaded.state.kind !== "InProgress") throw new Error("not InProgress");
    expect(new TextDecoder().decode(loaded.state.completedTasks.t1?.output)).toBe(`out ${id}`);
  }
}

describe.skipIf(servers.length === 0)("prepared statements", () => {
  for (const server of servers) {
    describe(serverName(server), () => {
      it("two schemas on one connection: each its own statement names, no clash", async () => {
        const pool = new pg.Pool({ connectionString: server.url, max: 1 });
        const schemas = [testSchema(), testSchema()];
        const backends = schemas.map((schema) => new PostgresBackend({ pool, schema }));
        try {
          for (const b of backends) await b.migrate();
          for (const [i, b] of backends.entries()) await cycle(b, `s${i}-`);
          for (const [i, b] of backends.entries()) await cycle(b, `again${i}-`);
          const names = await prepared(pool);
          expect(names.filter((n) => n.startsWith("sayiir_completeTasks_"))).toHaveLength(2);
          expect(names.filter((n) => n.startsWith("sayiir_claimNext10_"))).toHaveLength(2);
          for (const n of names) expect(Buffer.byteLength(n)).toBeLessThanOrEqual(63);
        } finally {
          for (const b of backends) await b.close();
          await pool.end();
          for (const schema of schemas) await dropSchema(server.url, schema);
        }
      });

      it("prepareStatements: false sends every statement unnamed", async () => {
        const pool = new pg.Pool({ connectionString: server.url, max: 1 });
        const schema = testSchema();
        const backend = new PostgresBackend({ pool, schema, prepareStatements: false });
        try {
          await backend.migrate();
          await cycle(backend, "p-");
          expect(await prepared(pool)).toEqual([]);
        } finally {
          await backend.close();
          await pool.end();
          await dropSchema(server.url, schema);
        }
      });
    });
  }
});
