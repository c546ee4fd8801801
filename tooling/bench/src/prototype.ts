// A bench-side PROTOTYPE, not the adapter: what Postgres throughput would be if the adapter finished a
// task (fenced saveTaskResult + releaseTaskClaim) in ONE statement instead of seven (BEGIN, lock the
// snapshot, lock the fence's claim, upsert the result, touch the snapshot, COMMIT, then DELETE the
// claim). It writes the adapter's documented tables (packages/postgres/README.md, "Storage layout")
// with the adapter's own rules (snapshot row locked before the claim row, fence judged on the server
// clock, a finished workflow refused), and the exactly-once check reads the results back through the
// adapter. Shown as its own row so that the gain of fewer round trips is measured, not guessed.
import pg from "pg";

export type CompleteFn = (
  instanceId: string,
  taskId: string,
  workerId: string,
  token: number,
  output: Uint8Array,
) => Promise<void>;

export function onePostgresStatementComplete(
  url: string,
  schema: string,
  poolSize: number,
): {
  complete: CompleteFn;
  warmUp(connections: number): Promise<void>;
  close(): Promise<void>;
} {
  const pool = new pg.Pool({ connectionString: url, max: poolSize });
  pool.on("error", () => {});
  const s = `"${schema.replaceAll('"', '""')}"`;
  const sql = `
    WITH s AS (
      SELECT instance_id, finished FROM ${s}.snapshots WHERE instance_id = $1 FOR UPDATE
    ), f AS (
      SELECT 1 FROM ${s}.claims c, s
      WHERE c.instance_id = $1 AND c.task_id = $2 AND c.token = $4 AND c.worker_id = $5
        AND (c.expires_at IS NULL OR c.expires_at > clock_timestamp())
      FOR UPDATE OF c
    ), r AS (
      INSERT INTO ${s}.task_results (instance_id, task_id, output)
      SELECT $1, $2, $3 FROM s WHERE NOT s.finished AND EXISTS (SELECT 1 FROM f)
      ON CONFLICT (instance_id, task_id) DO UPDATE SET output = excluded.output
      RETURNING 1
    ), u AS (
      UPDATE ${s}.snapshots SET
        last_completed_task_id = $2,
        updated_at = greatest(updated_at, floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint),
        ready_task_id = CASE WHEN ready_task_id = $2 THEN NULL ELSE ready_task_id END
      WHERE instance_id = $1 AND EXISTS (SELECT 1 FROM r)
      RETURNING 1
    ), d AS (
      DELETE FROM ${s}.claims WHERE instance_id = $1 AND task_id = $2 AND token = $4 AND EXISTS (SELECT 1 FROM u)
      RETURNING 1
    )
    SELECT (SELECT count(*) FROM s)::int AS found, (SELECT count(*) FROM f)::int AS fenced,
           (SELECT count(*) FROM u)::int AS written, (SELECT count(*) FROM d)::int AS released`;
  return {
    async complete(instanceId, taskId, workerId, token, output) {
      // A named (prepared) statement: parsed and planned once per connection, not on every call.
      const r = await pool.query<{ found: number; fenced: number; written: number; released: number }>({
        name: `sayiir-bench-complete-${schema}`,
        text: sql,
        values: [
          instanceId,
          taskId,
          Buffer.from(output.buffer, output.byteOffset, output.byteLength),
          String(token),
          workerId,
        ],
      });
      const row = r.rows[0];
      if (!row || row.found === 0) throw Object.assign(new Error("no snapshot"), { code: "NOT_FOUND" });
      if (row.fenced === 0) throw Object.assign(new Error("claim lost"), { code: "CLAIM_LOST" });
      if (row.written === 0) throw Object.assign(new Error("finished"), { code: "CONFLICT" });
    },
    async warmUp(connections) {
      await Promise.all(Array.from({ length: connections }, () => pool.query("select 1")));
    },
    close: () => pool.end(),
  };
}
