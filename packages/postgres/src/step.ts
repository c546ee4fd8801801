/**
 * completeTasks with `next`: one fenced write per workflow step, reading and writing only what
 * the step changes (never the other outputs). Per batch, two statements, each its own
 * transaction:
 *
 * 1. `stepRead` reads, per item, the snapshot row (header, flags, last completed task,
 *    updated_at, and its row version `xmin`), whether the claim is live with the item's token,
 *    whether the claimed task and the next task have results, the oldest pending event of the
 *    consumed name, and the server's clock. The kit's stepRefusal decides refusals on it (one
 *    MVCC snapshot: a consistent view), and advanceHeader computes the new header and index fields.
 * 2. `stepWrite` locks the rows in instance order and writes an item only if its row is still the
 *    version read (every write of a row's results, events, attempts or header writes the row, so
 *    the same version means the same header, results and events): the claim deleted if still live
 *    with the token (fence and release in one), the result upserted (or, for Completed / Failed,
 *    every result and pending event deleted, as a terminal saveSnapshot does), the event consumed,
 *    and the row rewritten with the task placed by placementSql. An item whose row changed in
 *    between is read again (retryOnRace); the others land.
 */
import {
  type CompletionOutcome,
  failures,
  type PersistenceError,
  SerializationError,
  toBytes,
  type ValidCompletion,
} from "@sayiir/persistence-core";
import {
  advanceHeader,
  RETRY,
  retryOnRace,
  type StepWrite,
  stepRefusal,
} from "@sayiir/persistence-core/adapter";
import { bigintArray, boolArray, byteaArray, textArray } from "./arrays.js";
import { type Db, storedState, waitValues } from "./control.js";
import type { Layout } from "./layout.js";
import { live, liveInline, ms } from "./sql-discovery.js";
import { finishedAt } from "./sql-retention.js";
import { placementSql } from "./sql-schedule.js";
import { notifyWake, offers, readyNow } from "./sql-wake.js";

