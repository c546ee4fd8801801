import type { TaskClaim } from "@sayiir/persistence-core";
import type { Layout } from "./layout.js";

/** Epoch milliseconds (bigint) of a timestamptz, on the server. */
const ms = (expr: string) => `floor(extract(epoch FROM ${expr}) * 1000)::bigint`;
/** Is the claim row `c` live on the server's clock? */
const live = (c: string) => `(${c}.expires_at IS NULL OR ${c}.expires_at > clock_timestamp())`;

/** No live claim on the row's ready task (a primary-key probe per candidate). */
const unclaimed = (l: Layout) => `NOT EXISTS (
        SELECT 1 FROM ${l.claims} c
        WHERE c.instance_id = s.instance_id AND c.task_id = s.ready_task_id AND ${live("c")})`;

/**
 * Ready tasks, oldest updated_at first (ties by instance id, "C" order), in two parts:
 *
 * - `fresh`: rows with no lease (claimed_until null), from snapshots_ready_idx in index order.
 *   A claimed row leaves that index when claim-next takes it, so a scan does not walk past
 *   the tasks in flight. A claim taken otherwise (claimTask) leaves no lease; the anti-join on
 *   the claims primary key skips it.
 * - `expired`: rows whose lease has run out (claimed_until <= now), from snapshots_leased_idx
 *   (ordered by lease end, so the scan stops at the first lease still running). Their claim
 *   may have been renewed since (the claims table decides, through the same anti-join).
 *
 * The lease is only a hint for finding candidates: the claims table stays the truth. It is
 * never later than the claim's expiry (claim-next and extend set it to it, release and
 * completion clear it), so a task whose claim is gone is always in one of the two parts.
 */
const fresh = (l: Layout, limit: string, lock: boolean) => `
    SELECT s.instance_id, s.ready_task_id AS task_id, s.updated_at${lock ? ", s.ctid AS tid" : ""}
    FROM ${l.snapshots} s
    WHERE s.ready_task_id IS NOT NULL AND s.claimed_until IS NULL
      AND ${unclaimed(l)}
    ORDER BY s.updated_at, s.instance_id
    LIMIT ${limit}${lock ? "\n    FOR UPDATE OF s SKIP LOCKED" : ""}`;
const expired = (l: Layout, limit: string, lock: boolean) => `
    SELECT s.instance_id, s.ready_task_id AS task_id, s.updated_at${lock ? ", s.ctid AS tid" : ""}
    FROM ${l.snapshots} s
    WHERE s.ready_task_id IS NOT NULL AND s.claimed_until IS NOT NULL AND s.claimed_until <= now()
      AND ${unclaimed(l)}
    ORDER BY s.updated_at, s.instance_id
    LIMIT ${limit}${lock ? "\n    FOR UPDATE OF s SKIP LOCKED" : ""}`;
/** Both parts merged: the `limit` oldest ready tasks without a live claim. */
const readyCandidates = (l: Layout, limit: string) => `
    SELECT * FROM (
      (${fresh(l, limit, false)})
      UNION ALL
      (${expired(l, limit, false)})
    ) u
    ORDER BY u.updated_at, u.instance_id
    LIMIT ${limit}`;

/** The input of a ready task: the last completed task's output, else the initial input, else empty. */
const input = `coalesce(r.output, s.initial_input, ''::bytea)`;

/**
 * Every statement the backend runs, built once per schema and named after the operation it
 * serves; the SQLite adapter names the same statements the same way (see the README, "How the
 * operations work"). Values are always bound parameters.
 */
export function statements(l: Layout) {
  return {
    ...snapshotWrites(l),
    ...snapshotReads(l),
    ...claimStatements(l),
    ...discovery(l),
    ...completion(l),
  };
}

