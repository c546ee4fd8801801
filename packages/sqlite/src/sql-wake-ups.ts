import type { Tables } from "./layout.js";

/*
 * The statements of waitForTasks, built with the others of sql.ts (statements() includes them)
 * over the same tables and indexes.
 */

/** waitForTasks: the probe, and the queue a write tells the waiters of this process. */
export function wakeUps(t: Tables) {
  const live = "c.expires_at > :now";
  const unclaimed = (task: string) => `NOT EXISTS (
          SELECT 1 FROM ${t.claims} AS c
          WHERE c.instance_id = s.instance_id AND c.task_id = ${task} AND (c.expires_at IS NULL OR ${live})
        )`;
  // The timer index's rows as findAvailable reads them (its partial-index condition included).
  const timers = "s.queue = :queue AND s.due_key IS NOT NULL AND s.ready_task_id IS NULL";
  const dueNow = `${timers} AND s.due_key <= :horizon AND s.due_at <= :now`;
  return {
    /**
     * waitForTasks, one queue: is a task claimable now (findAvailable's two arms, LIMIT 1 each,
     * no payload read), and if not, the earliest future moment one comes due by time alone: the
     * expiry of a live claim on a ready or due task (the rows claim-next skips, read through the
     * same two indexes) and the earliest future due_at. The timer index is ordered by due_key
     * (due_at shifted by priority, at most :spread = 2 x agingMs later), so the earliest due_at
     * lies among the keys up to the first future row's due_at + :spread: a bounded range, not
     * the queue's whole timer list.
     */
    probeWakeUp: `
      SELECT ready,
        CASE WHEN ready THEN NULL ELSE (
          SELECT min(c.expires_at) FROM ${t.snapshots} AS s INDEXED BY ${t.readyIndex}
          JOIN ${t.claims} AS c ON c.instance_id = s.instance_id AND c.task_id = s.ready_task_id
          WHERE s.queue = :queue AND s.ready_task_id IS NOT NULL AND ${live}
        ) END AS ready_lease,
        CASE WHEN ready THEN NULL ELSE (
          SELECT min(c.expires_at) FROM ${t.snapshots} AS s INDEXED BY ${t.timerIndex}
          JOIN ${t.claims} AS c ON c.instance_id = s.instance_id AND c.task_id = s.due_task_id
          WHERE ${dueNow} AND ${live}
        ) END AS due_lease,
        CASE WHEN ready THEN NULL ELSE (
          SELECT min(s.due_at) FROM ${t.snapshots} AS s INDEXED BY ${t.timerIndex}
          WHERE ${timers} AND s.due_at > :now AND s.due_key <= (
            SELECT s.due_at + :spread FROM ${t.snapshots} AS s INDEXED BY ${t.timerIndex}
            WHERE ${timers} AND s.due_at > :now ORDER BY s.due_key LIMIT 1
          )
        ) END AS next_due
      FROM (SELECT
        EXISTS (
          SELECT 1 FROM ${t.snapshots} AS s INDEXED BY ${t.readyIndex}
          WHERE s.queue = :queue AND s.ready_task_id IS NOT NULL AND ${unclaimed("s.ready_task_id")}
        ) OR EXISTS (
          SELECT 1 FROM ${t.snapshots} AS s INDEXED BY ${t.timerIndex}
          WHERE ${dueNow} AND ${unclaimed("s.due_task_id")}
        ) AS ready)`,

    /**
     * After a write that may have made the instance's task ready or moved its due time (a step,
     * a release, a resume, an event, a failure): its queue, if the task is in the ready or the
     * timer index. Read only when a backend of this process waits.
     */
    queueOf: `
      SELECT queue FROM ${t.snapshots}
      WHERE instance_id = ? AND (ready_task_id IS NOT NULL OR due_key IS NOT NULL)`,
  } as const;
}

/** A row of probeWakeUp. */
export interface ProbeRow {
  ready: number;
  ready_lease: number | null;
  due_lease: number | null;
  next_due: number | null;
}
