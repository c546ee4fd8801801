import type { PersistentBackend } from "@sayiir/persistence-core";
import { atTask, sleep, text, uid } from "@sayiir/persistence-core/conformance";
import type {} from "@sayiir/test-servers";
import { afterAll, describe, expect, inject, it } from "vitest";
import { LATEST_VERSION, MIGRATIONS, PostgresBackend } from "../src/index.js";
import { layoutFor, quoteIdentifier } from "../src/layout.js";
import { adminPool, closeAdminPools, createSubject, dropSchema, serverName, testSchema } from "./subject.js";

const servers = inject("postgres");
afterAll(closeAdminPools);

const dec = (b: Uint8Array) => new TextDecoder().decode(b);

/** The lease claim-next put on the instance's ready task, in server epoch ms (null: none). */
async function leaseOf(url: string, schema: string, instanceId: string): Promise<number | null> {
  const r = await adminPool(url).query<{ ms: string | null }>(
    `SELECT CASE WHEN claimed_until = 'infinity' THEN -1 ELSE floor(extract(epoch FROM claimed_until) * 1000) END::text AS ms
     FROM ${quoteIdentifier(schema)}.snapshots WHERE instance_id = $1`,
    [instanceId],
  );
  const ms = r.rows[0]?.ms;
  return ms == null ? null : Number(ms);
}

const offered = async (backend: PersistentBackend) =>
  (await backend.findAvailableTasks("probe", 10)).map((t) => `${t.instanceId}/${t.taskId}`);

