import { atTask, finished, text } from "@sayiir/persistence-core/conformance";
import type {} from "@sayiir/test-servers";
import { afterAll, describe, expect, inject, it } from "vitest";
import { FINISHED_INDEX } from "../src/index.js";
import { layoutFor, quoteIdentifier } from "../src/layout.js";
import { statements } from "../src/sql.js";
import { adminPool, closeAdminPools, createSubject, serverName } from "./subject.js";

const servers = inject("postgres");
afterAll(closeAdminPools);

function planText(rows: Array<Record<string, string>>): string {
  return rows.map((r) => Object.values(r)[0]).join("\n");
}

describe.skipIf(servers.length === 0)("retention plans", () => {
  for (const server of servers) {
    it(`${serverName(server)}: purge reads the finish-time index in order (unfinished rows cost nothing); the operator reads go by primary key`, async () => {
      const subject = await createSubject({}, {}, server);
      try {
        const { backend, schema } = subject;
        const s = quoteIdentifier(schema);
        const admin = adminPool(server.url);
        // 20,000 unfinished rows and 2,000 finished ones, bulk-inserted.
        await admin.query(
          `INSERT INTO ${s}.snapshots (instance_id, definition_hash, header, finished, updated_at)
           SELECT 'open-' || g, 'h', '\\x00'::bytea, false, 1700000000000 + g FROM generate_series(1, 20000) g`,
        );
        await admin.query(
          `INSERT INTO ${s}.snapshots (instance_id, definition_hash, header, finished, updated_at, finished_at)
           SELECT 'done-' || g, 'h', '\\x00'::bytea, true, 1700000000000 + g, 1700000000000 + g
           FROM generate_series(1, 2000) g`,
        );
        // 20,000 results of other instances, so that task_results is not trivially small.
        await admin.query(
          `INSERT INTO ${s}.task_results (instance_id, task_id, output)
           SELECT 'open-' || g, 't1', '\\x00'::bytea FROM generate_series(1, 20000) g`,
        );
        await backend.saveSnapshot(
          atTask("live", "t2", { completed: { t1: text("one"), t0: text("zero") } }),
        );
        await backend.saveSnapshot(finished("finished", { kind: "Completed", finalOutput: text("x") }));
        await admin.query(`ANALYZE ${s}.snapshots`);
        await admin.query(`ANALYZE ${s}.task_results`);

        const sql = statements(layoutFor(schema), 60_000);
        const client = await admin.connect();
        try {
          const custom = planText(
            (await client.query(`EXPLAIN ${sql.purgeSelect}`, [1_700_000_001_000, 100])).rows,
          );
          // A Limit over the row locks over the index, in its order: no Sort, no Seq Scan.
          await client.query("SET plan_cache_mode = force_generic_plan");
          await client.query(`PREPARE ps(bigint, bigint) AS ${sql.purgeSelect}`);
          const generic = planText((await client.query("EXPLAIN EXECUTE ps(1700000001000, 100)")).rows);
          await client.query("PREPARE lr(text, text) AS " + sql.loadTaskResult);
          const result = planText((await client.query("EXPLAIN VERBOSE EXECUTE lr('live', 't1')")).rows);
          await client.query("PREPARE lc(text) AS " + sql.loadTaskClaims);
          const claims = planText((await client.query("EXPLAIN EXECUTE lc('live')")).rows);
          await client.query("RESET plan_cache_mode");
          await client.query("DEALLOCATE ALL");
          console.log(
            `[${serverName(server)}] purgeSelect:\n${custom}\n\ngeneric:\n${generic}\n\nloadTaskResult:\n${result}\n\nloadTaskClaims:\n${claims}`,
          );
          for (const plan of [custom, generic]) {
            expect(plan).toMatch(
              new RegExp(
                `Limit[^\\n]*\\n\\s*->  LockRows[^\\n]*\\n\\s*->  Index Scan using ${FINISHED_INDEX}`,
              ),
            );
            expect(plan).toMatch(/Index Cond: \(.*finished_at < /);
            expect(plan).not.toMatch(/Seq Scan|Sort/);
          }
          // One result row by its full key, the snapshot row by its key; the header and the
          // initial input are not among the columns read.
          expect(result).toMatch(
            /Index Scan using task_results_pkey[^\n]*\n[^\n]*\n\s*Index Cond: \((?=[^\n]*r\.instance_id = )(?=[^\n]*r\.task_id = \$2)/,
          );
          expect(result).toContain("snapshots_pkey");
          expect(result).not.toMatch(/header|initial_input|Seq Scan/);
          expect(claims).toContain("claims_pkey");
          expect(claims).toContain("snapshots_pkey");
          expect(claims).not.toMatch(/Seq Scan/);
        } finally {
          client.release();
        }
        // And it purges the oldest finishes first, none of the unfinished rows.
        expect(await backend.purgeFinished({ finishedBefore: 1_700_000_000_011, limit: 100 })).toBe(10);
        const left = await admin.query<{ n: number }>(
          `SELECT count(*)::int AS n FROM ${s}.snapshots WHERE instance_id LIKE 'done-%'`,
        );
        expect(left.rows[0]?.n).toBe(1990);
        expect(await backend.loadTaskResult("live", "t1")).toEqual(text("one"));
        await backend.close();
      } finally {
        await subject.cleanup();
      }
    });
  }
});
