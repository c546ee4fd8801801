import { ErrorCode } from "@sayiir/persistence-core";
import { atTask, rejection, uid } from "@sayiir/persistence-core/conformance";
import type {} from "@sayiir/test-servers";
import pg from "pg";
import { afterAll, describe, expect, inject, it } from "vitest";
import { PostgresBackend } from "../src/index.js";
import { closeAdminPools, dropSchema, serverName, testSchema } from "./subject.js";

const servers = inject("postgres");
afterAll(closeAdminPools);

// claimAvailableTasks claims in one statement, then reads the inputs in a second one. If that
// second statement fails, the claims that committed must not be left behind: with no ttl they
// would hide their tasks forever.
for (const server of servers.slice(0, 1)) {
  describe(`claim-next failing after its claims committed: ${serverName(server)}`, () => {
    it("gives the claims back, so the tasks stay claimable", async () => {
      const schema = testSchema();
      const pool = new pg.Pool({ connectionString: server.url, max: 4 });
      const query = pool.query.bind(pool) as (...args: unknown[]) => Promise<unknown>;
      let failNextInputs = false;
      (pool as unknown as { query: (...args: unknown[]) => Promise<unknown> }).query = (...args) => {
        const text = typeof args[0] === "string" ? args[0] : (args[0] as { text?: string }).text;
        if (failNextInputs && text?.includes("WHERE s.instance_id = ANY(")) {
          failNextInputs = false;
          return Promise.reject(new Error("connection reset (injected)"));
        }
        return query(...args);
      };
      const backend = new PostgresBackend({ pool, schema });
      try {
        await backend.migrate();
        const ids = [uid("a"), uid("b"), uid("c")];
        for (const id of ids) await backend.saveSnapshot(atTask(id, "t1"));
        failNextInputs = true;
        expect(await rejection(backend.claimAvailableTasks("w1", 10, null))).toMatchObject({
          code: ErrorCode.Backend,
        });
        expect((await backend.findAvailableTasks("w2", 10)).map((t) => t.instanceId).sort()).toEqual(
          [...ids].sort(),
        );
        expect(await backend.claimAvailableTasks("w2", 10, null)).toHaveLength(3);
      } finally {
        await backend.close();
        await pool.end();
        await dropSchema(server.url, schema);
      }
    });
  });
}