// Claim-next puts a lease (snapshots.claimed_until) on the tasks it claims, so that they leave the
// ready index; the claims table stays the truth. These tests check that a task whose claim is gone
// never stays hidden behind a lease, and that a live claim keeps its task hidden.
describe.skipIf(servers.length === 0)("leases of claim-next", () => {
  for (const server of servers) {
    describe(serverName(server), () => {
      it("a released task is offered again at once, with or without a ttl", async () => {
        const subject = await createSubject({}, {}, server);
        const backend = subject.backend;
        try {
          for (const ttl of [null, 60_000]) {
            const id = uid();
            await backend.saveSnapshot(atTask(id, "t1"));
            const [task] = await backend.claimAvailableTasks("w1", 1, ttl);
            expect(task?.instanceId).toBe(id);
            expect(await leaseOf(server.url, subject.schema, id)).toBe(
              ttl === null ? -1 : task?.claim.expiresAt,
            );
            expect(await offered(backend)).toEqual([]);
            await backend.releaseTaskClaim(id, "t1", "w1");
            expect(await leaseOf(server.url, subject.schema, id)).toBeNull();
            expect(await offered(backend)).toEqual([`${id}/t1`]);
            const [again] = await backend.claimAvailableTasks("w2", 1, ttl);
            if (again === undefined) throw new Error("not offered again");
            expect(again.claim.token).toBeGreaterThan(task?.claim.token ?? Number.POSITIVE_INFINITY);
            expect(await backend.completeTasks([{ claim: again.claim, output: text("x") }])).toEqual([null]);
            expect(await leaseOf(server.url, subject.schema, id)).toBeNull();
          }
        } finally {
          await backend.close();
          await subject.cleanup?.();
        }
      });

      it("an extended claim keeps its task hidden past the first expiry, then it comes back", async () => {
        const subject = await createSubject({}, {}, server);
        const backend = subject.backend;
        try {
          const id = uid();
          await backend.saveSnapshot(atTask(id, "t1"));
          const [task] = await backend.claimAvailableTasks("w1", 1, 300);
          const renewed = await backend.extendTaskClaim(id, "t1", "w1", 1_500);
          expect(await leaseOf(server.url, subject.schema, id)).toBe(renewed.expiresAt);
          await sleep(500);
          expect(await offered(backend)).toEqual([]);
          expect(await backend.claimAvailableTasks("w2", 1, 60_000)).toEqual([]);
          await sleep(1_300);
          const [again] = await backend.claimAvailableTasks("w2", 1, 60_000);
          expect(again?.instanceId).toBe(id);
          expect(again?.claim.token).toBeGreaterThan(task?.claim.token ?? Number.POSITIVE_INFINITY);
        } finally {
          await backend.close();
          await subject.cleanup?.();
        }
      });

      it("a claimTask takeover of an expired lease hides the task while it lives; its release shows it", async () => {
        const subject = await createSubject({}, {}, server);
        const backend = subject.backend;
        try {
          const id = uid();
          await backend.saveSnapshot(atTask(id, "t1"));
          await backend.claimAvailableTasks("w1", 1, 200);
          await sleep(350);
          expect(await offered(backend)).toEqual([`${id}/t1`]);
          expect(await backend.claimTask(id, "t1", "w2", 60_000)).not.toBeNull();
          expect(await offered(backend)).toEqual([]);
          expect(await backend.claimAvailableTasks("w3", 5, 60_000)).toEqual([]);
          await backend.releaseTaskClaim(id, "t1", "w2");
          expect((await backend.claimAvailableTasks("w3", 5, 60_000)).map((t) => t.instanceId)).toEqual([id]);
        } finally {
          await backend.close();
          await subject.cleanup?.();
        }
      });

      it("a snapshot moved on to its next task ends the lease; the same task keeps it", async () => {
        const subject = await createSubject({}, {}, server);
        const backend = subject.backend;
        try {
          const id = uid();
          await backend.saveSnapshot(atTask(id, "t1", { initialInput: text("in") }));
          const [task] = await backend.claimAvailableTasks("w1", 1, null);
          if (task === undefined) throw new Error("nothing claimed");
          // Saved again at the same task (a checkpoint): still claimed, still hidden.
          await backend.saveSnapshot(atTask(id, "t1", { initialInput: text("in") }), { claim: task.claim });
          expect(await leaseOf(server.url, subject.schema, id)).toBe(-1);
          expect(await offered(backend)).toEqual([]);
          // Moved on: t2 is ready and offered at once, with t1's output as input.
          await backend.saveSnapshot(
            atTask(id, "t2", { initialInput: text("in"), completed: { t1: text("out-1") } }),
            {
              claim: task.claim,
            },
          );
          expect(await leaseOf(server.url, subject.schema, id)).toBeNull();
          const [next] = await backend.claimAvailableTasks("w2", 1, null);
          expect(next?.taskId).toBe("t2");
          expect(dec(next?.input ?? new Uint8Array())).toBe("out-1");
        } finally {
          await backend.close();
          await subject.cleanup?.();
        }
      });

      it("a version-1 store migrates to the latest version with its claims and ready tasks intact", async () => {
        const schema = testSchema();
        const l = layoutFor(schema);
        const admin = adminPool(server.url);
        let backend: PostgresBackend | undefined;
        try {
          await admin.query(`CREATE SCHEMA ${l.s}`);
          await admin.query(
            `CREATE TABLE ${l.migrations} (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`,
          );
          const v1 = MIGRATIONS[0];
          if (v1 === undefined) throw new Error("no migration 1");
          await admin.query(v1.sql(l));
          await admin.query(`INSERT INTO ${l.migrations} (version, name) VALUES (1, $1)`, [v1.name]);
          await admin.query(
            `INSERT INTO ${l.snapshots} (instance_id, definition_hash, header, initial_input, finished, ready_task_id, updated_at)
             SELECT 'v1-' || g, 'h', '\\x00'::bytea, '\\x01'::bytea, false, 't1', 1000 + g FROM generate_series(1, 6) g`,
          );
          // v1-1 and v1-2 are claimed (one live, one without ttl); v1-3's claim has expired.
          await admin.query(
            `INSERT INTO ${l.claims} (instance_id, task_id, worker_id, token, claimed_at, expires_at) VALUES
               ('v1-1', 't1', 'old', nextval(${l.tokenSequence}), now(), now() + interval '1 hour'),
               ('v1-2', 't1', 'old', nextval(${l.tokenSequence}), now(), NULL),
               ('v1-3', 't1', 'old', nextval(${l.tokenSequence}), now() - interval '1 hour', now() - interval '1 minute')`,
          );
          backend = new PostgresBackend({ connectionString: server.url, schema });
          expect(await backend.migrate()).toEqual({ applied: [2, 3, 4, 5, 6, 7], version: LATEST_VERSION });
          expect(await offered(backend)).toEqual(["v1-3/t1", "v1-4/t1", "v1-5/t1", "v1-6/t1"]);
          const got = await backend.claimAvailableTasks("new", 10, 60_000);
          expect(got.map((t) => t.instanceId)).toEqual(["v1-3", "v1-4", "v1-5", "v1-6"]);
          expect(await backend.claimAvailableTasks("new", 10, 60_000)).toEqual([]);
          await backend.releaseTaskClaim("v1-1", "t1", "old");
          expect((await backend.claimAvailableTasks("new", 10, 60_000)).map((t) => t.instanceId)).toEqual([
            "v1-1",
          ]);
        } finally {
          await backend?.close();
          await dropSchema(server.url, schema);
        }
      });
    });
  }
});