/** The statements of a step (statements() in sql.ts includes them). */
export function stepStatements(l: Layout, agingMs: number) {
  return {
    /**
     * One row per item (ord: its 1-based position; version null: no snapshot). $1 instance ids,
     * $2 task ids, $3 tokens, $4 next tasks (null: none), $5 consumed event names (null: none).
     * `has`: which of the claimed task and the next task have a result (their rows only, by
     * primary key; no output is read). `(SELECT $1::text[])` hides the batch's length from the
     * planner, as in completeTasks, so that the server keeps the generic plan.
     */
    stepRead: `
      WITH i AS (
        SELECT u.instance_id COLLATE "C" AS instance_id, u.task_id COLLATE "C" AS task_id, u.token,
               u.next_task COLLATE "C" AS next_task, u.event_name COLLATE "C" AS event_name, u.ord
        FROM unnest((SELECT $1::text[]), $2::text[], $3::bigint[], $4::text[], $5::text[])
          WITH ORDINALITY AS u(instance_id, task_id, token, next_task, event_name, ord)
      )
      SELECT i.ord::int AS ord, t.xmin::text AS version, t.header, t.finished, t.paused,
             t.last_completed_task_id, t.updated_at::text AS updated_at, ${ms("clock_timestamp()")}::text AS now,
             (EXISTS (
               SELECT 1 FROM ${l.claims} c
               WHERE c.instance_id = i.instance_id AND c.task_id = i.task_id AND c.token = i.token AND ${live("c")}
             ) OR (t.claim_token = i.token AND ${liveInline("t", "i.task_id")}) IS TRUE) AS holds,
             ARRAY(
               SELECT r.task_id FROM ${l.taskResults} r
               WHERE r.instance_id = i.instance_id AND r.task_id = ANY(ARRAY[i.task_id, i.next_task])
             ) AS has,
             (SELECT min(e.sequence) FROM ${l.events} e
              WHERE e.instance_id = i.instance_id AND e.event_name = i.event_name)::text AS oldest
      FROM i LEFT JOIN ${l.snapshots} t ON t.instance_id = i.instance_id`,

    /**
     * The writes of the items stepRead let through, each instance at most once. $1 instance ids,
     * $2 task ids, $3 tokens, $4 outputs, $5 row versions read, $6 headers, $7 finished, $8 last
     * completed tasks, $9 AtTask ready tasks, $10 updated_at, $11 wait events, $12 wait tasks,
     * $13 timeouts, $14 position tasks, $15 run_at, $16 priorities, $17 queues, $18 keeps results
     * (false: Completed or Failed), $19 consumed event names, $20 their sequences.
     *
     * - s locks the rows in instance order before any claim row (the lock order of every write);
     *   locking yields each row's latest version, whose xmin is compared with the one read.
     * - ok: the items whose row is that version and whose event (if any) is still the oldest of
     *   its name; d releases their claims if still live with the token (fence and release in one):
     *   a claims row deleted (dc), or the claim in the locked row's slot (ok.slot; u empties it).
     * - ev, gone, r, u: for d's items only, the event consumed (all of them for a terminal step),
     *   the results dropped (terminal) or this one upserted, the row rewritten (lease cleared) with
     *   the task placed by placementSql from the stored attempts of the task (a: retryAt, held),
     *   not counting the event consumed here (this statement's snapshot still sees it). A row
     *   that then offers a task notifies its queue (woke: read, so that u's RETURNING runs). A
     *   Completed or Failed step records the finish time (finishedAt).
     *
     * One row per item: found (a row), checked (in ok: the version read, its event still the
     * oldest), done (written). Found but not checked: the row changed since the read (read again).
     */
    stepWrite: `
      WITH i AS (
        SELECT u.instance_id COLLATE "C" AS instance_id, u.task_id COLLATE "C" AS task_id, u.token, u.output,
               u.version, u.header, u.finished, u.last_task COLLATE "C" AS last_task, u.ready COLLATE "C" AS ready,
               u.updated_at, u.wait_event COLLATE "C" AS wait_event, u.wait_task COLLATE "C" AS wait_task,
               u.timeout_at, u.position_task COLLATE "C" AS position_task, u.run_at, u.priority,
               u.queue COLLATE "C" AS queue, u.keeps, u.event_name COLLATE "C" AS event_name, u.event_sequence, u.ord
        FROM unnest((SELECT $1::text[]), $2::text[], $3::bigint[], $4::bytea[], $5::text[], $6::bytea[],
                    $7::boolean[], $8::text[], $9::text[], $10::bigint[], $11::text[], $12::text[], $13::bigint[],
                    $14::text[], $15::bigint[], $16::bigint[], $17::text[], $18::boolean[], $19::text[], $20::bigint[])
          WITH ORDINALITY AS u(instance_id, task_id, token, output, version, header, finished, last_task, ready,
                               updated_at, wait_event, wait_task, timeout_at, position_task, run_at, priority,
                               queue, keeps, event_name, event_sequence, ord)
      ),
      s AS (
        SELECT t.instance_id, t.xmin::text AS version, t.claim_task, t.claim_token,
               (t.claim_expires IS NULL OR t.claim_expires > clock_timestamp()) AS slot_live
        FROM ${l.snapshots} t
        WHERE t.instance_id = ANY((SELECT $1::text[])::text[])
        ORDER BY t.instance_id
        FOR UPDATE
      ),
      ok AS (
        SELECT i.*, (s.claim_task = i.task_id AND s.claim_token = i.token AND s.slot_live) IS TRUE AS slot
        FROM i JOIN s ON s.instance_id = i.instance_id AND s.version = i.version
        WHERE i.event_name IS NULL OR i.event_sequence = (
          SELECT min(o.sequence) FROM ${l.events} o WHERE o.instance_id = i.instance_id AND o.event_name = i.event_name)
      ),
      dc AS (
        DELETE FROM ${l.claims} c USING ok
        WHERE NOT ok.slot
          AND c.instance_id = ok.instance_id AND c.task_id = ok.task_id AND c.token = ok.token AND ${live("c")}
        RETURNING ok.ord
      ),
      d AS (SELECT ok.* FROM ok WHERE ok.slot OR ok.ord IN (SELECT dc.ord FROM dc)),
      ev AS (
        DELETE FROM ${l.events} e USING d
        WHERE e.instance_id = d.instance_id
          AND (NOT d.keeps OR (e.event_name = d.event_name AND e.sequence = d.event_sequence))
      ),
      gone AS (
        DELETE FROM ${l.taskResults} x USING d WHERE x.instance_id = d.instance_id AND NOT d.keeps
      ),
      r AS (
        INSERT INTO ${l.taskResults} (instance_id, task_id, output)
        SELECT d.instance_id, d.task_id, d.output FROM d WHERE d.keeps
        ON CONFLICT (instance_id, task_id) DO UPDATE SET output = excluded.output
      ),
      u AS (
        UPDATE ${l.snapshots} t SET
          header = d.header, finished = d.finished, paused = false, cancelled = false,
          finished_at = ${finishedAt("d.finished", "t.finished_at")},
          last_completed_task_id = d.last_task, updated_at = d.updated_at,
          wait_event = d.wait_event, wait_task = d.wait_task, timeout_at = d.timeout_at,
          position_task_id = d.position_task, run_at = d.run_at, priority = d.priority, queue = d.queue,
          ready_task_id = p.ready_task_id, ready_key = p.ready_key,
          due_task_id = p.due_task_id, due_at = p.due_at, due_key = p.due_key,
          claimed_until = NULL,
          claim_task = CASE WHEN d.slot THEN NULL ELSE t.claim_task END,
          claim_worker = CASE WHEN d.slot THEN NULL ELSE t.claim_worker END,
          claim_token = CASE WHEN d.slot THEN NULL ELSE t.claim_token END,
          claim_at = CASE WHEN d.slot THEN NULL ELSE t.claim_at END,
          claim_expires = CASE WHEN d.slot THEN NULL ELSE t.claim_expires END
        FROM d
        LEFT JOIN ${l.attempts} a ON a.instance_id = d.instance_id AND a.task_id = coalesce(d.ready, d.wait_task)
        CROSS JOIN LATERAL (${placementSql(
          l,
          {
            id: "d.instance_id",
            ready: "d.ready",
            waitEvent: "d.wait_event",
            waitTask: "d.wait_task",
            timeoutAt: "d.timeout_at",
            runAt: "d.run_at",
            priority: "d.priority",
            retry: "a.retry_at",
            held: "a.held",
            updatedAt: "d.updated_at",
            consumed: "d.event_sequence",
          },
          agingMs,
        )}) p
        WHERE t.instance_id = d.instance_id
        RETURNING ${notifyWake(l, offers("t"), "t.queue", readyNow("t"))} AS woke
      )
      SELECT i.ord::int AS ord, s.instance_id IS NOT NULL AS found, (SELECT count(*) FROM u)::int AS woke,
             EXISTS (SELECT 1 FROM ok WHERE ok.ord = i.ord) AS checked,
             EXISTS (SELECT 1 FROM d WHERE d.ord = i.ord) AS done
      FROM i LEFT JOIN s ON s.instance_id = i.instance_id`,
  };
}

