import {
  type AvailableTask,
  assertClaimHolder,
  BaseBackend,
  type ClaimedTask,
  ClaimLostError,
  type CompletionOutcome,
  type ConflictError,
  decodeSnapshotHeader,
  encodeSnapshotHeader,
  type Fence,
  failures,
  isPersistenceError,
  type SnapshotPage,
  type TaskClaim,
  type TaskResult,
  type ValidCompletion,
  type WorkflowSnapshot,
} from "@sayiir/persistence-core";
import pg from "pg";
import { bigintArray, byteaArray, textArray } from "./arrays.js";
import { type Layout, layoutFor } from "./layout.js";
import { MIGRATION_LOCK_CLASS, MIGRATIONS } from "./migrations.js";
import { type NormalizedOptions, normalizeOptions, type PostgresBackendOptions } from "./options.js";
import {
  claimNextStatements,
  type PreparedKey,
  preparedStatements,
  type Statement,
  type Statements,
  statements,
} from "./sql.js";

type Queryable = Pick<pg.PoolClient, "query">;

/** Rows of one multi-row results insert stay under these bounds (bind parameters and message size). */
const INSERT_BATCH_ROWS = 1000;
const INSERT_BATCH_BYTES = 16 * 1024 * 1024;
/**
 * One completeTasks statement carries at most this many items and (past its first item) this many
 * output bytes; a larger call runs several statements, one after another. Items are independent,
 * so each item stays one atomic step either way.
 */
const COMPLETE_BATCH_ROWS = 1000;
const COMPLETE_BATCH_BYTES = 16 * 1024 * 1024;

const toBuffer = (bytes: Uint8Array): Buffer => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
/** Driver Buffers out as plain Uint8Arrays (a view, no copy). */
const toPlain = (buf: Buffer): Uint8Array => new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
const quote = (id: string) => JSON.stringify(id);
const num = (v: string | null): number | null => (v === null ? null : Number(v));

/** Result of {@link PostgresBackend.migrate}. */
export interface MigrationReport {
  /** Versions this call applied (empty when the schema was already current). */
  applied: number[];
  /** The schema version after the call. */
  version: number;
}

/**
 * Sayiir persistence on PostgreSQL 13 or newer, over `pg`. Call {@link migrate} once (it is
 * idempotent and safe to run from many processes at once) before the other operations.
 */
export class PostgresBackend extends BaseBackend {
  readonly schema: string;
  readonly #pool: pg.Pool;
  readonly #ownsPool: boolean;
  readonly #options: NormalizedOptions;
  readonly #layout: Layout;
  readonly #sql: Statements;
  readonly #st: Record<PreparedKey, Statement>;
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

