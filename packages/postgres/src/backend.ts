import {
  type AvailableTask,
  type BackendCapabilities,
  BaseBackend,
  type ClaimedTask,
  type CompletionOutcome,
  type Fence,
  failures,
  isPersistenceError,
  type PersistenceError,
  type SnapshotPage,
  type TaskClaim,
  type TaskResult,
  toBytes,
  type ValidCompletion,
  type WorkflowSnapshot,
} from "@sayiir/persistence-core";
import {
  fromStoredParts,
  type MigrationReport,
  releaseRefusal,
  toStoredSnapshot,
} from "@sayiir/persistence-core/adapter";
import pg from "pg";
import { bigintArray, byteaArray, textArray } from "./arrays.js";
import { type Layout, layoutFor } from "./layout.js";
import { type NormalizedOptions, normalizeOptions, type PostgresBackendOptions } from "./options.js";
import { claimNextStatements, type FixedKey, preparedStatements, type Statement } from "./prepared.js";
import { applyMigrations, schemaStatements } from "./schema.js";
import {
  batches,
  type ClaimNextRow,
  type ClaimRow,
  COMPLETE_BATCH,
  type CompleteRow,
  claimOf,
  type LoadRow,
  RESULTS_BATCH,
  type ReadyRow,
  type Statements,
  statements,
} from "./sql.js";

type Queryable = Pick<pg.PoolClient, "query">;

/** A checked-out connection, and why it may be unusable (then it is destroyed, not pooled again). */
interface Session {
  client: pg.PoolClient;
  broken: Error | undefined;
}

const toBuffer = (bytes: Uint8Array): Buffer => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
const asError = (e: unknown): Error => (e instanceof Error ? e : new Error(String(e)));

/**
 * Sayiir persistence on PostgreSQL 13 or newer, over `pg`. Call {@link migrate} once (it is
 * idempotent and safe to run from many processes at once) before the other operations.
 */