/** A row of stepRead (version null: no snapshot; the other row columns are then null too). */
export interface StepReadRow {
  ord: number;
  version: string | null;
  header: Buffer | null;
  finished: boolean | null;
  paused: boolean | null;
  last_completed_task_id: string | null;
  updated_at: string | null;
  now: string;
  holds: boolean;
  has: string[];
  oldest: string | null;
}

/** A row of stepWrite. */
export interface StepWriteRow {
  ord: number;
  found: boolean;
  checked: boolean;
  done: boolean;
}

/** One item's planned write: the kit's StepWrite and the row version it was computed from. */
interface Planned {
  index: number;
  c: ValidCompletion;
  version: string;
  write: StepWrite;
}

/**
 * Consecutive runs of completions that one statement (completeTasks) or one step round
 * (stepRead, stepWrite) carries: a run changes with the kind of item (with `next` or not), and
 * a run of steps never names an instance twice (a later step of the same instance goes into the
 * next run, and so sees the first one's write, as the items apply in order).
 */
export function completionRuns(
  completions: readonly ValidCompletion[],
): Array<{ steps: boolean; items: ValidCompletion[] }> {
  const runs: Array<{ steps: boolean; items: ValidCompletion[]; ids: Set<string> }> = [];
  for (const c of completions) {
    const steps = c.next !== undefined;
    let run = runs[runs.length - 1];
    if (run === undefined || run.steps !== steps || (steps && run.ids.has(c.instanceId))) {
      run = { steps, items: [], ids: new Set() };
      runs.push(run);
    }
    run.items.push(c);
    run.ids.add(c.instanceId);
  }
  return runs.map(({ steps, items }) => ({ steps, items }));
}

/**
 * completeTasks for items that all carry `next`, on distinct instances: rounds of stepRead and
 * stepWrite until no item lost a race (retryOnRace). Outcomes in input order.
 */
export async function completeSteps(db: Db, items: readonly ValidCompletion[]): Promise<CompletionOutcome[]> {
  const outcomes: Array<CompletionOutcome | undefined> = new Array(items.length);
  let pending = items.map((_, i) => i);
  await retryOnRace("completeTasks (a step's workflow)", async () => {
    pending = await stepRound(db, items, pending, outcomes);
    return pending.length === 0 ? true : RETRY;
  });
  return items.map((_, i) => {
    const outcome = outcomes[i];
    if (outcome === undefined) throw new Error(`completeTasks: no outcome for item ${i}`);
    return outcome;
  });
}

