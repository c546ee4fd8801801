import { ErrorCode, encodeSnapshotHeader } from "@sayiir/persistence-core";
import { atTask, awaiting, claimOrFail, sleep, text, uid } from "@sayiir/persistence-core/conformance";
import type {} from "@sayiir/test-servers";
import pg from "pg";
import { afterAll, describe, expect, inject, it } from "vitest";
import { LATEST_VERSION, PostgresBackend } from "../src/index.js";
import { layoutFor, quoteIdentifier } from "../src/layout.js";
import type { FaultHooks } from "../src/options.js";
import { MIGRATIONS, schemaStatements } from "../src/schema.js";
import { adminPool, closeAdminPools, createSubject, serverName } from "./subject.js";

const servers = inject("postgres");
afterAll(closeAdminPools);

/** Holds the first `statement` a backend sends for `ms` (through FaultHooks), later ones go at once. */
function holdFirst(statement: string, ms: number): FaultHooks {
  let held = false;
  return {
    beforeQuery: async (name) => {
      if (name !== statement || held) return;
      held = true;
      await sleep(ms);
    },
  };
}

const HOUR = 3_600_000;

describe.skipIf(servers.length === 0)("scheduling on PostgreSQL", () => {
  for (const server of servers) {
    describe(serverName(server), () => {
      it("failTasks batches naming the same instances in opposite orders do not deadlock", async () => {
        const subject = await createSubject({}, {}, server);
        // Each batch pauses after the refusals of its first item (with its first row locked, before
        // the fix), so both batches hold one row before either asks for its second.
        const open = (faults: FaultHooks) =>
          new PostgresBackend({
            poolConfig: { connectionString: server.url, max: 4 },
            schema: subject.schema,
            faults,
          });
        const one = open(holdFirst("recordFailure", 300));
        const two = open(holdFirst("recordFailure", 300));
        try {
          const [a, b] = [uid("a"), uid("b")];
          await subject.backend.saveSnapshot(atTask(a, "t1"));
          await subject.backend.saveSnapshot(atTask(b, "t1"));
          const ca = await claimOrFail(subject.backend, a, "t1", "w", 60_000);
          const cb = await claimOrFail(subject.backend, b, "t1", "w", 60_000);
          const fail = (claim: typeof ca) => ({ claim, error: "boom", retryAt: null });
          const [r1, r2] = await Promise.allSettled([
            one.failTasks([fail(ca), fail(cb)]),
            two.failTasks([fail(cb), fail(ca)]),
          ]);
          // Neither call fails as a whole: one records both failures, the other finds the
          // claims released by it.
          expect(r1.status).toBe("fulfilled");
          expect(r2.status).toBe("fulfilled");
          const outcomes = [r1, r2].map((r) =>
            r.status === "fulfilled" ? r.value.map((o) => o?.code ?? null) : [],
          );
          expect(outcomes).toContainEqual([null, null]);
          expect(outcomes).toContainEqual([ErrorCode.ClaimLost, ErrorCode.ClaimLost]);
          for (const id of [a, b]) {
            expect((await subject.backend.loadSnapshot(id)).attempts?.t1?.count).toBe(1);
          }
        } finally {
          await Promise.all([one.close(), two.close()]);
          await subject.backend.close();
          await subject.cleanup();
        }
      });

      it("findAvailableTasks keeps a cached generic plan with many ready rows in another queue (no planning per call)", async () => {
        const subject = await createSubject({}, {}, server);
        const s = quoteIdentifier(subject.schema);
        const admin = adminPool(server.url);
        const pool = new pg.Pool({ connectionString: server.url, max: 1 });
        const backend = new PostgresBackend({ pool, schema: subject.schema });
        try {
          for (let i = 0; i < 12; i++) await subject.backend.saveSnapshot(atTask(uid(`d${i}`), "t1"));
          await admin.query(
            `INSERT INTO ${s}.snapshots (instance_id, definition_hash, header, finished, ready_task_id, updated_at,
               position_task_id, queue, ready_key)
             SELECT 'other-' || g, 'h', '\\x00'::bytea, false, 't1', 1600000000000 + g, 't1', 'other', 1600000000000 + g
             FROM generate_series(1, 50000) g`,
          );
          await admin.query(`ANALYZE ${s}.snapshots`);
          for (let i = 0; i < 20; i++) expect(await backend.findAvailableTasks("w", 10)).toHaveLength(10);
          // With LIMIT $1 the generic plan assumed 10% of the ready index and lost to a custom
          // plan, made again on every call (planning cost several times the execution).
          const version = Number((await pool.query("SHOW server_version_num")).rows[0]?.server_version_num);
          if (version >= 140000) {
            const plans = await pool.query<{ generic_plans: string; custom_plans: string }>(
              "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE name LIKE 'sayiir_findAvailable%'",
            );
            expect(plans.rows.map((r) => [Number(r.generic_plans), Number(r.custom_plans)])).toEqual([
              [15, 5],
            ]);
          }
          // The generic plan reads the queue-led indexes, with nested loops (no scan of a table).
          const client = await pool.connect();
          try {
            await client.query("SET plan_cache_mode = force_generic_plan");
            const { statements } = await import("../src/sql.js");
            await client.query(
              `PREPARE g AS ${statements(layoutFor(subject.schema), 60_000).findAvailableAt(10)}`,
            );
            const plan = (await client.query(`EXPLAIN EXECUTE g(ARRAY['default'])`)).rows
              .map((r: Record<string, string>) => Object.values(r)[0])
              .join("\n");
            expect(plan).toMatch(/Index Scan using snapshots_ready_idx[^\n]*\n\s*Index Cond: \(queue = /);
            expect(plan).not.toMatch(/Seq Scan|Hash/);
            await client.query("DEALLOCATE g; RESET plan_cache_mode");
          } finally {
            client.release();
          }
        } finally {
          await backend.close();
          await pool.end();
          await subject.backend.close();
          await subject.cleanup();
        }
      });

      it("a version-3 schema migrates to 4 and 5 keeping its ready tasks and due waits in order (priority 3, queue default)", async () => {
        const subject = await createSubject({}, {}, server);
        await subject.backend.close();
        const { schema } = subject;
        const l = layoutFor(schema);
        const admin = adminPool(server.url);
        await admin.query(`DROP SCHEMA ${l.s} CASCADE`);
        const sql = schemaStatements(l);
        await admin.query(sql.createSchema);
        await admin.query(sql.createMigrations);
        for (const m of MIGRATIONS.filter((m) => m.version <= 3)) {
          await admin.query(m.sql(l));
          await admin.query(sql.recordVersion, [m.version, m.name]);
        }
        // Rows as the version-3 release wrote them (its columns only).
        const insert = (
          id: string,
          snap: ReturnType<typeof atTask>,
          ready: string | null,
          at: number,
          wait: [string, string, number] | null,
        ) =>
          admin.query(
            `INSERT INTO ${l.snapshots} (instance_id, definition_hash, header, finished, ready_task_id, updated_at, wait_event, wait_task, timeout_at)
             VALUES ($1, 'h', $2, false, $3, $4, $5, $6, $7)`,
            [
              id,
              Buffer.from(encodeSnapshotHeader(snap)),
              ready,
              at,
              wait?.[0] ?? null,
              wait?.[1] ?? null,
              wait?.[2] ?? null,
            ],
          );
        await insert("r-2", atTask("r-2", "t1"), "t1", 2_000, null);
        await insert("r-1", atTask("r-1", "t1"), "t1", 1_000, null);
        await insert("w-1", awaiting("w-1", "e", "t1", { timeoutAt: 1_500 }), null, 10, ["e", "t1", 1_500]);
        const backend = new PostgresBackend({ connectionString: server.url, schema });
        try {
          expect(await backend.migrate()).toEqual({ applied: [4, 5, 6, 7], version: LATEST_VERSION });
          expect(
            (await backend.findAvailableTasks("w", 10)).map((x) => [
              x.instanceId,
              x.attempt,
              x.priority,
              x.queue,
            ]),
          ).toEqual([
            ["r-1", 1, 3, "default"],
            ["w-1", 1, 3, "default"],
            ["r-2", 1, 3, "default"],
          ]);
          expect(await backend.findAvailableTasks("w", 10, { queues: ["other"] })).toEqual([]);
          expect((await backend.loadSnapshot("r-1")).attempts).toBeUndefined();
          await backend.saveTaskResult("r-1", "t1", text("done"));
          const claimed = await backend.claimAvailableTasks("w", 10, 60_000);
          expect(claimed.map((x) => x.instanceId)).toEqual(["w-1", "r-2"]);
        } finally {
          await backend.close();
          await subject.cleanup();
        }
      });

      it("expired leases of another queue cost discovery nothing (leased index led by the queue)", async () => {
        const subject = await createSubject({}, {}, server);
        const s = quoteIdentifier(subject.schema);
        const admin = adminPool(server.url);
        try {
          for (let i = 0; i < 3; i++) await subject.backend.saveSnapshot(atTask(uid(`d${i}`), "t1"));
          // 20,000 tasks of "gpu" claimed by claim-next whose workers are gone: expired leases.
          await admin.query(
            `INSERT INTO ${s}.snapshots (instance_id, definition_hash, header, finished, ready_task_id, updated_at,
               position_task_id, queue, ready_key, claimed_until)
             SELECT 'gpu-' || g, 'h', '\\x00'::bytea, false, 't1', 1600000000000 + g, 't1', 'gpu', 1600000000000 + g,
               now() - interval '1 hour'
             FROM generate_series(1, 20000) g`,
          );
          await admin.query(`ANALYZE ${s}.snapshots`);
          const { statements } = await import("../src/sql.js");
          const sql = statements(layoutFor(subject.schema), 60_000);
          const plan = (
            await admin.query(`EXPLAIN (ANALYZE, BUFFERS) ${sql.findAvailable}`, [10, ["default"]])
          ).rows
            .map((r: Record<string, string>) => Object.values(r)[0])
            .join("\n");
          expect(plan).toMatch(
            /Index Scan using snapshots_leased_idx on snapshots[^\n]*\n\s*Index Cond: \(\(queue = /,
          );
          expect(plan).not.toMatch(/Rows Removed by Filter: \d{3,}/);
          expect(await subject.backend.findAvailableTasks("w", 10)).toHaveLength(3);
          expect(await subject.backend.findAvailableTasks("w", 10, { queues: ["gpu"] })).toHaveLength(10);
        } finally {
          await subject.backend.close();
          await subject.cleanup();
        }
      });

      it("claim-next racing claimTask + failTasks never serves a task after a failure that put it in the future", async () => {
        const subject = await createSubject({}, {}, server);
        const racer = await subject.connect();
        const { backend } = subject;
        try {
          for (let round = 0; round < 30; round++) {
            const id = uid(`race-${round}`);
            await backend.saveSnapshot(atTask(id, "t1"));
            const failing = (async () => {
              const claim = await backend.claimTask(id, "t1", "failer", 60_000);
              if (claim === null) return false;
              const [outcome] = await backend.failTasks([
                { claim, error: "boom", retryAt: Date.now() + HOUR },
              ]);
              expect(outcome).toBeNull();
              return true;
            })();
            const claiming = racer.claimAvailableTasks("runner", 1, 60_000);
            const [failed, claimed] = await Promise.all([failing, claiming]);
            const mine = claimed.filter((t) => t.instanceId === id);
            // Either the runner got the task first (the failer's claim was refused) or the failure
            // put it an hour ahead and the runner never sees it.
            expect(failed && mine.length > 0).toBe(false);
            for (const t of mine) expect(t.attempt).toBe(1);
            if (mine.length > 0) {
              for (const t of mine) await racer.completeTasks([{ claim: t.claim, output: new Uint8Array() }]);
            }
            expect((await backend.findAvailableTasks("x", 10)).filter((t) => t.instanceId === id)).toEqual(
              [],
            );
          }
        } finally {
          await racer.close();
          await backend.close();
          await subject.cleanup();
        }
      });
    });
  }
});
