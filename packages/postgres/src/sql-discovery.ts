/**
 * The SQL of discovery (findAvailableTasks) and claim-next (claimAvailableTasks): the three parts
 * of the candidates, each read through a partial index in its own order, and what a candidate
 * carries. statements() in sql.ts includes these statements under the same names as SQLite's.
 */
import type { Layout } from "./layout.js";

/** Epoch milliseconds (bigint) of a timestamptz, on the server. */
export const ms = (expr: string) => `floor(extract(epoch FROM ${expr}) * 1000)::bigint`;
/** Is the claim row `c` live on the server's clock? */
export const live = (c: string) => `(${c}.expires_at IS NULL OR ${c}.expires_at > clock_timestamp())`;

/**
 * Does snapshot row `t` hold, in its own claim slot, a live claim (server clock) on `task`? Null
 * (not true) when the slot is empty.
 */
export const liveInline = (t: string, task: string) =>
  `(${t}.claim_task = ${task} AND (${t}.claim_expires IS NULL OR ${t}.claim_expires > clock_timestamp()))`;

/** Now on the server, in epoch ms: stable within a statement, so an index condition can use it. */
export const nowMs = ms("now()");

/**
 * No live claim on the row's candidate task: none in the row's own claim slot, none in the claims
 * table (a primary-key probe per candidate).
 */
const unclaimed = (l: Layout, task: string) => `${liveInline("s", task)} IS NOT TRUE AND NOT EXISTS (
        SELECT 1 FROM ${l.claims} c
        WHERE c.instance_id = s.instance_id AND c.task_id = ${task} AND ${live("c")})`;

/** The task a row offers: its ready task, else its due task (a future runAt or retryAt, a wait's timeout). */
export const candidate = (s: string) => `coalesce(${s}.ready_task_id, ${s}.due_task_id)`;

/** The queue parameter of part `i` (1-based) of a statement serving several queues: an element of a text[]. */
export const queueParam = (param: string, i: number) => `(${param}::text[])[${i}]`;

/**
 * Tasks ready to run, per queue in three parts, each read through a partial index in its own
 * order and merged by (sort_key, instance_id) ("C" order for ties):
 *
 * - `fresh`: ready rows of the queue with no lease (claimed_until null), from snapshots_ready_idx
 *   (queue, ready_key, instance_id) in index order. A claimed row leaves that index when
 *   claim-next takes it, so a scan does not walk past the tasks in flight. A claim taken otherwise
 *   (claimTask) leaves no lease; the test of the row's claim slot and the anti-join on the claims
 *   primary key skip it.
 * - `due`: rows of the queue not ready and with no lease whose due time has passed (due_at <= now:
 *   a runAt or retryAt, or a wait's timeout), from snapshots_timers_idx (queue, due_key,
 *   instance_id, due_at) in index order, bounded by due_key <= now + 2 x agingMs (the largest key
 *   a due task can have).
 * - `expired`: rows of the queue whose lease has run out (claimed_until <= now), from
 *   snapshots_leased_idx (queue, claimed_until): the queue's leases by lease end, so the scan
 *   stops at the first lease still running and never reads another queue's: ready rows by ready key, due ones by due key. Their claim may have been renewed
 *   since (the slot test and the claims anti-join decide, as for the other parts).
 *
 * The lease is only a hint for finding candidates: the claim (the row's slot, or a claims row)
 * stays the truth. It is
 * never later than the claim's expiry (claim-next and extend set it to it, release and
 * completion clear it), so a task whose claim is gone is always in one of the three parts.
 */
export const fresh = (l: Layout, q: string, limit: string, lock: boolean) => `
    SELECT s.instance_id, s.ready_task_id AS task_id, s.ready_key AS sort_key${lock ? ", s.ctid AS tid" : ""}
    FROM ${l.snapshots} s
    WHERE s.queue = ${q} AND s.ready_task_id IS NOT NULL AND s.claimed_until IS NULL
      AND ${unclaimed(l, "s.ready_task_id")}
    ORDER BY s.ready_key, s.instance_id
    LIMIT ${limit}${lock ? "\n    FOR UPDATE OF s SKIP LOCKED" : ""}`;
