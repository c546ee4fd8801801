import type { Layout } from "./layout.js";

/** Epoch milliseconds (bigint) of a timestamptz, on the server. */
const ms = (expr: string) => `floor(extract(epoch FROM ${expr}) * 1000)::bigint`;
/** Is the claim row `c` live on the server's clock? */
const live = (c: string) => `(${c}.expires_at IS NULL OR ${c}.expires_at > clock_timestamp())`;

/** Every statement the backend runs, built once per schema. Values are always bound parameters. */
export function statements(l: Layout) {
  /**
   * Ready tasks without a live claim, oldest updated_at first (ties by instance id, "C" order).
   * Reads the partial index over ready rows; claimed-but-ready rows are skipped by an anti-join
   * on the claims primary key.
   */
  const readyCandidates = (limitParam: string, lock: boolean) => `
    SELECT s.instance_id, s.ready_task_id AS task_id, s.updated_at
    FROM ${l.snapshots} s
    WHERE s.ready_task_id IS NOT NULL
      AND NOT EXISTS (
        SELECT 1 FROM ${l.claims} c
        WHERE c.instance_id = s.instance_id AND c.task_id = s.ready_task_id AND ${live("c")})
    ORDER BY s.updated_at, s.instance_id
    LIMIT ${limitParam}${lock ? "\n    FOR UPDATE OF s SKIP LOCKED" : ""}`;

  /** The input of a ready task: the last completed task's output, else the initial input, else empty. */
  const input = `coalesce(r.output, s.initial_input, ''::bytea)`;

  return {
    /**
     * Upsert of the snapshot row; the terminal-state guard is in the conflict clause, so it is
     * judged on the locked, latest row. No row back: refused (a finished workflow stays finished).
     */
    upsertSnapshot: `
      INSERT INTO ${l.snapshots} AS t
        (instance_id, definition_hash, header, initial_input, finished, last_completed_task_id, ready_task_id, updated_at)
      VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
      ON CONFLICT (instance_id) DO UPDATE SET
        definition_hash = excluded.definition_hash,
        header = excluded.header,
        initial_input = excluded.initial_input,
        finished = excluded.finished,
        last_completed_task_id = excluded.last_completed_task_id,
        ready_task_id = excluded.ready_task_id,
        updated_at = excluded.updated_at
      WHERE NOT (t.finished AND NOT excluded.finished)
      RETURNING 1`,

    deleteResults: `DELETE FROM ${l.taskResults} WHERE instance_id = $1`,

    /** Multi-row insert of task results ($1 = instance id, then task id / output pairs). */
    insertResults: (rows: number) => {
      const values = Array.from({ length: rows }, (_, i) => `($1, $${2 + 2 * i}, $${3 + 2 * i})`).join(", ");
      return `INSERT INTO ${l.taskResults} (instance_id, task_id, output) VALUES ${values}`;
    },

    /** Locks the live claim a fenced write names (FOR SHARE: a release or takeover waits for the write). */
    checkFence: `
      SELECT 1 FROM ${l.claims} c
      WHERE c.instance_id = $1 AND c.task_id = $2 AND c.token = $3 AND ${live("c")}
      FOR SHARE`,

    lockSnapshot: `SELECT finished FROM ${l.snapshots} WHERE instance_id = $1 FOR UPDATE`,

    upsertResult: `
      INSERT INTO ${l.taskResults} (instance_id, task_id, output) VALUES ($1, $2, $3)
      ON CONFLICT (instance_id, task_id) DO UPDATE SET output = excluded.output`,

    /** After a task result: it is the last one, updated_at never goes back, and its task is no longer ready. */
    touchAfterResult: `
      UPDATE ${l.snapshots} SET
        last_completed_task_id = $2,
        updated_at = greatest(updated_at, ${ms("clock_timestamp()")}),
        ready_task_id = CASE WHEN ready_task_id = $2 THEN NULL ELSE ready_task_id END
      WHERE instance_id = $1`,

    /**
     * The whole snapshot in one statement (so one MVCC snapshot): kind 0 is the snapshot row,
     * kind 1 the task results.
     */
    load: `
      SELECT 0 AS kind, NULL::text AS task_id, header AS data, initial_input AS extra,
             last_completed_task_id, updated_at::text AS updated_at
      FROM ${l.snapshots} WHERE instance_id = $1
      UNION ALL
      SELECT 1, r.task_id, r.output, NULL, NULL, NULL
      FROM ${l.taskResults} r
      WHERE r.instance_id = $1 AND EXISTS (SELECT 1 FROM ${l.snapshots} WHERE instance_id = $1)`,

    /** Deletes the snapshot and, only if it existed, its results and claims. */
    delete: `
      WITH d AS (DELETE FROM ${l.snapshots} WHERE instance_id = $1 RETURNING instance_id),
      r AS (DELETE FROM ${l.taskResults} WHERE instance_id = $1 AND EXISTS (SELECT 1 FROM d)),
      c AS (DELETE FROM ${l.claims} WHERE instance_id = $1 AND EXISTS (SELECT 1 FROM d))
      SELECT count(*)::int AS n FROM d`,

    /** Keyset page over the primary key ("C" collation): ids after the cursor, one extra to know if more follow. */
    listPage: `
      SELECT instance_id FROM ${l.snapshots}
      WHERE $1::text IS NULL OR instance_id > $1::text
      ORDER BY instance_id
      LIMIT $2`,

    /**
     * Takes the claim if there is none or the existing one has expired (server clock). A live
     * claim, the caller's own included, is left alone: no row back. A takeover draws a fresh token
     * after the row lock is held, so tokens on one (instance, task) only ever grow.
     */
    claim: `
      WITH n AS (SELECT clock_timestamp() AS t)
      INSERT INTO ${l.claims} AS c (instance_id, task_id, worker_id, token, claimed_at, expires_at)
      SELECT $1, $2, $3, nextval(${l.tokenSequence}), n.t, n.t + $4::bigint * interval '1 millisecond' FROM n
      ON CONFLICT (instance_id, task_id) DO UPDATE SET
        worker_id = excluded.worker_id,
        token = nextval(${l.tokenSequence}),
        claimed_at = excluded.claimed_at,
        expires_at = excluded.expires_at
      WHERE c.expires_at IS NOT NULL AND c.expires_at <= excluded.claimed_at
      RETURNING c.token::text AS token, ${ms("c.claimed_at")}::text AS claimed_at, ${ms("c.expires_at")}::text AS expires_at`,

    release: `DELETE FROM ${l.claims} WHERE instance_id = $1 AND task_id = $2 AND worker_id = $3`,

    /** Renewal: expiry = now + duration for a live claim of this worker; a claim without ttl stays so. */
    extend: `
      UPDATE ${l.claims} c SET
        expires_at = CASE WHEN c.expires_at IS NULL THEN NULL ELSE clock_timestamp() + $4::bigint * interval '1 millisecond' END
      WHERE c.instance_id = $1 AND c.task_id = $2 AND c.worker_id = $3 AND ${live("c")}
      RETURNING c.token::text AS token, ${ms("c.claimed_at")}::text AS claimed_at, ${ms("c.expires_at")}::text AS expires_at`,

    /** Who holds the claim (live or not), to tell NotFound from ClaimLost after a refused release/extend. */
    claimHolder: `SELECT worker_id FROM ${l.claims} WHERE instance_id = $1 AND task_id = $2`,

    readyCandidates: readyCandidates("$1", false),

    find: `
      WITH k AS (${readyCandidates("$1", false)})
      SELECT k.instance_id, k.task_id, s.definition_hash, ${input} AS input
      FROM k
      JOIN ${l.snapshots} s ON s.instance_id = k.instance_id
      LEFT JOIN ${l.taskResults} r ON r.instance_id = s.instance_id AND r.task_id = s.last_completed_task_id
      ORDER BY k.updated_at, k.instance_id`,

    /**
     * Claim-next in one statement: lock up to $2 candidate rows (SKIP LOCKED, so concurrent
     * workers take different ones) and claim each with the takeover-only-if-expired upsert. A
     * candidate whose claim insert lost a race comes back with a null token (the caller may retry
     * for the rest). Inputs are read afterwards by `claimedInputs`: under READ COMMITTED a locked
     * row may be a newer version than this statement's snapshot (another worker advanced and
     * committed it meanwhile), and its new result row is invisible here, so an input joined in
     * this statement could be stale.
     */
    claimNext: `
      WITH k AS (${readyCandidates("$2", true)}),
      n AS (SELECT clock_timestamp() AS t),
      cl AS (
        INSERT INTO ${l.claims} AS c (instance_id, task_id, worker_id, token, claimed_at, expires_at)
        SELECT k.instance_id, k.task_id, $1, nextval(${l.tokenSequence}), n.t, n.t + $3::bigint * interval '1 millisecond'
        FROM k CROSS JOIN n
        ORDER BY k.updated_at, k.instance_id
        ON CONFLICT (instance_id, task_id) DO UPDATE SET
          worker_id = excluded.worker_id,
          token = nextval(${l.tokenSequence}),
          claimed_at = excluded.claimed_at,
          expires_at = excluded.expires_at
        WHERE c.expires_at IS NOT NULL AND c.expires_at <= excluded.claimed_at
        RETURNING c.instance_id, c.task_id, c.token, c.claimed_at, c.expires_at
      )
      SELECT k.instance_id, k.task_id,
             cl.token::text AS token, ${ms("cl.claimed_at")}::text AS claimed_at, ${ms("cl.expires_at")}::text AS expires_at
      FROM k
      LEFT JOIN cl ON cl.instance_id = k.instance_id AND cl.task_id = k.task_id
      ORDER BY k.updated_at, k.instance_id`,

    /** The current ready task and input of freshly claimed instances, read in a new snapshot. */
    claimedInputs: `
      SELECT s.instance_id, s.ready_task_id, s.definition_hash, ${input} AS input
      FROM ${l.snapshots} s
      LEFT JOIN ${l.taskResults} r ON r.instance_id = s.instance_id AND r.task_id = s.last_completed_task_id
      WHERE s.instance_id = ANY($1::text[])`,

    /** Gives back a claim this worker just took, by its token. */
    dropClaim: `DELETE FROM ${l.claims} WHERE instance_id = $1 AND task_id = $2 AND token = $3`,

    corrupt: `UPDATE ${l.snapshots} SET header = $2 WHERE instance_id = $1`,
  };
}

export type Statements = ReturnType<typeof statements>;
