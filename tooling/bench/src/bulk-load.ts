// The Postgres fast path for pre-loading millions of snapshots that hold no task results, straight
// into the adapter's documented layout (its README's "Storage layout"): saveSnapshot (5 round trips
// in a transaction) loads ~2-3k/s here, too slow for scenario 3's millions.
import type { StoreConfig } from "@sayiir/backends";
import type { WorkflowSnapshot } from "@sayiir/persistence-core";

export const POSTGRES_BULK_LOAD_HOW =
  "multi-row INSERT ... SELECT FROM unnest(...) of 5,000 rows into the snapshots table as the README's " +
  "'Storage layout' documents it (header = core's encodeSnapshotHeader, ready_task_id null); " +
  "saveSnapshot (5 round trips in a transaction) loads ~2-3k/s here";

/** The snapshots table's columns and the task_results rows of `snapshots`. */
async function columns(snapshots: WorkflowSnapshot[]): Promise<{ cols: unknown[][]; results: unknown[][] }> {
  const { encodeSnapshotHeader } = await import("@sayiir/persistence-core");
  const cols: unknown[][] = [[], [], [], [], [], [], []];
  const results: unknown[][] = [[], [], []];
  for (const s of snapshots) {
    const { initialInput, ...rest } = s;
    const st = s.state;
    if (
      st.kind === "InProgress" &&
      st.position.kind === "AtTask" &&
      !Object.hasOwn(st.completedTasks, st.position.taskId)
    ) {
      throw new Error("bulkLoad is for snapshots without a ready task");
    }
    cols[0]!.push(s.instanceId);
    cols[1]!.push(s.definitionHash);
    cols[2]!.push(Buffer.from(encodeSnapshotHeader(rest)));
    cols[3]!.push(initialInput === undefined ? null : Buffer.from(initialInput));
    cols[4]!.push(st.kind !== "InProgress");
    cols[5]!.push(st.kind === "InProgress" ? st.lastCompletedTaskId : null);
    cols[6]!.push(String(s.updatedAt));
    if (st.kind === "InProgress") {
      for (const r of Object.values(st.completedTasks)) {
        results[0]!.push(s.instanceId);
        results[1]!.push(r.taskId);
        results[2]!.push(Buffer.from(r.output));
      }
    }
  }
  return { cols, results };
}

/** Inserts `snapshots` (none with a ready task) into a Postgres store in one transaction. */
export async function postgresBulkLoad(config: StoreConfig, snapshots: WorkflowSnapshot[]): Promise<void> {
  if (config.backend !== "postgres" || config.url === null) throw new Error("not a postgres store");
  const pg = (await import("pg")).default;
  const { cols, results } = await columns(snapshots);
  const client = new pg.Client({ connectionString: config.url });
  await client.connect();
  try {
    const schema = `"${config.storage.replaceAll('"', '""')}"`;
    await client.query("BEGIN");
    await client.query(
      `INSERT INTO ${schema}.snapshots
         (instance_id, definition_hash, header, initial_input, finished, last_completed_task_id, ready_task_id, updated_at)
       SELECT i, d, h, ii, f, l, NULL, u
       FROM unnest($1::text[], $2::text[], $3::bytea[], $4::bytea[], $5::boolean[], $6::text[], $7::bigint[])
         AS x(i, d, h, ii, f, l, u)`,
      cols,
    );
    if (results[0]!.length > 0) {
      await client.query(
        `INSERT INTO ${schema}.task_results (instance_id, task_id, output)
         SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[])`,
        results,
      );
    }
    await client.query("COMMIT");
  } finally {
    await client.end();
  }
}