  #q<R extends pg.QueryResultRow>(
    db: Queryable,
    statement: string | Statement,
    values: unknown[] = [],
  ): Promise<pg.QueryResult<R>> {
    const config: pg.QueryConfig & { query_timeout?: number } =
      typeof statement === "string" ? { text: statement, values } : { ...statement, values };
    if (this.#options.queryTimeoutMs > 0) config.query_timeout = this.#options.queryTimeoutMs;
    return db.query<R>(config);
  }

  /** One checked-out connection for a transaction; a broken connection is destroyed, not reused. */
  async #transaction<T>(body: (db: Queryable) => Promise<T>): Promise<T> {
    const client = await this.#pool.connect();
    let broken: Error | undefined;
    const onError = (error: Error) => {
      broken = error;
    };
    client.on("error", onError);
    try {
      await this.#q(client, "BEGIN");
      const result = await body(client);
      await this.#q(client, "COMMIT");
      return result;
    } catch (error) {
      if (broken === undefined && !(error instanceof pg.DatabaseError) && !isPersistenceError(error)) {
        broken = error instanceof Error ? error : new Error(String(error));
      }
      if (broken === undefined) {
        await this.#q(client, "ROLLBACK").catch((e: unknown) => {
          broken = e instanceof Error ? e : new Error(String(e));
        });
      }
      throw error;
    } finally {
      client.off("error", onError);
      client.release(broken);
    }
  }

  /**
   * Creates the schema and applies pending migrations, recorded in `<schema>.sayiir_migrations`.
   * Serialised across processes by a session advisory lock; idempotent.
   */
  async migrate(): Promise<MigrationReport> {
    return this.run("migrate", async () => {
      const l = this.#layout;
      const client = await this.#pool.connect();
      let broken: Error | undefined;
      const onError = (error: Error) => {
        broken = error;
      };
      client.on("error", onError);
      try {
        await this.#q(client, "SELECT pg_advisory_lock($1::int, hashtext($2::text))", [
          MIGRATION_LOCK_CLASS,
          this.schema,
        ]);
        try {
          await this.#q(client, `CREATE SCHEMA IF NOT EXISTS ${l.s}`);
          await this.#q(
            client,
            `CREATE TABLE IF NOT EXISTS ${l.migrations} (
               version integer PRIMARY KEY,
               name text NOT NULL,
               applied_at timestamptz NOT NULL DEFAULT now())`,
          );
          const done = await this.#q<{ version: number }>(client, `SELECT version FROM ${l.migrations}`);
          const have = new Set(done.rows.map((r) => r.version));
          const applied: number[] = [];
          for (const migration of MIGRATIONS) {
            if (have.has(migration.version)) continue;
            await this.#q(client, "BEGIN");
            try {
              await this.#q(client, migration.sql(l));
              await this.#q(client, `INSERT INTO ${l.migrations} (version, name) VALUES ($1, $2)`, [
                migration.version,
                migration.name,
              ]);
              await this.#q(client, "COMMIT");
            } catch (error) {
              await this.#q(client, "ROLLBACK").catch(() => {});
              throw error;
            }
            applied.push(migration.version);
          }
          const version = Math.max(0, ...have, ...applied);
          return { applied, version };
        } finally {
          await this.#q(client, "SELECT pg_advisory_unlock($1::int, hashtext($2::text))", [
            MIGRATION_LOCK_CLASS,
            this.schema,
          ]).catch((e: unknown) => {
            broken = e instanceof Error ? e : new Error(String(e));
          });
        }
      } catch (error) {
        if (!(error instanceof pg.DatabaseError))
          broken ??= error instanceof Error ? error : new Error(String(error));
        throw error;
      } finally {
        client.off("error", onError);
        client.release(broken);
      }
    });
  }

  /** The schema version recorded in the migrations table (0 if migrate() never ran). */
  async schemaVersion(): Promise<number> {
    return this.run("schemaVersion", async () => {
      const exists = await this.#q<{ t: string | null }>(this.#pool, "SELECT to_regclass($1) AS t", [
        this.#layout.migrations,
      ]);
      if (exists.rows[0]?.t == null) return 0;
      const r = await this.#q<{ v: number | null }>(
        this.#pool,
        `SELECT max(version) AS v FROM ${this.#layout.migrations}`,
      );
      return r.rows[0]?.v ?? 0;
    });
  }

  async #checkFence(db: Queryable, instanceId: string, fence: Fence): Promise<void> {
    const r = await this.#q(db, this.#st.checkFence, [instanceId, fence.taskId, fence.token]);
    if (r.rowCount === 0) {
      throw failures.fenceRejected(instanceId, fence);
    }
  }

  protected async doSaveSnapshot(snapshot: WorkflowSnapshot, fence: Fence | undefined): Promise<void> {
    const id = snapshot.instanceId;
    const state = snapshot.state;
    // The initial input has a column of its own (discovery reads it), so the header leaves it out.
    const { initialInput, ...rest } = snapshot;
    const header = encodeSnapshotHeader(rest);
    const results = state.kind === "InProgress" ? Object.values(state.completedTasks) : [];
    let ready: string | null = null;
    if (state.kind === "InProgress" && state.position.kind === "AtTask") {
      const taskId = state.position.taskId;
      if (!Object.hasOwn(state.completedTasks, taskId)) ready = taskId;
    }
    await this.#transaction(async (db) => {
      // Locks are always taken snapshot row first, then claim row (as claim-next does), so a
      // fenced write and a concurrent claim-next can never deadlock.
      const existing = await this.#q<{ finished: boolean }>(db, this.#st.lockSnapshot, [id]);
      if (fence !== undefined) await this.#checkFence(db, id, fence);
      if (existing.rows[0]?.finished === true && state.kind === "InProgress") throw refuseReopen(id);
      // The conflict clause repeats the guard for a row inserted by someone else meanwhile.
      const up = await this.#q(db, this.#st.upsertSnapshot, [
        id,
        snapshot.definitionHash,
        toBuffer(header),
        initialInput === undefined ? null : toBuffer(initialInput),
        state.kind !== "InProgress",
        state.kind === "InProgress" ? state.lastCompletedTaskId : null,
        ready,
        snapshot.updatedAt,
      ]);
      if (up.rowCount === 0) throw refuseReopen(id);
      await this.#q(db, this.#st.deleteResults, [id]);
      await this.#insertResults(db, id, results);
    });
  }

  async #insertResults(db: Queryable, instanceId: string, results: TaskResult[]): Promise<void> {
    let batch: TaskResult[] = [];
    let bytes = 0;
    const flush = async () => {
      if (batch.length === 0) return;
      const values: unknown[] = [instanceId];
      for (const r of batch) values.push(r.taskId, toBuffer(r.output));
      await this.#q(db, this.#sql.insertResults(batch.length), values);
      batch = [];
      bytes = 0;
    };
    for (const result of results) {
      if (
        batch.length >= INSERT_BATCH_ROWS ||
        (batch.length > 0 && bytes + result.output.byteLength > INSERT_BATCH_BYTES)
      ) {
        await flush();
      }
      batch.push(result);
      bytes += result.output.byteLength;
    }
    await flush();
  }

  protected async doSaveTaskResult(
    instanceId: string,
    taskId: string,
    output: Uint8Array,
    fence: Fence | undefined,
  ): Promise<void> {
    await this.#transaction(async (db) => {
      const row = await this.#q<{ finished: boolean }>(db, this.#st.lockSnapshot, [instanceId]);
      const stored = row.rows[0];
      if (stored === undefined) throw failures.snapshotNotFound(instanceId);
      if (fence !== undefined) await this.#checkFence(db, instanceId, fence);
      if (stored.finished) {
        throw failures.resultsFinal(instanceId);
      }
      await this.#q(db, this.#st.upsertResult, [instanceId, taskId, toBuffer(output)]);
      await this.#q(db, this.#st.touchAfterResult, [instanceId, taskId]);
    });
  }

  /**
   * The whole batch in one statement (per chunk, see COMPLETE_BATCH_ROWS): each item is the fenced
   * write of its result and the release of its claim, in one transaction; refused items write
   * nothing and keep their claims.
   */
  protected override async doCompleteTasks(
    completions: readonly ValidCompletion[],
  ): Promise<CompletionOutcome[]> {
    const outcomes: CompletionOutcome[] = [];
    let start = 0;
    while (start < completions.length) {
      let end = start + 1;
      let bytes = completions[start]?.output.byteLength ?? 0;
      while (end < completions.length && end - start < COMPLETE_BATCH_ROWS) {
        const next = completions[end]?.output.byteLength ?? 0;
        if (bytes + next > COMPLETE_BATCH_BYTES) break;
        bytes += next;
        end++;
      }
      outcomes.push(...(await this.#completeChunk(completions.slice(start, end))));
      start = end;
    }
    return outcomes;
  }

  async #completeChunk(items: readonly ValidCompletion[]): Promise<CompletionOutcome[]> {
    const r = await this.#q<{ ord: number; found: boolean; done: boolean; fenced: boolean }>(
      this.#pool,
      this.#st.completeTasks,
      [
        textArray(items.map((c) => c.instanceId)),
        textArray(items.map((c) => c.taskId)),
        bigintArray(items.map((c) => c.token)),
        byteaArray(items.map((c) => c.output)),
      ],
    );
    const outcomes: CompletionOutcome[] = new Array(items.length);
    for (const row of r.rows) {
      const c = items[row.ord - 1];
      if (c === undefined) continue;
      // saveTaskResult's precedence: a missing instance, then a lost claim, then a finished workflow.
      outcomes[row.ord - 1] = row.done
        ? null
        : !row.found
          ? failures.snapshotNotFound(c.instanceId)
          : row.fenced
            ? failures.resultsFinal(c.instanceId)
            : failures.fenceRejected(c.instanceId, c);
    }
    for (let i = 0; i < items.length; i++) {
      if (outcomes[i] === undefined) throw new Error(`completeTasks: no outcome for item ${i}`);
    }
    return outcomes;
  }

  protected async doLoadSnapshot(instanceId: string): Promise<WorkflowSnapshot> {
    const r = await this.#q<{
      kind: number;
      task_id: string | null;
      data: Buffer;
      extra: Buffer | null;
      last_completed_task_id: string | null;
      updated_at: string | null;
    }>(this.#pool, this.#st.load, [instanceId]);
    const head = r.rows.find((row) => row.kind === 0);
    if (head === undefined) throw failures.snapshotNotFound(instanceId);
    const results: TaskResult[] = [];
    for (const row of r.rows) {
      if (row.kind === 1 && row.task_id !== null)
        results.push({ taskId: row.task_id, output: toPlain(row.data) });
    }
    const snapshot = decodeSnapshotHeader(toPlain(head.data), instanceId, {
      results,
      lastCompletedTaskId: head.last_completed_task_id,
      updatedAt: Number(head.updated_at),
    });
    if (head.extra !== null) snapshot.initialInput = toPlain(head.extra);
    return snapshot;
  }

  protected async doDeleteSnapshot(instanceId: string): Promise<void> {
    const r = await this.#q<{ n: number; moved: boolean }>(this.#pool, this.#st.delete, [instanceId]);
    const row = r.rows[0];
    if (row === undefined || row.n === 0) throw failures.snapshotNotFound(instanceId);
    if (row.moved) await this.#q(this.#pool, this.#sql.deleteOrphanResults, [instanceId]);
  }

  protected async doListSnapshotsPage(cursor: string | null, limit: number): Promise<SnapshotPage> {
    const r = await this.#q<{ instance_id: string }>(this.#pool, this.#sql.listPage, [cursor, limit + 1]);
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
    const r = await this.#q<ClaimRow>(this.#pool, this.#st.claim, [instanceId, taskId, workerId, ttlMs]);
    const row = r.rows[0];
    return row === undefined ? null : toClaim(instanceId, taskId, workerId, row);
  }

  async #refusal(instanceId: string, taskId: string, workerId: string, expired: string): Promise<never> {
    const r = await this.#q<{ worker_id: string }>(this.#pool, this.#st.claimHolder, [instanceId, taskId]);
    const holder = r.rows[0];
    assertClaimHolder(instanceId, taskId, holder?.worker_id, workerId);
    throw new ClaimLostError(expired);
  }

  protected async doReleaseTaskClaim(instanceId: string, taskId: string, workerId: string): Promise<void> {
    const r = await this.#q<{ n: number }>(this.#pool, this.#st.release, [instanceId, taskId, workerId]);
    if ((r.rows[0]?.n ?? 0) === 0) {
      await this.#refusal(
        instanceId,
        taskId,
        workerId,
        `task ${quote(taskId)} of ${quote(instanceId)} was claimed again`,
      );
    }
  }

  protected async doExtendTaskClaim(
    instanceId: string,
    taskId: string,
    workerId: string,
    durationMs: number,
  ): Promise<TaskClaim> {
    const r = await this.#q<ClaimRow>(this.#pool, this.#st.extend, [
      instanceId,
      taskId,
      workerId,
      durationMs,
    ]);
    const row = r.rows[0];
    if (row === undefined) {
      return this.#refusal(
        instanceId,
        taskId,
        workerId,
        `the claim on task ${quote(taskId)} of ${quote(instanceId)} has expired`,
      );
    }
    return toClaim(instanceId, taskId, workerId, row);
  }

  protected async doFindAvailableTasks(_workerId: string, limit: number): Promise<AvailableTask[]> {
    const r = await this.#q<{ instance_id: string; task_id: string; definition_hash: string; input: Buffer }>(
      this.#pool,
      this.#st.find,
      [limit],
    );
    return r.rows.map((row) => ({
      instanceId: row.instance_id,
      taskId: row.task_id,
      input: toPlain(row.input),
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
        const r = await this.#q<ClaimNextRow>(this.#pool, statement, values);
        rows = r.rows;
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
          input: toPlain(row.input),
          workflowDefinitionHash: row.definition_hash,
          claim: toClaim(row.instance_id, row.task_id, workerId, row),
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

function refuseReopen(instanceId: string): ConflictError {
  return failures.cannotReopen(instanceId);
}

interface ClaimRow {
  token: string | null;
  claimed_at: string | null;
  expires_at: string | null;
}

interface ClaimNextRow extends ClaimRow {
  instance_id: string;
  task_id: string;
  definition_hash: string | null;
  input: Buffer | null;
}

function toClaim(instanceId: string, taskId: string, workerId: string, row: ClaimRow): TaskClaim {
  return {
    instanceId,
    taskId,
    workerId,
    claimedAt: num(row.claimed_at) ?? 0,
    expiresAt: num(row.expires_at),
    token: num(row.token) ?? 0,
  };
}