/** One round over `pending` (indexes into items): the refusals and the writes; returns the raced items. */
async function stepRound(
  db: Db,
  items: readonly ValidCompletion[],
  pending: readonly number[],
  outcomes: Array<CompletionOutcome | undefined>,
): Promise<number[]> {
  const batch = pending.map((i) => items[i] as ValidCompletion);
  const read = await db<StepReadRow>("stepRead", [
    textArray(batch.map((c) => c.instanceId)),
    textArray(batch.map((c) => c.taskId)),
    bigintArray(batch.map((c) => c.token)),
    textArray(batch.map((c) => nextTaskOf(c))),
    textArray(batch.map((c) => c.consumeEvent?.eventName ?? null)),
  ]);
  const planned: Planned[] = [];
  for (const row of read.rows) {
    const index = pending[row.ord - 1] as number;
    const c = items[index] as ValidCompletion;
    const plan = planStep(c, row);
    if ("write" in plan) planned.push({ index, c, version: plan.version, write: plan.write });
    else outcomes[index] = plan;
  }
  if (planned.length === 0) return [];
  const written = await db<StepWriteRow>("stepWrite", writeValues(planned));
  const raced: number[] = [];
  for (const row of written.rows) {
    const { index, c } = planned[row.ord - 1] as Planned;
    if (row.done) outcomes[index] = null;
    else if (!row.found) outcomes[index] = failures.snapshotNotFound(c.instanceId);
    else if (row.checked) outcomes[index] = failures.fenceRejected(c.instanceId, c);
    else raced.push(index);
  }
  return raced;
}

/** The next position's task (AtTask's, or the task after a wait), else null. */
function nextTaskOf(c: ValidCompletion): string | null {
  const next = c.next;
  if (next?.kind === "AtTask") return next.taskId;
  if (next?.kind === "AwaitingEvent") return next.nextTaskId;
  return null;
}

/**
 * An item's refusal (stepRefusal, on what stepRead found) or its write (advanceHeader, at the
 * server's clock, never before the stored updated_at). A header that does not decode gives the
 * item a SerializationError naming the instance.
 */
function planStep(
  c: ValidCompletion,
  row: StepReadRow,
): PersistenceError | { version: string; write: StepWrite } {
  const next = c.next;
  if (next === undefined) throw new Error("completeSteps: an item without next");
  const found = row.version !== null && row.header !== null;
  const finished = row.finished ?? false;
  const paused = row.paused ?? false;
  try {
    const header = row.header === null ? null : toBytes(row.header);
    // Only an InProgress row that the fence holds needs its position (earlier refusals win).
    let positionTask: string | null = null;
    if (header !== null && row.holds && !finished && !paused) {
      const state = storedState(c.instanceId, header);
      positionTask = state.status === "InProgress" ? state.positionTask : null;
    }
    const refusal = stepRefusal(
      c.instanceId,
      c,
      {
        found,
        finished,
        paused,
        // The server judged the claim live with this token; the kit then only compares tokens.
        claim: row.holds ? { token: c.token, expiresAt: null } : undefined,
        now: 0,
        positionTask,
      },
      c.consumeEvent,
      row.oldest === null ? undefined : Number(row.oldest),
    );
    if (refusal !== null || header === null || row.version === null) {
      return refusal ?? failures.snapshotNotFound(c.instanceId);
    }
    const has = new Set(row.has);
    const write = advanceHeader(
      {
        instanceId: c.instanceId,
        header,
        lastCompletedTaskId: row.last_completed_task_id,
        hasResult: (taskId) => has.has(taskId),
      },
      c.taskId,
      next,
      Math.max(Number(row.updated_at), Number(row.now)),
    );
    return { version: row.version, write };
  } catch (error) {
    // A header that does not decode is that item's outcome, not the batch's.
    if (error instanceof SerializationError) return error;
    throw error;
  }
}

/** stepWrite's parallel arrays, in its parameter order. */
function writeValues(planned: readonly Planned[]): unknown[] {
  const w = planned.map((p) => p.write);
  const waits = w.map((x) => waitValues(x.awaiting));
  return [
    textArray(planned.map((p) => p.c.instanceId)),
    textArray(planned.map((p) => p.c.taskId)),
    bigintArray(planned.map((p) => p.c.token)),
    // A terminal step stores no result: its output is not sent.
    byteaArray(planned.map((p) => (p.write.keepsResults ? p.c.output : new Uint8Array(0)))),
    textArray(planned.map((p) => p.version)),
    byteaArray(w.map((x) => x.header)),
    boolArray(w.map((x) => x.finished)),
    textArray(w.map((x) => x.lastCompletedTaskId)),
    textArray(w.map((x) => x.readyTaskId)),
    bigintArray(w.map((x) => x.updatedAt)),
    textArray(waits.map((v) => v[0])),
    textArray(waits.map((v) => v[1])),
    bigintArray(waits.map((v) => v[2])),
    textArray(w.map((x) => x.positionTaskId ?? x.awaiting?.nextTaskId ?? null)),
    bigintArray(w.map((x) => x.schedule.runAt)),
    bigintArray(w.map((x) => x.schedule.priority)),
    textArray(w.map((x) => x.schedule.queue)),
    boolArray(w.map((x) => x.keepsResults)),
    textArray(planned.map((p) => p.c.consumeEvent?.eventName ?? null)),
    bigintArray(planned.map((p) => p.c.consumeEvent?.sequence ?? null)),
  ];
}
