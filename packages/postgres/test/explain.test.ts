import { atTask, awaiting, inProgress, text } from "@sayiir/persistence-core/conformance";
import type {} from "@sayiir/test-servers";
import { afterAll, describe, expect, inject, it } from "vitest";
import { EVENTS_INDEX, LEASED_INDEX, READY_INDEX, TIMER_INDEX } from "../src/index.js";
import { layoutFor, quoteIdentifier } from "../src/layout.js";
import { statements } from "../src/sql.js";
import { adminPool, closeAdminPools, createSubject, serverName } from "./subject.js";

/** Polls `probe` until it returns a value (up to 5 s). */
async function eventually<T>(probe: () => Promise<T | undefined>): Promise<T> {
  for (let i = 0; i < 100; i++) {
    const value = await probe();
    if (value !== undefined) return value;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error("timed out");
}

const servers = inject("postgres");
afterAll(closeAdminPools);

function planText(rows: Array<Record<string, string>>): string {
  return rows.map((r) => Object.values(r)[0]).join("\n");
}

describe.skipIf(servers.length === 0)("discovery plan", () => {
  for (const server of servers) {
    it(`${serverName(server)}: discovery and claim-next read the partial indexes (ready, timers, leases), never scan snapshots`, async () => {
      const subject = await createSubject({}, {}, server);
      try {
        const { backend, schema } = subject;
        const s = quoteIdentifier(schema);
        const admin = adminPool(server.url);
        // 5,000 rows that are not ready (finished, at a fork, or their task done), bulk-inserted.
        await admin.query(
          `INSERT INTO ${s}.snapshots (instance_id, definition_hash, header, finished, ready_task_id, updated_at)
           SELECT 'bulk-' || g, 'h', '\\x00'::bytea, g % 2 = 0, NULL, 1700000000000 + g FROM generate_series(1, 5000) g`,
        );
        for (let i = 0; i < 40; i++) {
          await backend.saveSnapshot(
            atTask(`ready-${String(i).padStart(2, "0")}`, "t1", { updatedAt: 1_700_000_000_000 + i }),
          );
        }
        await backend.saveSnapshot(inProgress("not-started"));
        // 3,000 waits whose timeout is far off (in the timer index, not due), bulk-inserted; and
        // three waits due long ago, keyed after every ready row (by timeout_at, or by updated_at for
        // due-b, ready by its event: it leaves the timer index for the ready one).
        await admin.query(
          `INSERT INTO ${s}.snapshots (instance_id, definition_hash, header, finished, ready_task_id, updated_at, wait_event, wait_task, timeout_at,
             position_task_id, due_task_id, due_at, due_key)
           SELECT 'wait-' || g, 'h', '\\x00'::bytea, false, NULL, 1700000000000 + g, 'e', 't1', 4000000000000 + g,
             't1', 't1', 4000000000000 + g, 4000000000000 + g FROM generate_series(1, 3000) g`,
        );
        for (const [i, id] of ["due-a", "due-b", "due-c"].entries()) {
          await backend.saveSnapshot(
            awaiting(id, "e", "t1", { timeoutAt: 1_700_000_001_000 + i, updatedAt: 1_700_000_000_500 }),
          );
        }
        await backend.sendEvent("due-b", "e", text("event"));
        for (let i = 0; i < 5; i++)
          await backend.claimTask(`ready-${String(i).padStart(2, "0")}`, "t1", "other", 60_000);
        // Two more claimed by claim-next: these carry a lease and leave the ready index.
        expect((await backend.claimAvailableTasks("other", 2, 60_000)).map((t) => t.instanceId)).toEqual([
          "ready-05",
          "ready-06",
        ]);
        // 3,000 claims on other tasks, so that the claims table is not trivially small either.
        await admin.query(
          `INSERT INTO ${s}.claims (instance_id, task_id, worker_id, token, claimed_at, expires_at)
           SELECT 'bulk-' || g, 't1', 'w', nextval(${"'"}${s.replaceAll("'", "''")}.claim_tokens'), now(), now() + interval '1 hour'
           FROM generate_series(1, 3000) g`,
        );
        await admin.query(`ANALYZE ${s}.snapshots`);
        await admin.query(`ANALYZE ${s}.claims`);

        const sql = statements(layoutFor(schema), 60_000);
        const client = await admin.connect();
        try {
          // The fresh part: a Limit straight over the ready index, in index order (no Sort in
          // between). The expired part: a range of the leased index, up to now.
          const discovery = planText(
            (await client.query(`EXPLAIN ${sql.readyCandidates}`, [10, ["default"]])).rows,
          );
          expect(discovery).toMatch(
            new RegExp(`Limit[^\\n]*\\n\\s*->  Index Scan using ${READY_INDEX} on snapshots`),
          );
          expect(discovery).toMatch(
            new RegExp(
              `Index Scan using ${LEASED_INDEX} on snapshots[^\\n]*\\n\\s*Index Cond: \\(.*claimed_until <= now\\(\\)\\)`,
            ),
          );
          expect(discovery).toMatch(
            new RegExp(
              `Limit[^\\n]*\\n\\s*->  Index Scan using ${TIMER_INDEX} on snapshots[^\\n]*\\n\\s*Index Cond: \\(\\(queue = 'default'::text\\) AND \\(due_key <= `,
            ),
          );
          expect(discovery).not.toMatch(/Seq Scan/);
          const find = planText((await client.query(`EXPLAIN ${sql.findAvailable}`, [10, ["default"]])).rows);
          const claimNext = planText(
            (await client.query(`EXPLAIN ${sql.claimNext(10)}`, ["w", 30_000, ["default"]])).rows,
          );
          console.log(
            `[${serverName(server)}] EXPLAIN discovery:\n${discovery}\n\nEXPLAIN findAvailableTasks:\n${find}\n\nEXPLAIN claimAvailableTasks:\n${claimNext}`,
          );
          for (const plan of [find, claimNext]) {
            expect(plan).toContain(READY_INDEX);
            expect(plan).toContain(LEASED_INDEX);
            expect(plan).toContain(TIMER_INDEX);
            expect(plan).toContain(EVENTS_INDEX);
            expect(plan).not.toMatch(/Seq Scan on (snapshots|events)/);
          }
          expect(claimNext).toMatch(
            /CTE k2\n\s*-> {2}Limit[^\n]*\n\s*-> {2}LockRows[^\n]*\n\s*-> {2}Index Scan using snapshots_timers_idx/,
          );
          expect(claimNext).toMatch(
            /CTE k1\n\s*-> {2}Limit[^\n]*\n\s*-> {2}LockRows[^\n]*\n\s*-> {2}Index Scan using snapshots_ready_idx/,
          );

          // Prepared statements: the server may settle on the generic plan after five runs (the
          // task cycle's statements do, see sql.ts). Forced here, it must still read by index.
          await client.query("SET plan_cache_mode = force_generic_plan");
          const generic = async (name: string, types: string, text: string, args: string) => {
            await client.query(`PREPARE ${name}(${types}) AS ${text}`);
            return planText((await client.query(`EXPLAIN EXECUTE ${name}(${args})`)).rows);
          };
          const plans = {
            claimNext: await generic(
              "cn",
              "text, bigint, text[]",
              sql.claimNext(8),
              "'w', 1000, '{default}'",
            ),
            completeTasks: await generic(
              "ct",
              "text[], text[], bigint[], bytea[]",
              sql.completeTasks,
              `'{ready-05,ready-06}', '{t1,t1}', '{1,2}', '{"\\\\x00","\\\\x00"}'`,
            ),
            stepRead: await generic(
              "sr",
              "text[], text[], bigint[], text[], text[]",
              sql.stepRead,
              "'{ready-05,ready-06}', '{t1,t1}', '{1,2}', '{t2,t2}', '{e,NULL}'",
            ),
            stepWrite: await generic(
              "sw",
              `text[], text[], bigint[], bytea[], text[], bytea[], boolean[], text[], text[], bigint[], text[],
               text[], bigint[], text[], bigint[], bigint[], text[], boolean[], text[], bigint[]`,
              sql.stepWrite,
              `'{ready-05,ready-06}', '{t1,t1}', '{1,2}', '{"\\\\x00","\\\\x00"}', '{1,2}',
               '{"\\\\x00","\\\\x00"}', '{f,f}', '{t1,t1}', '{t2,NULL}', '{1,1}', '{NULL,e}', '{NULL,t2}',
               '{NULL,NULL}', '{t2,t2}', '{NULL,NULL}', '{3,3}', '{default,default}', '{t,t}', '{e,NULL}', '{5,NULL}'`,
            ),
            upsertResults: await generic(
              "ur",
              "text, text[], bytea[]",
              sql.upsertResults,
              `'ready-05', '{t1,t2}', '{"\\\\x00","\\\\x00"}'`,
            ),
            release: await generic("rl", "text, text, text", sql.releaseClaim, "'ready-05', 't1', 'w'"),
            extend: await generic(
              "ex",
              "text, text, text, bigint",
              sql.extendClaim,
              "'ready-05', 't1', 'w', 1000",
            ),
          };
          console.log(
            `[${serverName(server)}] generic plans:\n${Object.entries(plans)
              .map(([k, v]) => `${k}:\n${v}`)
              .join("\n\n")}`,
          );
          for (const plan of Object.values(plans)) {
            expect(plan).not.toMatch(/Seq Scan on (snapshots|claims|task_results|events)/);
          }
          expect(plans.claimNext).toMatch(/LockRows[^\n]*\n\s*-> {2}Index Scan using snapshots_ready_idx/);
          expect(plans.claimNext).toMatch(/LockRows[^\n]*\n\s*-> {2}Index Scan using snapshots_timers_idx/);
          expect(plans.completeTasks).toContain("Index Scan using claims_pkey");
          expect(plans.completeTasks).toMatch(/snapshots_pkey/);
          for (const plan of [plans.release, plans.extend]) {
            expect(plan).toContain("Index Scan using snapshots_pkey");
            expect(plan).not.toContain(LEASED_INDEX);
          }
          await client.query("RESET plan_cache_mode");
          await client.query("DEALLOCATE ALL");
        } finally {
          client.release();
        }
        // And the statements return the right rows over that data.
        const found = await backend.findAvailableTasks("w", 3);
        expect(found.map((t) => t.instanceId)).toEqual(["ready-07", "ready-08", "ready-09"]);
        const claimed = await backend.claimAvailableTasks("w", 2, 30_000);
        expect(claimed.map((t) => t.instanceId)).toEqual(["ready-07", "ready-08"]);
        // The waits after every ready row: due-b by its event (updatedAt), then the timed-out ones
        // (timeoutAt); none of the 3,000 far-off timers.
        const all = await backend.findAvailableTasks("w", 100);
        expect(all.map((t) => t.instanceId)).toEqual([
          ...Array.from({ length: 31 }, (_, i) => `ready-${String(i + 9).padStart(2, "0")}`),
          "due-b",
          "due-a",
          "due-c",
        ]);
        expect(all.filter((t) => t.timedOut).map((t) => t.instanceId)).toEqual(["due-a", "due-c"]);
        await backend.close();
      } finally {
        await subject.cleanup?.();
      }
    });

    it(`${serverName(server)}: another queue and tasks not due yet cost nothing: queue-led indexes, no Seq Scan`, async () => {
      const subject = await createSubject({}, {}, server);
      try {
        const { backend, schema } = subject;
        const s = quoteIdentifier(schema);
        const admin = adminPool(server.url);
        // 5,000 ready tasks in queue "bulk", and 3,000 tasks of "gpu" sleeping until far ahead
        // (runAt: in the timer index, not due), bulk-inserted.
        await admin.query(
          `INSERT INTO ${s}.snapshots (instance_id, definition_hash, header, finished, ready_task_id, updated_at,
             position_task_id, queue, ready_key)
           SELECT 'bulk-' || g, 'h', '\\x00'::bytea, false, 't1', 1700000000000 + g, 't1', 'bulk', 1700000000000 + g
           FROM generate_series(1, 5000) g`,
        );
        await admin.query(
          `INSERT INTO ${s}.snapshots (instance_id, definition_hash, header, finished, updated_at,
             position_task_id, queue, run_at, due_task_id, due_at, due_key)
           SELECT 'sleep-' || g, 'h', '\\x00'::bytea, false, 1700000000000 + g, 't1', 'gpu',
             4000000000000 + g, 't1', 4000000000000 + g, 4000000000000 + g
           FROM generate_series(1, 3000) g`,
        );
        const now = Date.now();
        await backend.saveSnapshot(
          inProgress("gpu-now", {
            position: { kind: "AtTask", taskId: "t1", queue: "gpu" },
            updatedAt: now - 10,
          }),
        );
        await backend.saveSnapshot(
          inProgress("gpu-due", {
            position: { kind: "AtTask", taskId: "t1", queue: "gpu", runAt: now + 300, priority: 1 },
          }),
        );
        await admin.query(`ANALYZE ${s}.snapshots`);
        const sql = statements(layoutFor(schema), 60_000);
        const plans = [
          planText((await admin.query(`EXPLAIN ${sql.findAvailable}`, [10, ["gpu"]])).rows),
          planText((await admin.query(`EXPLAIN ${sql.findAvailableFor(2)}`, [10, ["gpu", "default"]])).rows),
          planText(
            (await admin.query(`EXPLAIN ${sql.claimNext(10, 2)}`, ["w", 30_000, ["gpu", "default"]])).rows,
          ),
        ];
        for (const plan of plans) {
          expect(plan).toMatch(/Index Cond: \(queue = /);
          expect(plan).toContain(READY_INDEX);
          expect(plan).toContain(TIMER_INDEX);
          expect(plan).not.toMatch(/Seq Scan on (snapshots|claims|events|task_attempts)/);
        }
        expect(
          (await backend.findAvailableTasks("w", 100, { queues: ["gpu"] })).map((t) => t.instanceId),
        ).toEqual(["gpu-now"]);
        const due = await eventually(async () => {
          const found = await backend.findAvailableTasks("w", 100, { queues: ["gpu", "default"] });
          return found.length === 2 ? found : undefined;
        });
        // gpu-due (priority 1, key runAt - 2 x agingMs) goes before gpu-now (priority 3, key its write).
        expect(due.map((t) => [t.instanceId, t.priority, t.attempt])).toEqual([
          ["gpu-due", 1, 1],
          ["gpu-now", 3, 1],
        ]);
        await backend.close();
      } finally {
        await subject.cleanup?.();
      }
    });
  }
});
