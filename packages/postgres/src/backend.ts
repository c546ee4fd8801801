import {
  type AvailableTask,
  type BackendCapabilities,
  BaseBackend,
  type ClaimedTask,
  type CompletionOutcome,
  type ControlRequest,
  type EventRef,
  type Fence,
  failures,
  isPersistenceError,
  type PendingEvent,
  type PersistenceError,
  type RenewedClaim,
  type SnapshotPage,
  type TaskClaim,
  type TaskResult,
  type ValidCompletion,
  type ValidFailure,
  type WakeProbe,
  type WorkflowSnapshot,
} from "@sayiir/persistence-core";
import {
  fromStoredParts,
  type MigrationReport,
  snapshotRefusal,
  toStoredSnapshot,
} from "@sayiir/persistence-core/adapter";
import pg from "pg";
import { bigintArray, byteaArray, textArray } from "./arrays.js";
import {
  availableTask,
  consumeEvent,
  type Db,
  loadPendingEvents,
  sendEvent,
  toBuffer,
  transition,
  waitValues,
  writableOverPaused,
} from "./control.js";
import { type Layout, layoutFor } from "./layout.js";
import { type NormalizedOptions, normalizeOptions, type PostgresBackendOptions } from "./options.js";
import { claimNextStatements, type FixedKey, preparedStatements, type Statement } from "./prepared.js";
import { loadTaskClaims, loadTaskResult, purgeFinished } from "./retention.js";
import {
  batches,
  type ClaimNextRow,
  type ClaimRow,
  COMPLETE_BATCH,
  type CompleteRow,
  claimOf,
  claimRefusal,
  completionOutcome,
  type ExtendRow,
  type LoadRow,
  type LockRow,
  RESULTS_BATCH,
  type ReadClaimRow,
  type ReadyRow,
  storedParts,
  writeView,
} from "./rows.js";
import { attemptArrays, failTask, scheduleValues } from "./schedule.js";
import { applyMigrations, schemaStatements } from "./schema.js";
import { type Statements, statements } from "./sql.js";
import { completeSteps, completionRuns } from "./step.js";
import { listenForWakeUps } from "./wake-ups.js";

type Queryable = Pick<pg.PoolClient, "query">;

/** A checked-out connection, and why it may be unusable (then it is destroyed, not pooled again). */
interface Session {
  client: pg.PoolClient;
  broken: Error | undefined;
}

const asError = (e: unknown): Error => (e instanceof Error ? e : new Error(String(e)));

/**
 * Sayiir persistence on PostgreSQL 13 or newer, over `pg`. Call {@link migrate} once (it is
 * idempotent and safe to run from many processes at once) before the other operations.
 */
export class PostgresBackend extends BaseBackend {
  /**
   * Every expiry is judged on the server's clock, inside the statement that acts on it. Wake-ups
   * are pushed (LISTEN/NOTIFY); a waiter looks by itself every 10 s, in case one was lost.
   */
  readonly capabilities: BackendCapabilities = {
    durable: true,
    clock: "server",
    clockSkewMs: 0,
    shards: 1,
    wakeUps: "push",
    wakeBoundMs: 10_000,
    dbSystem: "postgresql",
  };
  readonly schema: string;
  readonly #pool: pg.Pool;
  readonly #ownsPool: boolean;
  readonly #options: NormalizedOptions;
  readonly #layout: Layout;
  readonly #sql: Statements;
  readonly #st: Record<FixedKey, Statement>;
  readonly #claimNext: ReturnType<typeof claimNextStatements>;

  constructor(options: PostgresBackendOptions) {
    super(options);
    this.#options = normalizeOptions(options);
    this.schema = this.#options.schema;
    this.#layout = layoutFor(this.schema);
    this.#sql = statements(this.#layout, this.agingMs);
    this.#st = preparedStatements(this.#sql, this.#options.prepareStatements);
    this.#claimNext = claimNextStatements(this.#sql, this.#options.prepareStatements);
    if (this.#options.pool.kind === "user") {
      this.#pool = this.#options.pool.pool;
      this.#ownsPool = false;
    } else {
      this.#pool = new pg.Pool(this.#options.pool.config);
      this.#ownsPool = true;
      // An idle connection dropped by the server (restart, pg_terminate_backend) emits 'error' on
      // the pool; the pool already discards that client, and the next query opens a new one.
      this.#pool.on("error", () => {});
    }
  }

  /** The pool in use (the caller's, or the one this backend opened). */
  get pool(): pg.Pool {
    return this.#pool;
  }

  protected override secrets(): readonly string[] {
    return this.#options.secrets;
  }