export const due = (l: Layout, q: string, limit: string, lock: boolean, agingMs: number) => `
    SELECT s.instance_id, s.due_task_id AS task_id, s.due_key AS sort_key${lock ? ", s.ctid AS tid" : ""}
    FROM ${l.snapshots} s
    WHERE s.queue = ${q} AND s.due_key IS NOT NULL AND s.ready_task_id IS NULL AND s.claimed_until IS NULL
      AND s.due_key <= ${nowMs} + ${2 * agingMs} AND s.due_at <= ${nowMs}
      AND ${unclaimed(l, "s.due_task_id")}
    ORDER BY s.due_key, s.instance_id
    LIMIT ${limit}${lock ? "\n    FOR UPDATE OF s SKIP LOCKED" : ""}`;
export const expired = (l: Layout, q: string, limit: string, lock: boolean) => `
    SELECT s.instance_id, ${candidate("s")} AS task_id,
           coalesce(s.ready_key, s.due_key) AS sort_key${lock ? ", s.ctid AS tid" : ""}
    FROM ${l.snapshots} s
    WHERE s.queue = ${q} AND s.claimed_until IS NOT NULL AND s.claimed_until <= now()
      AND (s.ready_task_id IS NOT NULL OR s.due_at <= ${nowMs})
      AND ${unclaimed(l, candidate("s"))}
    ORDER BY sort_key, s.instance_id
    LIMIT ${limit}${lock ? "\n    FOR UPDATE OF s SKIP LOCKED" : ""}`;

/** The parts of every queue served (`queues` of them, from the text[] parameter `param`). */
const parts = (
  l: Layout,
  param: string,
  queues: number,
  limit: string,
  lock: boolean,
  agingMs: number,
  opaque = false,
) =>
  Array.from({ length: queues }, (_, i) => {
    const q = opaque ? `(SELECT ${queueParam(param, i + 1)})` : queueParam(param, i + 1);
    return [fresh(l, q, limit, lock), due(l, q, limit, lock, agingMs), expired(l, q, limit, lock)];
  }).flat();

/**
 * The parts merged: the `limit` first tasks ready to run without a live claim. `opaque`: each
 * queue is read through a scalar subquery (an InitPlan), so that a custom plan cannot see its
 * value either (see findAvailableAt).
 */
const readyCandidates = (
  l: Layout,
  param: string,
  queues: number,
  limit: string,
  agingMs: number,
  opaque = false,
) => `
    SELECT * FROM (
      ${parts(l, param, queues, limit, false, agingMs, opaque)
        .map((part) => `(${part})`)
        .join("\n      UNION ALL\n      ")}
    ) u
    ORDER BY u.sort_key, u.instance_id
    LIMIT ${limit}`;

/** Is candidate `k` the task after the wait of snapshot row `s`? */
const isWait = "(s.wait_task IS NOT NULL AND s.wait_task = k.task_id)";

/**
 * What a candidate `k` of snapshot row `s` carries: its input (a wait's task: the oldest pending
 * event's payload, else empty; any other: the last completed task's output, else the initial
 * input, else empty), and for a wait its event (name, sequence) or timed_out; its priority, queue,
 * attempt (count + 1) and taken_over (an expired claim is on it). Joins r (the last result), ev
 * (the oldest pending event of the wait's name, by events_by_name_idx), a (the task's attempts)
 * and x (its claim row, by primary key: a join, not an EXISTS the planner may hash over claims).
 */
const carried = `CASE WHEN ${isWait} THEN coalesce(ev.payload, ''::bytea)
             ELSE coalesce(r.output, s.initial_input, ''::bytea) END AS input,
             CASE WHEN ${isWait} THEN s.wait_event END AS event_name,
             ev.sequence::text AS event_sequence,
             (${isWait} AND ev.sequence IS NULL) AS timed_out,
             s.priority, s.queue, coalesce(a.count, 0) + 1 AS attempt,
             (x.instance_id IS NOT NULL OR s.claim_task IS NOT DISTINCT FROM k.task_id) AS taken_over`;