/** saveSnapshot and saveTaskResult: the writes of a snapshot and of one task result, and their checks. */
function snapshotWrites(l: Layout) {
  return {
    /**
     * Upsert of the snapshot row; the terminal-state guard is in the conflict clause, so it is
     * judged on the locked, latest row. No row back: refused (a finished workflow stays finished).
     * The lease stays while the ready task stays the same (its claim still holds it).
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
        updated_at = excluded.updated_at,
        claimed_until = CASE WHEN t.ready_task_id = excluded.ready_task_id THEN t.claimed_until END
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
    recordResult: `
      UPDATE ${l.snapshots} SET
        last_completed_task_id = $2,
        updated_at = greatest(updated_at, ${ms("clock_timestamp()")}),
        ready_task_id = CASE WHEN ready_task_id = $2 THEN NULL ELSE ready_task_id END,
        claimed_until = CASE WHEN ready_task_id = $2 THEN NULL ELSE claimed_until END
      WHERE instance_id = $1`,
  };
}

/** loadSnapshot, deleteSnapshot and listSnapshotsPage. */
function snapshotReads(l: Layout) {
  return {
    /**
     * The whole snapshot in one statement (so one MVCC snapshot): kind 0 is the snapshot row,
     * kind 1 the task results.
     */
    loadSnapshot: `
      SELECT 0 AS kind, NULL::text AS task_id, header AS data, initial_input AS extra,
             last_completed_task_id, updated_at::text AS updated_at
      FROM ${l.snapshots} WHERE instance_id = $1
      UNION ALL
      SELECT 1, r.task_id, r.output, NULL, NULL, NULL
      FROM ${l.taskResults} r
      WHERE r.instance_id = $1 AND EXISTS (SELECT 1 FROM ${l.snapshots} WHERE instance_id = $1)`,

    /**
     * Deletes the snapshot and, only if it existed, its results and claims. `moved`: the row
     * deleted is not the version this statement's snapshot sees, i.e. a write committed while
     * the delete waited for the row lock (or just before it). Every write of task results also
     * writes the snapshot row, so only then can results exist that r did not see: the caller
     * runs `deleteOrphanResults` in a new statement.
     */
    deleteSnapshot: `
      WITH d AS (DELETE FROM ${l.snapshots} t WHERE t.instance_id = $1 RETURNING t.ctid AS tid),
      v AS (SELECT t.ctid AS tid FROM ${l.snapshots} t WHERE t.instance_id = $1),
      r AS (DELETE FROM ${l.taskResults} WHERE instance_id = $1 AND EXISTS (SELECT 1 FROM d)),
      c AS (DELETE FROM ${l.claims} WHERE instance_id = $1 AND EXISTS (SELECT 1 FROM d))
      SELECT count(*)::int AS n, NOT EXISTS (SELECT 1 FROM d JOIN v ON v.tid = d.tid) AS moved FROM d`,

    /**
     * The results a racing write committed after the delete's snapshot. Nothing is removed if the
     * instance exists again (a saveSnapshot that re-created it replaces the results itself).
     */
    deleteOrphanResults: `
      DELETE FROM ${l.taskResults} r
      WHERE r.instance_id = $1 AND NOT EXISTS (SELECT 1 FROM ${l.snapshots} t WHERE t.instance_id = $1)`,

    /** Keyset page over the primary key ("C" collation): ids after the cursor, one extra to know if more follow. */
    listPage: `
      SELECT instance_id FROM ${l.snapshots}
      WHERE $1::text IS NULL OR instance_id > $1::text
      ORDER BY instance_id
      LIMIT $2`,
  };
}

/** claimTask, releaseTaskClaim and extendTaskClaim. */
function claimStatements(l: Layout) {
  return {
    /**
     * Takes the claim if there is none or the existing one has expired (server clock). A live
     * claim, the caller's own included, is left alone: no row back. A takeover draws a fresh token
     * after the row lock is held, so tokens on one (instance, task) only ever grow.
     */
    claimTask: `
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

    /**
     * Deletes this worker's claim (live or expired) and ends the lease of the ready task it held,
     * so claim-next sees the task at once. The snapshot row, when this task is its ready one, is
     * locked first (the `>= 0` subquery runs before any claim row is touched): the lock order of
     * every write. The lease is only tested in the select list, so that the planner reads the row
     * by primary key rather than by walking the leased index.
     */
    releaseClaim: `
      WITH s AS (
        SELECT t.claimed_until IS NOT NULL AS leased FROM ${l.snapshots} t
        WHERE t.instance_id = $1 AND t.ready_task_id = $2
        FOR UPDATE
      ),
      d AS (
        DELETE FROM ${l.claims} c
        WHERE c.instance_id = $1 AND c.task_id = $2 AND c.worker_id = $3 AND (SELECT count(*) FROM s) >= 0
        RETURNING 1
      ),
      u AS (
        UPDATE ${l.snapshots} t SET claimed_until = NULL
        WHERE t.instance_id = $1 AND (SELECT leased FROM s) AND EXISTS (SELECT 1 FROM d)
      )
      SELECT count(*)::int AS n FROM d`,

    /**
     * Renewal: expiry = now + duration for a live claim of this worker; a claim without ttl stays
     * so. A lease on the task moves with it (snapshot row locked first, as in release).
     */
    extendClaim: `
      WITH s AS (
        SELECT t.claimed_until IS NOT NULL AS leased FROM ${l.snapshots} t
        WHERE t.instance_id = $1 AND t.ready_task_id = $2
        FOR UPDATE
      ),
      c AS (
        UPDATE ${l.claims} c SET
          expires_at = CASE WHEN c.expires_at IS NULL THEN NULL ELSE clock_timestamp() + $4::bigint * interval '1 millisecond' END
        WHERE c.instance_id = $1 AND c.task_id = $2 AND c.worker_id = $3 AND ${live("c")}
          AND (SELECT count(*) FROM s) >= 0
        RETURNING c.token, c.claimed_at, c.expires_at
      ),
      u AS (
        UPDATE ${l.snapshots} t SET claimed_until = coalesce(c.expires_at, 'infinity'::timestamptz)
        FROM c
        WHERE t.instance_id = $1 AND (SELECT leased FROM s)
      )
      SELECT c.token::text AS token, ${ms("c.claimed_at")}::text AS claimed_at, ${ms("c.expires_at")}::text AS expires_at
      FROM c`,

    /** Who holds the claim (live or not), to tell NotFound from ClaimLost after a refused release/extend. */
    readClaim: `SELECT worker_id FROM ${l.claims} WHERE instance_id = $1 AND task_id = $2`,
  };
}

/** findAvailableTasks and claimAvailableTasks (claim-next). */
function discovery(l: Layout) {
  return {
    readyCandidates: readyCandidates(l, "$1"),

    findAvailable: `
      WITH k AS (${readyCandidates(l, "$1")})
      SELECT k.instance_id, k.task_id, s.definition_hash, ${input} AS input
      FROM k
      JOIN ${l.snapshots} s ON s.instance_id = k.instance_id
      LEFT JOIN ${l.taskResults} r ON r.instance_id = s.instance_id AND r.task_id = s.last_completed_task_id
      ORDER BY k.updated_at, k.instance_id`,

    /**
     * Claim-next in one statement: lock up to `limit` candidate rows of each part (SKIP LOCKED,
     * so concurrent workers take different ones), keep the `limit` oldest, claim each with the
     * takeover-only-if-expired upsert, put the lease on the claimed rows (h: they leave the ready
     * index), and return each claimed task with its input. A candidate whose claim insert lost a
     * race comes back with a null token (the caller may retry for the rest).
     *
     * The input is only trusted when the locked row is the very version this statement's
     * snapshot sees (same ctid). Under READ COMMITTED, SKIP LOCKED follows a row that another
     * transaction updated and committed after the snapshot was taken, and locks the newer
     * version; that write's task result is invisible to this snapshot, so an input joined here
     * would be stale. Such a row is not claimed at all (null token, like a lost race), and the
     * caller's next statement, with a new snapshot, sees it whole. Every write that changes an
     * instance's results also writes its snapshot row, so "same row version" implies "same results".
     *
     * $1 = worker id, $2 = ttl ms. The limit is a literal for the sizes the backend prepares
     * (see claimNextStatements in prepared.ts): with LIMIT $n the server's generic plan assumes
     * 10% of the table and is never preferred, so every call would be planned again.
     */
    claimNext: (limit: number | "$3") => `
      WITH k1 AS (${fresh(l, String(limit), true)}),
      k2 AS (${expired(l, String(limit), true)}),
      k AS (
        SELECT * FROM k1 UNION ALL SELECT * FROM k2
        ORDER BY updated_at, instance_id
        LIMIT ${limit}
      ),
      v AS (
        SELECT k.instance_id, k.task_id, k.updated_at, s.definition_hash, ${input} AS input
        FROM k
        JOIN ${l.snapshots} s ON s.instance_id = k.instance_id AND s.ctid = k.tid
        LEFT JOIN ${l.taskResults} r ON r.instance_id = s.instance_id AND r.task_id = s.last_completed_task_id
      ),
      n AS (SELECT clock_timestamp() AS t),
      cl AS (
        INSERT INTO ${l.claims} AS c (instance_id, task_id, worker_id, token, claimed_at, expires_at)
        SELECT v.instance_id, v.task_id, $1, nextval(${l.tokenSequence}), n.t, n.t + $2::bigint * interval '1 millisecond'
        FROM v CROSS JOIN n
        ON CONFLICT (instance_id, task_id) DO UPDATE SET
          worker_id = excluded.worker_id,
          token = nextval(${l.tokenSequence}),
          claimed_at = excluded.claimed_at,
          expires_at = excluded.expires_at
        WHERE c.expires_at IS NOT NULL AND c.expires_at <= excluded.claimed_at
        RETURNING c.instance_id, c.task_id, c.token, c.claimed_at, c.expires_at
      ),
      h AS (
        UPDATE ${l.snapshots} t SET claimed_until = coalesce(cl.expires_at, 'infinity'::timestamptz)
        FROM cl
        WHERE t.instance_id = cl.instance_id
      )
      SELECT k.instance_id, k.task_id,
             cl.token::text AS token, ${ms("cl.claimed_at")}::text AS claimed_at, ${ms("cl.expires_at")}::text AS expires_at,
             v.definition_hash, CASE WHEN cl.token IS NULL THEN NULL ELSE v.input END AS input
      FROM k
      LEFT JOIN cl ON cl.instance_id = k.instance_id AND cl.task_id = k.task_id
      LEFT JOIN v ON v.instance_id = k.instance_id
      ORDER BY k.updated_at, k.instance_id`,
  };
}

/** completeTasks. */
function completion(l: Layout) {
  return {
    /**
     * completeTasks for a whole batch in one statement (so one transaction): $1..$4 are the
     * parallel arrays of instance ids, task ids, tokens and outputs. Per item, the rules of a
     * fenced saveTaskResult plus the release of its claim:
     *
     * - s locks the batch's snapshot rows in instance order before any claim row is touched: the
     *   lock order of every other write and of any other batch, so no deadlock. Locking yields
     *   the latest version of each row, so `finished` is judged on it.
     * - d deletes the claim of each item whose instance exists and is not finished, if it still
     *   holds the item's token and is live on the server clock. The delete is the fence check
     *   and the release in one: a claim released, taken over or expired meanwhile is re-checked
     *   on its latest version and left alone.
     * - r upserts the results and u updates each snapshot once, for the items d released only:
     *   lastCompletedTaskId = the last of them in input order, updated_at never goes back, and
     *   the ready task (and its lease) goes if one of them completed it.
     * - f tells CONFLICT from CLAIM_LOST for items of finished instances: their claim is only
     *   checked (and share-locked, as a fenced write does), never deleted.
     *
     * One row per item comes back: found (the instance exists), done (stored and released),
     * fenced (finished instance, and its claim is live with this token).
     *
     * `(SELECT $1)` hides the array's length from the planner: a plan made for the actual
     * length costs less than the prepared generic one for small batches, and the server would
     * then plan every call again. This way both plans estimate alike and the generic one stays.
     */
    completeTasks: `
      WITH i AS (
        SELECT u.instance_id COLLATE "C" AS instance_id, u.task_id COLLATE "C" AS task_id, u.token, u.output, u.ord
        FROM unnest((SELECT $1::text[]), $2::text[], $3::bigint[], $4::bytea[])
          WITH ORDINALITY AS u(instance_id, task_id, token, output, ord)
      ),
      s AS (
        SELECT t.instance_id, t.finished FROM ${l.snapshots} t
        WHERE t.instance_id = ANY((SELECT $1::text[])::text[])
        ORDER BY t.instance_id
        FOR UPDATE
      ),
      d AS (
        DELETE FROM ${l.claims} c
        USING i, s
        WHERE s.instance_id = i.instance_id AND NOT s.finished
          AND c.instance_id = i.instance_id AND c.task_id = i.task_id AND c.token = i.token AND ${live("c")}
        RETURNING i.ord, i.instance_id, i.task_id, i.output
      ),
      r AS (
        INSERT INTO ${l.taskResults} (instance_id, task_id, output)
        SELECT d.instance_id, d.task_id, d.output FROM d
        ON CONFLICT (instance_id, task_id) DO UPDATE SET output = excluded.output
      ),
      x AS (
        SELECT d.instance_id, array_agg(d.task_id ORDER BY d.ord DESC) AS tasks FROM d GROUP BY d.instance_id
      ),
      u AS (
        UPDATE ${l.snapshots} t SET
          last_completed_task_id = x.tasks[1],
          updated_at = greatest(t.updated_at, ${ms("clock_timestamp()")}),
          ready_task_id = CASE WHEN t.ready_task_id = ANY(x.tasks) THEN NULL ELSE t.ready_task_id END,
          claimed_until = CASE WHEN t.ready_task_id = ANY(x.tasks) THEN NULL ELSE t.claimed_until END
        FROM x
        WHERE t.instance_id = x.instance_id
      ),
      f AS (
        SELECT i.ord FROM i
        JOIN s ON s.instance_id = i.instance_id AND s.finished
        JOIN ${l.claims} c ON c.instance_id = i.instance_id AND c.task_id = i.task_id AND c.token = i.token
        WHERE ${live("c")}
        FOR SHARE OF c
      )
      SELECT i.ord::int AS ord, s.instance_id IS NOT NULL AS found, d.ord IS NOT NULL AS done, f.ord IS NOT NULL AS fenced
      FROM i
      LEFT JOIN s ON s.instance_id = i.instance_id
      LEFT JOIN d ON d.ord = i.ord
      LEFT JOIN f ON f.ord = i.ord`,
  };
}

export type Statements = ReturnType<typeof statements>;

/** How much one statement carries: items, and (past its first item) bytes of values. */
export interface BatchBound {
  rows: number;
  bytes: number;
}

/** saveSnapshot's multi-row inserts of task results (bind parameters and message size). */
export const RESULTS_BATCH: BatchBound = { rows: 1000, bytes: 16 * 1024 * 1024 };
/**
 * One completeTasks statement; a larger call runs several, one after another. Items are
 * independent, so each item stays one atomic step either way.
 */
export const COMPLETE_BATCH: BatchBound = { rows: 1000, bytes: 16 * 1024 * 1024 };

/** Splits `items`, in order, into the runs that one statement each carries. */
export function* batches<T>(
  items: readonly T[],
  bound: BatchBound,
  size: (item: T) => number,
): Generator<T[]> {
  let batch: T[] = [];
  let bytes = 0;
  for (const item of items) {
    const n = size(item);
    if (batch.length >= bound.rows || (batch.length > 0 && bytes + n > bound.bytes)) {
      yield batch;
      batch = [];
      bytes = 0;
    }
    batch.push(item);
    bytes += n;
  }
  if (batch.length > 0) yield batch;
}

/** A row of claimTask and extendClaim: server-clock epoch ms and the token, as text (bigint). */
export interface ClaimRow {
  token: string | null;
  claimed_at: string | null;
  expires_at: string | null;
}

/** A row of claimNext: a candidate, claimed (token set) or not (lost a race, or its row moved on). */
export interface ClaimNextRow extends ClaimRow {
  instance_id: string;
  task_id: string;
  definition_hash: string | null;
  input: Buffer | null;
}

/** A row of findAvailable. */
export interface ReadyRow {
  instance_id: string;
  task_id: string;
  definition_hash: string;
  input: Buffer;
}

/** A row of loadSnapshot: kind 0 is the snapshot row (data: header, extra: initial input), kind 1 a result. */
export interface LoadRow {
  kind: number;
  task_id: string | null;
  data: Buffer;
  extra: Buffer | null;
  last_completed_task_id: string | null;
  updated_at: string | null;
}

/**
 * A row of completeTasks, one per item (ord: its 1-based position): found (the instance
 * exists), done (stored and released), fenced (finished instance, and its claim is live with
 * this token).
 */
export interface CompleteRow {
  ord: number;
  found: boolean;
  done: boolean;
  fenced: boolean;
}

const num = (v: string | null): number | null => (v === null ? null : Number(v));

/** The claim a claimTask, extendClaim or claimNext row describes. */
export function claimOf(instanceId: string, taskId: string, workerId: string, row: ClaimRow): TaskClaim {
  return {
    instanceId,
    taskId,
    workerId,
    claimedAt: num(row.claimed_at) ?? 0,
    expiresAt: num(row.expires_at),
    token: num(row.token) ?? 0,
  };
}