  /** Sends one statement; the only place that does (and so the one place FaultHooks apply). */
  #q<R extends pg.QueryResultRow>(
    db: Queryable,
    statement: string | Statement,
    values: unknown[] = [],
  ): Promise<pg.QueryResult<R>> {
    const config: pg.QueryConfig & { query_timeout?: number } =
      typeof statement === "string" ? { text: statement, values } : { text: statement.text, values };
    if (typeof statement !== "string" && statement.name !== undefined) config.name = statement.name;
    if (this.#options.queryTimeoutMs > 0) config.query_timeout = this.#options.queryTimeoutMs;
    const faults = this.#options.faults;
    if (faults === undefined) return db.query<R>(config);
    const name = typeof statement === "string" ? statement : statement.key;
    return (async () => {
      await faults.beforeQuery?.(name);
      const result = await db.query<R>(config);
      await faults.afterQuery?.(name);
      return result;
    })();
  }

  /** The fixed statements of sql.ts on `db`, as control.ts sends them. */
  #db(db: Queryable): Db {
    return (key, values) => this.#q(db, this.#st[key], values);
  }

  /** One checked-out connection for `body`; a broken connection is destroyed, not reused. */
  async #session<T>(body: (session: Session) => Promise<T>): Promise<T> {
    const session: Session = { client: await this.#pool.connect(), broken: undefined };
    const onError = (error: Error) => {
      session.broken = error;
    };
    session.client.on("error", onError);
    try {
      return await body(session);
    } finally {
      session.client.off("error", onError);
      session.client.release(session.broken);
    }
  }

  /** `body` in one transaction on a connection of its own; any error rolls it back. */
  async #transaction<T>(body: (db: Queryable) => Promise<T>): Promise<T> {
    return this.#session(async (session) => {
      const { client } = session;
      try {
        await this.#q(client, "BEGIN");
        const result = await body(client);
        await this.#q(client, "COMMIT");
        return result;
      } catch (error) {
        const expected = error instanceof pg.DatabaseError || isPersistenceError(error);
        if (session.broken === undefined && !expected) session.broken = asError(error);
        if (session.broken === undefined) {
          await this.#q(client, "ROLLBACK").catch((e: unknown) => {
            session.broken = asError(e);
          });
        }
        throw error;
      }
    });
  }

  /**
   * Creates the schema and applies pending migrations, recorded in `<schema>.sayiir_migrations`.
   * Serialised across processes by a session advisory lock; idempotent.
   */
  async migrate(): Promise<MigrationReport> {
    return this.run("migrate", () =>
      this.#session(async (session) => {
        try {
          return await applyMigrations(
            {
              query: (text, values) => this.#q(session.client, text, values),
              broken: (e) => {
                session.broken = asError(e);
              },
            },
            this.#layout,
          );
        } catch (error) {
          if (!(error instanceof pg.DatabaseError)) session.broken ??= asError(error);
          throw error;
        }
      }),
    );
  }

  /** The schema version recorded in the migrations table (0 if migrate() never ran). */
  async schemaVersion(): Promise<number> {
    return this.run("schemaVersion", async () => {
      const sql = schemaStatements(this.#layout);
      const exists = await this.#q<{ t: string | null }>(this.#pool, sql.migrationsTable, [
        this.#layout.migrations,
      ]);
      if (exists.rows[0]?.t == null) return 0;
      const r = await this.#q<{ v: number | null }>(this.#pool, sql.latestVersion);
      return r.rows[0]?.v ?? 0;
    });
  }

  /** Is the fence's claim live with its token? Share-locks it (a release or takeover waits). */
  async #fenceHolds(db: Queryable, instanceId: string, fence: Fence): Promise<boolean> {
    const r = await this.#q(db, this.#st.checkFence, [instanceId, fence.taskId, fence.token]);
    return r.rowCount !== 0;
  }

  /**
   * One transaction. Locks are always taken snapshot row first, then claim row (as claim-next
   * does), so a fenced write and a concurrent claim-next can never deadlock. Refusals in
   * snapshotRefusal's order (the fence, then the stored state), then the consumed event, then the
   * writes: the pending events dropped by a terminal write, the row, the results.
   */
  protected async doSaveSnapshot(
    snapshot: WorkflowSnapshot,
    fence: Fence | undefined,
    consume: EventRef | undefined,
  ): Promise<void> {
    const stored = toStoredSnapshot(snapshot);
    const id = stored.instanceId;
    await this.#transaction(async (db) => {
      let state = await this.#lockSnapshot(db, id);
      const holds = fence === undefined || (await this.#fenceHolds(db, id, fence));
      let refusal = snapshotRefusal(id, fence, writeView(state, fence, holds), stored.status);
      if (refusal !== null) throw refusal;
      if (consume !== undefined) await consumeEvent(this.#db(db), id, consume);
      if (stored.finished) await this.#q(db, this.#st.deleteEvents, [id]);
      // The conflict clause repeats the state guards for a row inserted by someone else meanwhile.
      const up = await this.#q(db, this.#st.upsertSnapshot, [
        id,
        stored.definitionHash,
        toBuffer(stored.header),
        stored.initialInput === null ? null : toBuffer(stored.initialInput),
        stored.finished,
        stored.paused,
        stored.lastCompletedTaskId,
        stored.readyTaskId,
        stored.updatedAt,
        ...waitValues(stored.awaiting),
        writableOverPaused(stored.status),
        stored.status === "Cancelled",
        ...scheduleValues(stored),
      ]);
      if (up.rowCount === 0) {
        state = await this.#lockSnapshot(db, id);
        refusal = snapshotRefusal(id, undefined, writeView(state, undefined, true), stored.status);
        throw refusal ?? failures.cannotReopen(id);
      }
      const kept = stored.results.map((r) => r.taskId);
      await this.#q(db, this.#st.deleteOtherResults, [id, textArray(kept)]);
      await this.#upsertResults(db, id, stored.results);
      await this.#q(db, this.#st.deleteAttempts, [id]);
      if (stored.attempts.length > 0)
        await this.#q(db, this.#st.insertAttempts, attemptArrays(id, stored.attempts));
    });
  }

  /** The snapshot row's state, locked (FOR UPDATE): the first lock of every write. */
  async #lockSnapshot(db: Queryable, instanceId: string): Promise<LockRow | undefined> {
    return (await this.#q<LockRow>(db, this.#st.lockSnapshot, [instanceId])).rows[0];
  }

  /** The snapshot's results, RESULTS_BATCH rows or bytes per statement; unchanged ones stay as stored. */
  async #upsertResults(db: Queryable, instanceId: string, results: TaskResult[]): Promise<void> {
    for (const batch of batches(results, RESULTS_BATCH, (r) => r.output.byteLength)) {
      const ids = textArray(batch.map((r) => r.taskId));
      await this.#q(db, this.#st.upsertResults, [instanceId, ids, byteaArray(batch.map((r) => r.output))]);
    }
  }

  protected async doSaveTaskResult(
    instanceId: string,
    taskId: string,
    output: Uint8Array,
    fence: Fence | undefined,
  ): Promise<void> {
    await this.#transaction(async (db) => {
      // Refusals in resultRefusal's order: missing instance, fence, finished workflow.
      const stored = await this.#lockSnapshot(db, instanceId);
      if (stored === undefined) throw failures.snapshotNotFound(instanceId);
      if (fence !== undefined && !(await this.#fenceHolds(db, instanceId, fence))) {
        throw failures.fenceRejected(instanceId, fence);
      }
      if (stored.finished) throw failures.resultsFinal(instanceId);
      await this.#q(db, this.#st.upsertResult, [instanceId, taskId, toBuffer(output)]);
      await this.#q(db, this.#st.recordResult, [instanceId, taskId]);
    });
  }

  /**
   * Items without `next`: the whole batch in one statement (per COMPLETE_BATCH run), each item the
   * fenced write of its result and the release of its claim; items with `next`: two statements
   * per run (step.ts). Runs keep the items' order. Refused items write nothing and keep their claims.
   */
  protected override async doCompleteTasks(
    completions: readonly ValidCompletion[],
  ): Promise<CompletionOutcome[]> {
    const outcomes: CompletionOutcome[] = [];
    for (const run of completionRuns(completions)) {
      for (const batch of batches(run.items, COMPLETE_BATCH, (c) => c.output.byteLength)) {
        const done = run.steps ? completeSteps(this.#db(this.#pool), batch) : this.#completeBatch(batch);
        outcomes.push(...(await done));
      }
    }
    return outcomes;
  }

  async #completeBatch(items: readonly ValidCompletion[]): Promise<CompletionOutcome[]> {
    const r = await this.#q<CompleteRow>(this.#pool, this.#st.completeTasks, [
      textArray(items.map((c) => c.instanceId)),
      textArray(items.map((c) => c.taskId)),
      bigintArray(items.map((c) => c.token)),
      byteaArray(items.map((c) => c.output)),
    ]);
    const outcomes: CompletionOutcome[] = new Array(items.length);
    for (const row of r.rows) {
      const c = items[row.ord - 1];
      if (c !== undefined) outcomes[row.ord - 1] = completionOutcome(row, c);
    }
    for (let i = 0; i < items.length; i++) {
      if (outcomes[i] === undefined) throw new Error(`completeTasks: no outcome for item ${i}`);
    }
    return outcomes;
  }

  protected async doLoadSnapshot(instanceId: string): Promise<WorkflowSnapshot> {
    const r = await this.#q<LoadRow>(this.#pool, this.#st.loadSnapshot, [instanceId]);
    const parts = storedParts(instanceId, r.rows);
    if (parts === undefined) throw failures.snapshotNotFound(instanceId);
    return fromStoredParts(parts);
  }

  protected async doDeleteSnapshot(instanceId: string): Promise<void> {
    const r = await this.#q<{ n: number; moved: boolean }>(this.#pool, this.#st.deleteSnapshot, [instanceId]);
    const row = r.rows[0];
    if (row === undefined || row.n === 0) throw failures.snapshotNotFound(instanceId);
    if (row.moved) await this.#q(this.#pool, this.#st.deleteOrphans, [instanceId]);
  }

  /** One statement: the row's state flags and the one result row, never the header or other outputs. */
  protected async doLoadTaskResult(instanceId: string, taskId: string): Promise<Uint8Array | null> {
    return loadTaskResult(this.#db(this.#pool), instanceId, taskId);
  }

  /** One transaction: the oldest finished rows locked (SKIP LOCKED), then deleted (retention.ts). */
  protected async doPurgeFinished(finishedBefore: number, limit: number): Promise<number> {
    return this.#transaction((db) => purgeFinished(this.#db(db), finishedBefore, limit));
  }

  /** One statement over both places a claim lives: the claims table and the row's claim slot. */
  protected async doLoadTaskClaims(instanceId: string): Promise<TaskClaim[]> {
    return loadTaskClaims(this.#db(this.#pool), instanceId);
  }

  protected async doListSnapshotsPage(cursor: string | null, limit: number): Promise<SnapshotPage> {
    const r = await this.#q<{ instance_id: string }>(this.#pool, this.#st.listPage, [cursor, limit + 1]);
    const ids = r.rows.map((row) => row.instance_id);
    const more = ids.length > limit;
    const instanceIds = more ? ids.slice(0, limit) : ids;
    return { instanceIds, nextCursor: more ? (instanceIds[instanceIds.length - 1] ?? null) : null };
  }

  protected async doClaimTask(
    instanceId: string,
    taskId: string,
    workerId: string,
    ttlMs: number | null,
  ): Promise<TaskClaim | null> {
    const r = await this.#q<ClaimRow>(this.#pool, this.#st.claimTask, [instanceId, taskId, workerId, ttlMs]);
    const row = r.rows[0];
    return row === undefined ? null : claimOf(instanceId, taskId, workerId, row);
  }

  /** Why a release or an extend changed no row, read in a second statement (see claimRefusal). */
  async #refusal(
    which: "release" | "extend",
    instanceId: string,
    taskId: string,
    workerId: string,
  ): Promise<PersistenceError> {
    const r = await this.#q<ReadClaimRow>(this.#pool, this.#st.readClaim, [instanceId, taskId]);
    return claimRefusal(which, instanceId, taskId, workerId, r.rows[0]);
  }

  protected async doReleaseTaskClaim(instanceId: string, taskId: string, workerId: string): Promise<void> {
    const r = await this.#q<{ n: number }>(this.#pool, this.#st.releaseClaim, [instanceId, taskId, workerId]);
    if ((r.rows[0]?.n ?? 0) === 0) {
      // Found as this worker's after the delete found none: claimed again meanwhile.
      throw await this.#refusal("release", instanceId, taskId, workerId);
    }
  }

  protected async doExtendTaskClaim(
    instanceId: string,
    taskId: string,
    workerId: string,
    durationMs: number,
  ): Promise<RenewedClaim> {
    const r = await this.#q<ExtendRow>(this.#pool, this.#st.extendClaim, [
      instanceId,
      taskId,
      workerId,
      durationMs,
    ]);
    const row = r.rows[0];
    if (row === undefined) {
      // No claim, another worker's, expired, or on a cancelled workflow: extendRefusal's order.
      throw await this.#refusal("extend", instanceId, taskId, workerId);
    }
    return { ...claimOf(instanceId, taskId, workerId, row), workflowPaused: row.paused };
  }

  protected async doFindAvailableTasks(
    _workerId: string,
    limit: number,
    queues: readonly string[],
  ): Promise<AvailableTask[]> {
    const [statement, values] = this.#claimNext.find(limit, queues);
    const r = await this.#q<ReadyRow>(this.#pool, statement, values);
    return r.rows.map(availableTask);
  }

  /**
   * One transaction for the call: every row of the batch locked first, in instance order (as
   * completeTasks does: no deadlock between batches), then per failure its refusals and its
   * writes (failTask).
   */
  protected async doFailTasks(items: readonly ValidFailure[]): Promise<CompletionOutcome[]> {
    return this.#transaction(async (db) => {
      await this.#q(db, this.#st.lockSnapshots, [[...new Set(items.map((f) => f.instanceId))]]);
      const outcomes: CompletionOutcome[] = [];
      for (const f of items) outcomes.push(await failTask(this.#db(db), f));
      return outcomes;
    });
  }

  protected async doClaimAvailableTasks(
    workerId: string,
    limit: number,
    ttlMs: number | null,
    queues: readonly string[],
  ): Promise<ClaimedTask[]> {
    const claimed: ClaimedTask[] = [];
    // A candidate read before a concurrent claim committed loses the claim insert, and one whose
    // row moved on after the statement's snapshot is left unclaimed (see sql.ts, claimNext); both
    // come back without a token. Retry (a new statement has a new snapshot) so that a caller is
    // not told "nothing ready" while unclaimed tasks remain.
    for (let attempt = 0; attempt < 5 && claimed.length < limit; attempt++) {
      let rows: ClaimNextRow[];
      try {
        const [statement, values] = this.#claimNext.call(limit - claimed.length, workerId, ttlMs, queues);
        rows = (await this.#q<ClaimNextRow>(this.#pool, statement, values)).rows;
      } catch (error) {
        // Claims of earlier rounds are committed: hand them back rather than lose them (with no
        // ttl they would never expire).
        if (claimed.length > 0) return claimed;
        throw error;
      }
      let unclaimed = 0;
      for (const row of rows) {
        const { input, definition_hash } = row;
        if (row.token === null || input === null || definition_hash === null) {
          unclaimed++;
          continue;
        }
        claimed.push({
          ...availableTask({ ...row, input, definition_hash }),
          claim: claimOf(row.instance_id, row.task_id, workerId, row),
        });
      }
      if (unclaimed === 0) break;
    }
    return claimed;
  }

  protected async doCancelWorkflow(instanceId: string, request: Required<ControlRequest>): Promise<void> {
    await this.#transaction((db) => transition(this.#db(db), "cancel", instanceId, request));
  }

  protected async doPauseWorkflow(instanceId: string, request: Required<ControlRequest>): Promise<void> {
    await this.#transaction((db) => transition(this.#db(db), "pause", instanceId, request));
  }

  protected async doResumeWorkflow(instanceId: string): Promise<void> {
    const request = { reason: null, requestedBy: null };
    await this.#transaction((db) => transition(this.#db(db), "resume", instanceId, request));
  }

  protected async doSendEvent(instanceId: string, eventName: string, payload: Uint8Array): Promise<number> {
    return sendEvent(this.#db(this.#pool), instanceId, eventName, payload);
  }

  protected async doLoadPendingEvents(instanceId: string): Promise<PendingEvent[]> {
    return loadPendingEvents(this.#db(this.#pool), instanceId);
  }

  /** One statement (probeWakeUp, sql-wake.ts) over the ready, timer and leased indexes. */
  protected override async doProbeWakeUp(queues: readonly string[]): Promise<WakeProbe> {
    const r = await this.#q<{ ready: boolean; next_due: string | null; now_ms: string }>(
      this.#pool,
      this.#st.probeWakeUp,
      [[...queues]],
    );
    const row = r.rows[0];
    // Due times are on the server's clock: the hub sleeps from the server's now (now_ms).
    return {
      ready: row?.ready === true,
      nextDueAt: row?.next_due == null ? null : Number(row.next_due),
      ...(row === undefined ? {} : { now: Number(row.now_ms) }),
    };
  }

  /**
   * The listener (wake-ups.ts) on a connection of its own, opened with the pool's options: the
   * options this backend built, or those of the caller's pool (`pool.options`).
   */
  protected override doListenForWakeUps(
    notify: (queue: string | null, readyNow?: boolean) => void,
  ): Promise<() => Promise<void>> {
    const pool = this.#options.pool;
    const config = pool.kind === "own" ? pool.config : pool.pool.options;
    return listenForWakeUps({ config: { ...config }, channel: this.#layout.wakeChannel, notify });
  }

  protected async doClose(): Promise<void> {
    if (this.#ownsPool) await this.#pool.end();
  }
}
