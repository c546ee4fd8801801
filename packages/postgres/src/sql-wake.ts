/**
 * The SQL of wake-ups: the NOTIFY the writes that can make a task ready send (on the schema's one
 * channel, the queue as payload), and the probe a waiter runs (is a task of these queues claimable
 * now, and when does the next one come due?). statements() in sql.ts includes the probe.
 */
import { type Layout, quoteLiteral } from "./layout.js";
import { due, expired, fresh, nowMs } from "./sql-discovery.js";

/**
 * Does the (new version of) snapshot row `t` offer a task with no lease on it: ready (the ready
 * index) or due at a time (the timer index)? A write whose row then offers one notifies: its
 * waiters look again (a task ready now ends their wait, a due one moves their next due time).
 */
export const offers = (t: string) =>
  `(${t}.claimed_until IS NULL AND (${t}.ready_task_id IS NOT NULL OR ${t}.due_key IS NOT NULL))`;

/**
 * `pg_notify` on the schema's wake-up channel when `when` holds, its payload '+' and the queue
 * when `readyNow` holds (a task of it is claimable at once: waiters skip their look), else '~' and
 * the queue (its due time moved, or the writer cannot tell: waiters look first) (CASE
 * evaluates it only then). It is sent at commit, so a rolled-back write wakes nobody; identical
 * (channel, payload) pairs of one transaction are folded into one notification by the server.
 * Only writes that can make a task ready carry it: NOTIFY serialises committing transactions that
 * sent one (a global lock at commit), so claims, extends and completions without `next` never do.
 */
export const notifyWake = (l: Layout, when: string, queue: string, readyNow = "FALSE") =>
  `CASE WHEN ${when} THEN pg_notify(${quoteLiteral(l.wakeChannel)}, CASE WHEN ${readyNow} THEN '+' ELSE '~' END || ${queue}) END`;

/** A row `t` that offers a task offers it at once when it is in the ready index (not only due). */
export const readyNow = (t: string) => `${t}.ready_task_id IS NOT NULL`;

/**
 * The most timer-index entries a probe reads per queue for its next due time (the window below):
 * beyond it, the earliest of those is the answer, a task hidden further (another priority due
 * sooner) is found by a waiter's next look (wakeBoundMs).
 */
const TIMER_WINDOW = 100;

/** Epoch ms of a timestamptz, rounded up: a due time is better a hair late than early. */
const ceilMs = (expr: string) => `ceil(extract(epoch FROM ${expr}) * 1000)::bigint`;

export function wakeStatements(l: Layout, agingMs: number) {
  const q = "q.name";
  /** A timer-index row of the queue due in the future; keys shift due_at by at most 2 x agingMs. */
  const future = (s: string) => `${s}.queue = ${q} AND ${s}.due_key IS NOT NULL AND ${s}.ready_task_id IS NULL
          AND ${s}.claimed_until IS NULL AND ${s}.due_key > ${nowMs} - ${2 * agingMs} AND ${s}.due_at > ${nowMs}`;
  return {
    /**
     * waitForTasks' look, $1 = the queues (text[]), per queue through its indexes, no payload read:
     *
     * - ready: one claimable task in any of them, by the three parts claim-next reads (ready index,
     *   timers up to now, expired leases), LIMIT 1 each: the same conditions as its candidates.
     * - next_due (epoch ms, null: none; not looked for when ready): the earliest future due_at of
     *   the timer index, and the earliest future lease end of the leased index (a lease ends no
     *   later than its claim, so a task whose claim expires is a candidate then). The timer index
     *   is ordered by due_key = due_at + (priority - 3) x agingMs, not by due_at: the first future
     *   row by key (due_at D0) bounds the answer, and every row due before D0 has a key below
     *   D0 + 2 x agingMs, so only that window of the queue's timers is read, index only (due_at
     *   is in the index), at most TIMER_WINDOW entries of it: exact unless more than that many
     *   timers of the queue fall within it.
     *
     * A claim taken by claimTask leaves no lease: its expiry is not indexed, and a waiter finds
     * the task at its next look (wakeBoundMs).
     */
    probeWakeUp: `
      WITH r AS (
        SELECT EXISTS (
          SELECT 1 FROM unnest($1::text[]) AS q(name)
          CROSS JOIN LATERAL (
            (${fresh(l, q, "1", false)})
            UNION ALL
            (${due(l, q, "1", false, agingMs)})
            UNION ALL
            (${expired(l, q, "1", false)})
          ) k
        ) AS ready
      )
      SELECT r.ready, CASE WHEN r.ready THEN NULL ELSE (
        SELECT min(n.at) FROM unnest($1::text[]) AS q(name)
        CROSS JOIN LATERAL (
          SELECT min(w.due_at) AS at FROM (
            SELECT s.due_at FROM ${l.snapshots} s
            WHERE ${future("s")} AND s.due_key <= (
              SELECT f.due_at + ${2 * agingMs} FROM ${l.snapshots} f
              WHERE ${future("f")}
              ORDER BY f.due_key
              LIMIT 1)
            ORDER BY s.due_key
            LIMIT ${TIMER_WINDOW}) w
          UNION ALL
          (SELECT ${ceilMs("s.claimed_until")} FROM ${l.snapshots} s
           WHERE s.queue = ${q} AND s.claimed_until IS NOT NULL AND s.claimed_until > now()
             AND s.claimed_until < 'infinity'::timestamptz
           ORDER BY s.claimed_until
           LIMIT 1)
        ) n)::text END AS next_due, (${nowMs})::text AS now_ms
      FROM r`,
  };
}
