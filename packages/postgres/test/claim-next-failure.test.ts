import { ErrorCode } from "@sayiir/persistence-core";
import { atTask, rejection, uid } from "@sayiir/persistence-core/conformance";
import type {} from "@sayiir/test-servers";
import pg from "pg";
import { afterAll, describe, expect, inject, it } from "vitest";
import { PostgresBackend } from "../src/index.js";
import { quoteIdentifier } from "../src/layout.js";
import { closeAdminPools, dropSchema, serverName, testSchema } from "./subject.js";

const servers = inject("postgres");
afterAll(closeAdminPools);

/** A pool whose claim-next statements fail (client side, before sending) while `failing()` says so. */
function poolFailingClaimNext(url: string, failing: () => boolean): pg.Pool {
  const pool = new pg.Pool({ connectionString: url, max: 4 });
  const query = pool.query.bind(pool) as (...args: unknown[]) => Promise<unknown>;
  (pool as unknown as { query: (...args: unknown[]) => Promise<unknown> }).query = (...args) => {
    const text = typeof args[0] === "string" ? args[0] : (args[0] as { text?: string }).text;
    if (text?.includes("FOR UPDATE OF s SKIP LOCKED") && failing()) {
      return Promise.reject(new Error("connection reset (injected)"));
    }
    return query(...args);
  };
  return pool;
}

// claimAvailableTasks claims and reads inputs in one statement, so a failure of that statement
// claims nothing. A call that needs several rounds (a candidate lost its claim insert) must not
// lose the claims of the rounds that committed when a later round fails: with no ttl they would
// hide their tasks forever.
for (const server of servers.slice(0, 1)) {
  describe(`claim-next failures: ${serverName(server)}`, () => {
    it("a failing claim-next statement claims nothing", async () => {
      const schema = testSchema();
      let fail = false;
      const pool = poolFailingClaimNext(server.url, () => fail);
      const backend = new PostgresBackend({ pool, schema });
      try {
        await backend.migrate();
        const ids = [uid("a"), uid("b"), uid("c")];
        for (const id of ids) await backend.saveSnapshot(atTask(id, "t1"));
        fail = true;
        expect(await rejection(backend.claimAvailableTasks("w1", 10, null))).toMatchObject({
          code: ErrorCode.Backend,
        });
        fail = false;
        expect(await backend.claimAvailableTasks("w2", 10, null)).toHaveLength(3);
      } finally {
        await backend.close();
        await pool.end();
        await dropSchema(server.url, schema);
      }
    });

    it("a server error inside the statement rolls back every claim of it", async () => {
      const schema = testSchema();
      const backend = new PostgresBackend({ connectionString: server.url, schema });
      const s = quoteIdentifier(schema);
      try {
        await backend.migrate();
        const ids = [uid("a"), uid("b"), uid("c")].sort();
        for (const [i, id] of ids.entries())
          await backend.saveSnapshot(atTask(id, "t1", { updatedAt: 1000 + i }));
        // The last candidate's claim insert raises: the first two were inserted by the same statement.
        await backend.pool.query(`
          CREATE FUNCTION ${s}.boom() RETURNS trigger LANGUAGE plpgsql AS $$
          BEGIN RAISE EXCEPTION 'injected'; END $$;
          CREATE TRIGGER boom BEFORE INSERT ON ${s}.claims FOR EACH ROW
            WHEN (NEW.instance_id = ${`'${ids[2]?.replaceAll("'", "''")}'`}) EXECUTE FUNCTION ${s}.boom()`);
        expect(await rejection(backend.claimAvailableTasks("w1", 10, null))).toMatchObject({
          code: ErrorCode.Backend,
        });
        await backend.pool.query(`DROP TRIGGER boom ON ${s}.claims`);
        expect((await backend.claimAvailableTasks("w2", 10, null)).map((t) => t.instanceId)).toEqual(ids);
      } finally {
        await backend.close();
        await dropSchema(server.url, schema);
      }
    });

    it("a later round failing hands back the claims of the rounds that committed", async () => {
      const schema = testSchema();
      let calls = 0;
      const pool = poolFailingClaimNext(server.url, () => ++calls >= 2);
      const backend = new PostgresBackend({ pool, schema });
      const s = quoteIdentifier(schema);
      try {
        await backend.migrate();
        const [stuck, a, b] = [uid("a-stuck"), uid("b"), uid("c")];
        await backend.saveSnapshot(atTask(stuck, "t1", { updatedAt: 1000 }));
        await backend.saveSnapshot(atTask(a, "t1", { updatedAt: 1001 }));
        await backend.saveSnapshot(atTask(b, "t1", { updatedAt: 1002 }));
        // The oldest candidate's claim insert is silently skipped, as if another worker's claim had
        // won the race: it comes back unclaimed, so the call runs a second round, which fails.
        await backend.pool.query(`
          CREATE FUNCTION ${s}.skip() RETURNS trigger LANGUAGE plpgsql AS $$
          BEGIN RETURN NULL; END $$;
          CREATE TRIGGER skip BEFORE INSERT ON ${s}.claims FOR EACH ROW
            WHEN (NEW.instance_id = ${`'${stuck.replaceAll("'", "''")}'`}) EXECUTE FUNCTION ${s}.skip()`);
        const got = await backend.claimAvailableTasks("w1", 10, null);
        expect(calls).toBe(2);
        expect(got.map((t) => t.instanceId)).toEqual([a, b]);
        // Those claims are live and fence writes.
        for (const task of got) {
          await backend.saveTaskResult(task.instanceId, task.taskId, new Uint8Array([1]), {
            claim: task.claim,
          });
        }
      } finally {
        await backend.close();
        await pool.end();
        await dropSchema(server.url, schema);
      }
    });
  });
}