const carriedJoins = (l: Layout) => `
      LEFT JOIN ${l.taskResults} r ON r.instance_id = s.instance_id AND r.task_id = s.last_completed_task_id
      LEFT JOIN LATERAL (
        SELECT e.sequence, e.payload FROM ${l.events} e
        WHERE e.instance_id = s.instance_id AND e.event_name = s.wait_event
        ORDER BY e.sequence
        LIMIT 1
      ) ev ON ${isWait}
      LEFT JOIN ${l.attempts} a ON a.instance_id = s.instance_id AND a.task_id = k.task_id
      LEFT JOIN ${l.claims} x ON x.instance_id = s.instance_id AND x.task_id = k.task_id`;

/** findAvailableTasks and claimAvailableTasks (claim-next). */
export function discovery(l: Layout, agingMs: number) {
  /**
   * findAvailable for `queues` queues: $1 = limit, $2 = the queues (text[]); with a literal limit
   * (findAvailableAt), $1 = the queues.
   */
  const findAvailable = (queues: number, limit: number | "$1" = "$1") => `
      WITH k AS (${readyCandidates(l, limit === "$1" ? "$2" : "$1", queues, String(limit), agingMs, limit !== "$1")})
      SELECT k.instance_id, k.task_id, s.definition_hash,
             ${carried}
      FROM k
      JOIN ${l.snapshots} s ON s.instance_id = k.instance_id${carriedJoins(l)}
      ORDER BY k.sort_key, k.instance_id`;
  return {
    readyCandidates: readyCandidates(l, "$2", 1, "$1", agingMs),

    /** One queue (the prepared one); findAvailableFor builds it for several. */
    findAvailable: findAvailable(1),
    findAvailableFor: (queues: number) => findAvailable(queues),
    /**
     * findAvailable with a literal limit, $1 = the queues (text[]): what the backend sends for the
     * limits it prepares (see claimNextStatements in prepared.ts). With LIMIT $1 the server's
     * generic plan assumes 10% of the ready index (hash joins over whole tables) and is never
     * preferred, so every call was planned again: with many rows in another queue, planning cost
     * several times the execution (the bench's 4x). With a literal limit, and the queues read
     * through InitPlans (a custom plan sees no more than the generic one, so it costs the same
     * plus its planning), the server keeps the generic plan: queue-led index scans, nested loops.
     */
    findAvailableAt: (limit: number, queues = 1) => findAvailable(queues, limit),

    /**
     * Claim-next in one statement: lock up to `limit` candidate rows of each part (SKIP LOCKED,
     * so concurrent workers take different ones), keep the `limit` first, claim each with the
     * takeover-only-if-expired upsert, put the lease on the claimed rows (h: they leave the ready
     * and timer indexes), and return each claimed task with what it carries. A candidate whose
     * claim insert lost a race comes back with a null token (the caller may retry for the rest).
     *
     * What a task carries is only trusted when the locked row is the very version this
     * statement's snapshot sees (same ctid). Under READ COMMITTED, SKIP LOCKED follows a row that
     * another transaction updated and committed after the snapshot was taken, and locks the newer
     * version; that write's task result or event is invisible to this snapshot, so an input joined
     * here would be stale. Such a row is not claimed at all (null token, like a lost race), and
     * the caller's next statement, with a new snapshot, sees it whole. Every write that changes an
     * instance's results or events also writes its snapshot row, so "same row version" implies
     * "same results and events" (and every claimTask writes the row too, so the same version
     * means no claims row committed meanwhile either).
     *
     * Where the claim goes: into the row's own claim slot (h: claim_task, claim_worker,
     * claim_token, claim_at, claim_expires, with the lease) when the slot is empty or holds this
     * task's expired claim and no claims row exists for the task; otherwise (the slot holds another
     * task's claim, or an expired claims row is there) into the claims table as before (cl). An
     * (instance, task) thus has its claim in one place at most. The usual task's claim is one row
     * update, no claims row written.
     *
     * Each queue served has its three parts (one queue: the usual case, three parts), all merged
     * in one statement. Over an expired claim the claim is a takeover: ta counts one more attempt
     * (the last error stays).
     *
     * $1 = worker id, $2 = ttl ms, $3 = the queues (text[]). The limit is a literal for the sizes the backend prepares
     * (see claimNextStatements in prepared.ts): with LIMIT $n the server's generic plan assumes
     * 10% of the table and is never preferred, so every call would be planned again.
     */
    claimNext: (limit: number | "$4", queues = 1) => {
      const locked = parts(l, "$3", queues, String(limit), true, agingMs);
      return `
      WITH ${locked.map((part, i) => `k${i + 1} AS (${part})`).join(",\n      ")},
      k AS (
        ${locked.map((_, i) => `SELECT * FROM k${i + 1}`).join(" UNION ALL ")}
        ORDER BY sort_key, instance_id
        LIMIT ${limit}
      ),
      v AS (
        SELECT k.instance_id, k.task_id, s.definition_hash,
               ${carried},
               (x.instance_id IS NULL AND (s.claim_task IS NULL OR s.claim_task = k.task_id)) AS inline
        FROM k
        JOIN ${l.snapshots} s ON s.instance_id = k.instance_id AND s.ctid = k.tid${carriedJoins(l)}
      ),
      n AS (SELECT clock_timestamp() AS t),
      cl AS (
        INSERT INTO ${l.claims} AS c (instance_id, task_id, worker_id, token, claimed_at, expires_at)
        SELECT v.instance_id, v.task_id, $1, nextval(${l.tokenSequence}), n.t, n.t + $2::bigint * interval '1 millisecond'
        FROM v CROSS JOIN n
        WHERE NOT v.inline
        ON CONFLICT (instance_id, task_id) DO UPDATE SET
          worker_id = excluded.worker_id,
          token = nextval(${l.tokenSequence}),
          claimed_at = excluded.claimed_at,
          expires_at = excluded.expires_at
        WHERE c.expires_at IS NOT NULL AND c.expires_at <= excluded.claimed_at
        RETURNING c.instance_id, c.task_id, c.token, c.claimed_at, c.expires_at
      ),
      h AS (
        UPDATE ${l.snapshots} t SET
          claim_task = CASE WHEN v.inline THEN v.task_id ELSE t.claim_task END,
          claim_worker = CASE WHEN v.inline THEN $1 ELSE t.claim_worker END,
          claim_token = CASE WHEN v.inline THEN nextval(${l.tokenSequence}) ELSE t.claim_token END,
          claim_at = CASE WHEN v.inline THEN n.t ELSE t.claim_at END,
          claim_expires = CASE WHEN v.inline THEN n.t + $2::bigint * interval '1 millisecond' ELSE t.claim_expires END,
          claimed_until = coalesce(
            CASE WHEN v.inline THEN n.t + $2::bigint * interval '1 millisecond' ELSE cl.expires_at END,
            'infinity'::timestamptz)
        FROM v CROSS JOIN n LEFT JOIN cl ON cl.instance_id = v.instance_id
        WHERE t.instance_id = v.instance_id AND (v.inline OR cl.instance_id IS NOT NULL)
        RETURNING t.instance_id, t.claim_task, t.claim_token, t.claim_at, t.claim_expires, v.inline
      ),
      w AS (
        SELECT cl.instance_id, cl.task_id, cl.token, cl.claimed_at, cl.expires_at FROM cl
        UNION ALL
        SELECT h.instance_id, h.claim_task, h.claim_token, h.claim_at, h.claim_expires FROM h WHERE h.inline
      ),
      ta AS (
        INSERT INTO ${l.attempts} AS a (instance_id, task_id, count)
        SELECT w.instance_id, w.task_id, 1 FROM w JOIN v ON v.instance_id = w.instance_id WHERE v.taken_over
        ON CONFLICT (instance_id, task_id) DO UPDATE SET count = a.count + 1
      )
      SELECT k.instance_id, k.task_id,
             w.token::text AS token, ${ms("w.claimed_at")}::text AS claimed_at, ${ms("w.expires_at")}::text AS expires_at,
             v.definition_hash, CASE WHEN w.token IS NULL THEN NULL ELSE v.input END AS input,
             v.event_name, v.event_sequence, v.timed_out, v.priority, v.queue,
             v.attempt + v.taken_over::int AS attempt
      FROM k
      LEFT JOIN w ON w.instance_id = k.instance_id AND w.task_id = k.task_id
      LEFT JOIN v ON v.instance_id = k.instance_id
      ORDER BY k.sort_key, k.instance_id`;
    },
  };
}