export class PostgresBackend extends BaseBackend {
  /** Every expiry is judged on the server's clock, inside the statement that acts on it. */
  readonly capabilities: BackendCapabilities = {
    durable: true,
    clock: "server",
    clockSkewMs: 0,
    shards: 1,
    wakeUps: "poll",
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
    this.#sql = statements(this.#layout);
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
    const hook = this.#options.faults?.beforeQuery;
    if (hook === undefined) return db.query<R>(config);
    return (async () => {
      await hook(typeof statement === "string" ? statement : statement.key);
      return db.query<R>(config);
    })();
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

  protected async doSaveSnapshot(snapshot: WorkflowSnapshot, fence: Fence | undefined): Promise<void> {
    const stored = toStoredSnapshot(snapshot);
    const id = stored.instanceId;
    await this.#transaction(async (db) => {
      // Locks are always taken snapshot row first, then claim row (as claim-next does), so a
      // fenced write and a concurrent claim-next can never deadlock. Refusals in
      // snapshotRefusal's order: the fence, then a finished workflow going back to InProgress.
      const existing = await this.#q<{ finished: boolean }>(db, this.#st.lockSnapshot, [id]);
      if (fence !== undefined && !(await this.#fenceHolds(db, id, fence))) {
        throw failures.fenceRejected(id, fence);
      }
      if (existing.rows[0]?.finished === true && !stored.finished) throw failures.cannotReopen(id);
      // The conflict clause repeats the guard for a row inserted by someone else meanwhile.
      const up = await this.#q(db, this.#st.upsertSnapshot, [
        id,
        stored.definitionHash,
        toBuffer(stored.header),
        stored.initialInput === null ? null : toBuffer(stored.initialInput),
        stored.finished,
        stored.lastCompletedTaskId,
        stored.readyTaskId,
        stored.updatedAt,
      ]);
      if (up.rowCount === 0) throw failures.cannotReopen(id);
      await this.#q(db, this.#st.deleteResults, [id]);
      await this.#insertResults(db, id, stored.results);
    });
  }

  /** Multi-row inserts, RESULTS_BATCH rows or bytes at a time. */
  async #insertResults(db: Queryable, instanceId: string, results: TaskResult[]): Promise<void> {
    for (const batch of batches(results, RESULTS_BATCH, (r) => r.output.byteLength)) {
      const values: unknown[] = [instanceId];
      for (const r of batch) values.push(r.taskId, toBuffer(r.output));
      await this.#q(db, { key: "insertResults", text: this.#sql.insertResults(batch.length) }, values);
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
      const row = await this.#q<{ finished: boolean }>(db, this.#st.lockSnapshot, [instanceId]);
      const stored = row.rows[0];
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
   * The whole batch in one statement (per COMPLETE_BATCH run): each item is the fenced write of
   * its result and the release of its claim, in one transaction; refused items write nothing and
   * keep their claims.
   */
  protected override async doCompleteTasks(
    completions: readonly ValidCompletion[],
  ): Promise<CompletionOutcome[]> {
    const outcomes: CompletionOutcome[] = [];
    for (const batch of batches(completions, COMPLETE_BATCH, (c) => c.output.byteLength)) {
      outcomes.push(...(await this.#completeBatch(batch)));
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
    const head = r.rows.find((row) => row.kind === 0);
    if (head === undefined) throw failures.snapshotNotFound(instanceId);
    const results: TaskResult[] = [];
    for (const row of r.rows) {
      if (row.kind === 1 && row.task_id !== null)
        results.push({ taskId: row.task_id, output: toBytes(row.data) });
    }
    return fromStoredParts({
      instanceId,
      header: toBytes(head.data),
      initialInput: head.extra === null ? null : toBytes(head.extra),
      results,
      lastCompletedTaskId: head.last_completed_task_id,
      updatedAt: Number(head.updated_at),
    });
  }

  protected async doDeleteSnapshot(instanceId: string): Promise<void> {
    const r = await this.#q<{ n: number; moved: boolean }>(this.#pool, this.#st.deleteSnapshot, [instanceId]);
    const row = r.rows[0];
    if (row === undefined || row.n === 0) throw failures.snapshotNotFound(instanceId);
    if (row.moved) await this.#q(this.#pool, this.#st.deleteOrphanResults, [instanceId]);
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

  /**
   * Why a release or an extend changed no row, read in a second statement: releaseRefusal on
   * the claim found now (none: NotFound; another worker's: ClaimLost), else `otherwise` (the
   * worker's own claim was not the one the statement could act on).
   */
  async #refusal(
    instanceId: string,
    taskId: string,
    workerId: string,
    otherwise: PersistenceError,
  ): Promise<PersistenceError> {
    const r = await this.#q<{ worker_id: string }>(this.#pool, this.#st.readClaim, [instanceId, taskId]);
    const holder = r.rows[0];
    const claim = holder === undefined ? undefined : { workerId: holder.worker_id, expiresAt: null };
    return releaseRefusal(instanceId, taskId, claim, workerId) ?? otherwise;
  }

  protected async doReleaseTaskClaim(instanceId: string, taskId: string, workerId: string): Promise<void> {
    const r = await this.#q<{ n: number }>(this.#pool, this.#st.releaseClaim, [instanceId, taskId, workerId]);
    if ((r.rows[0]?.n ?? 0) === 0) {
      // Found as this worker's after the delete found none: claimed again meanwhile.
      throw await this.#refusal(instanceId, taskId, workerId, failures.claimedByOther(instanceId, taskId));
    }
  }

  protected async doExtendTaskClaim(
    instanceId: string,
    taskId: string,
    workerId: string,
    durationMs: number,
  ): Promise<TaskClaim> {
    const r = await this.#q<ClaimRow>(this.#pool, this.#st.extendClaim, [
      instanceId,
      taskId,
      workerId,
      durationMs,
    ]);
    const row = r.rows[0];
    if (row === undefined) {
      // This worker's claim, but not live on the server clock: extendRefusal's last rule.
      throw await this.#refusal(instanceId, taskId, workerId, failures.claimExpired(instanceId, taskId));
    }
    return claimOf(instanceId, taskId, workerId, row);
  }

  protected async doFindAvailableTasks(_workerId: string, limit: number): Promise<AvailableTask[]> {
    const r = await this.#q<ReadyRow>(this.#pool, this.#st.findAvailable, [limit]);
    return r.rows.map((row) => ({
      instanceId: row.instance_id,
      taskId: row.task_id,
      input: toBytes(row.input),
      workflowDefinitionHash: row.definition_hash,
    }));
  }

  protected async doClaimAvailableTasks(
    workerId: string,
    limit: number,
    ttlMs: number | null,
  ): Promise<ClaimedTask[]> {
    const claimed: ClaimedTask[] = [];
    // A candidate read before a concurrent claim committed loses the claim insert, and one whose
    // row moved on after the statement's snapshot is left unclaimed (see sql.ts, claimNext); both
    // come back without a token. Retry (a new statement has a new snapshot) so that a caller is
    // not told "nothing ready" while unclaimed tasks remain.
    for (let attempt = 0; attempt < 5 && claimed.length < limit; attempt++) {
      let rows: ClaimNextRow[];
      try {
        const [statement, values] = this.#claimNext.call(limit - claimed.length, workerId, ttlMs);
        rows = (await this.#q<ClaimNextRow>(this.#pool, statement, values)).rows;
      } catch (error) {
        // Claims of earlier rounds are committed: hand them back rather than lose them (with no
        // ttl they would never expire).
        if (claimed.length > 0) return claimed;
        throw error;
      }
      let unclaimed = 0;
      for (const row of rows) {
        if (row.token === null || row.input === null || row.definition_hash === null) {
          unclaimed++;
          continue;
        }
        claimed.push({
          instanceId: row.instance_id,
          taskId: row.task_id,
          input: toBytes(row.input),
          workflowDefinitionHash: row.definition_hash,
          claim: claimOf(row.instance_id, row.task_id, workerId, row),
        });
      }
      if (unclaimed === 0) break;
    }
    return claimed;
  }

  protected async doClose(): Promise<void> {
    if (this.#ownsPool) await this.#pool.end();
  }
}

/**
 * One completeTasks row as saveTaskResult's outcome, in resultRefusal's order: a missing
 * instance, then a lost claim, then a finished workflow (fenced: finished, claim live).
 */
function completionOutcome(row: CompleteRow, c: ValidCompletion): CompletionOutcome {
  if (row.done) return null;
  if (!row.found) return failures.snapshotNotFound(c.instanceId);
  if (row.fenced) return failures.resultsFinal(c.instanceId);
  return failures.fenceRejected(c.instanceId, c);
}
