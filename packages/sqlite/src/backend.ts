import { DatabaseSync, type SQLInputValue, type StatementSync } from "node:sqlite";
import {
  type AvailableTask,
  assertClaimHolder,
  BackendError,
  BaseBackend,
  type ClaimedTask,
  type CompletionOutcome,
  decodeSnapshotHeader,
  ErrorCode,
  encodeSnapshotHeader,
  type Fence,
  failures,
  isClaimLive,
  isPersistenceError,
  type SnapshotPage,
  type TaskClaim,
  type ValidCompletion,
  type WorkflowSnapshot,
} from "@sayiir/persistence-core";
import { Status, type Tables, tableNames } from "./layout.js";
import { migrate } from "./migrations.js";
import {
  DEFAULT_BUSY_TIMEOUT_MS,
  type NormalizedOptions,
  normalizeOptions,
  type SqliteBackendOptions,
} from "./options.js";
import { type StatementName, statements } from "./sql.js";
import { immediate, prepare, read } from "./transaction.js";

type Row = Record<string, SQLInputValue>;

interface ClaimRow {
  worker_id: string;
  token: number;
  claimed_at: number;
  expires_at: number | null;
}

interface ReadyRow {
  instance_id: string;
  ready_task_id: string;
  definition_hash: string;
  input: Uint8Array;
}

/** node:sqlite hands out fresh Uint8Arrays; this keeps them plain even if a future version returns a Buffer. */
const plain = (bytes: Uint8Array): Uint8Array =>
  Object.getPrototypeOf(bytes) === Uint8Array.prototype
    ? bytes
    : new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);

const quoted = (id: string): string => JSON.stringify(id);

/**
 * A backend on Node's built-in SQLite (`node:sqlite`). Durable in a file, safe for several
 * processes on one machine: WAL mode, a busy timeout, and BEGIN IMMEDIATE around every
 * read-modify-write. Every operation runs its whole transaction synchronously.
 *
 * Call `migrate()` once (any number of processes may) before the first operation.
 */
export class SqliteBackend extends BaseBackend {
  /** The underlying connection (the caller's own when passed as `database`). */
  readonly database: DatabaseSync;
  readonly #owned: boolean;
  readonly #busyTimeoutMs: number;
  readonly #tables: Tables;
  readonly #sql: ReturnType<typeof statements>;
  readonly #prepared = new Map<StatementName, StatementSync>();

  constructor(options: SqliteBackendOptions) {
    super(options);
    const normalized = normalizeOptions(options);
    this.#tables = tableNames(normalized.tablePrefix);
    this.#sql = statements(this.#tables);
    this.#owned = normalized.database === undefined;
    this.#busyTimeoutMs = normalized.busyTimeoutMs ?? DEFAULT_BUSY_TIMEOUT_MS;
    this.database = normalized.database ?? open(normalized);
    if (!this.#owned && normalized.busyTimeoutMs !== undefined) {
      configure(this.database, normalized.busyTimeoutMs, undefined);
    }
  }

  /**
   * Creates or upgrades the tables and switches the file to WAL mode. Explicit (the constructor
   * does no schema work), idempotent, and safe when several processes call it at once.
   */
  async migrate(): Promise<void> {
    return this.run("migrate", () => migrate(this.database, this.#tables, this.#busyTimeoutMs));
  }

  #statement(name: StatementName): StatementSync {
    let statement = this.#prepared.get(name);
    if (statement === undefined) {
      statement = prepare(this.database, this.#sql[name]);
      this.#prepared.set(name, statement);
    }
    return statement;
  }

  #get<T>(name: StatementName, ...params: SQLInputValue[]): T | undefined {
    return this.#statement(name).get(...params) as T | undefined;
  }

  #all<T>(name: StatementName, ...params: SQLInputValue[]): T[] {
    return this.#statement(name).all(...params) as T[];
  }

  #run(name: StatementName, ...params: SQLInputValue[]): number {
    return Number(this.#statement(name).run(...params).changes);
  }

  #runNamed(name: StatementName, params: Row): number {
    return Number(this.#statement(name).run(params).changes);
  }

  /** Inside a write transaction: the clock reading, taken once the write lock is held. */
  #write<T>(body: (now: number) => T): T {
    return immediate(this.database, () => body(Date.now()));
  }

  #claimRow(instanceId: string, taskId: string): ClaimRow | undefined {
    return this.#get<ClaimRow>("getClaim", instanceId, taskId);
  }

  #checkFence(instanceId: string, fence: Fence | undefined, now: number): void {
    if (fence === undefined) return;
    const claim = this.#claimRow(instanceId, fence.taskId);
    if (
      claim === undefined ||
      !isClaimLive({ expiresAt: claim.expires_at }, now) ||
      claim.token !== fence.token
    ) {
      throw failures.fenceRejected(instanceId, fence);
    }
  }

  protected async doSaveSnapshot(snapshot: WorkflowSnapshot, fence: Fence | undefined): Promise<void> {
    const id = snapshot.instanceId;
    const state = snapshot.state;
    // The initial input has a column of its own (discovery reads it without decoding the header).
    const { initialInput, ...rest } = snapshot;
    const header = encodeSnapshotHeader(rest);
    const results = state.kind === "InProgress" ? Object.values(state.completedTasks) : [];
    const positionTask =
      state.kind === "InProgress" && state.position.kind === "AtTask" ? state.position.taskId : null;
    const ready =
      positionTask !== null &&
      state.kind === "InProgress" &&
      !Object.hasOwn(state.completedTasks, positionTask)
        ? positionTask
        : null;
    const status =
      state.kind === "InProgress"
        ? Status.InProgress
        : state.kind === "Completed"
          ? Status.Completed
          : Status.Failed;
    this.#write((now) => {
      this.#checkFence(id, fence, now);
      const existing = this.#get<{ status: string }>("snapshotState", id);
      if (existing !== undefined && existing.status !== Status.InProgress && status === Status.InProgress) {
        throw failures.cannotReopen(id);
      }
      this.#runNamed("upsertSnapshot", {
        id,
        header,
        status,
        hash: snapshot.definitionHash,
        input: initialInput ?? null,
        last: state.kind === "InProgress" ? state.lastCompletedTaskId : null,
        ready,
        updatedAt: snapshot.updatedAt,
      });
      this.#run("deleteResults", id);
      for (const result of results) this.#run("upsertResult", id, result.taskId, result.output);
    });
  }

  protected async doSaveTaskResult(
    instanceId: string,
    taskId: string,
    output: Uint8Array,
    fence: Fence | undefined,
  ): Promise<void> {
    this.#write((now) => this.#saveTaskResult(instanceId, taskId, output, fence, now));
  }

  /** Inside a write transaction: the checks of saveTaskResult in its order, then the writes. */
  #saveTaskResult(
    instanceId: string,
    taskId: string,
    output: Uint8Array,
    fence: Fence | undefined,
    now: number,
  ): void {
    const existing = this.#get<{ status: string }>("snapshotState", instanceId);
    if (existing === undefined) throw failures.snapshotNotFound(instanceId);
    this.#checkFence(instanceId, fence, now);
    if (existing.status !== Status.InProgress) {
      throw failures.resultsFinal(instanceId);
    }
    this.#run("upsertResult", instanceId, taskId, output);
    this.#runNamed("recordResult", { id: instanceId, task: taskId, now });
  }

  /**
   * The whole batch in one BEGIN IMMEDIATE transaction: one lock, one commit (a commit, with its
   * fsync, is what a write costs here). Each completion's checks run before any of its writes,
   * so a refused one writes nothing and leaves its claim; the others go on. The fence check has
   * just found the claim live with this token under the write lock, so deleting the claim row
   * deletes exactly that claim.
   */
  protected override async doCompleteTasks(
    completions: readonly ValidCompletion[],
  ): Promise<CompletionOutcome[]> {
    return this.#write((now) =>
      completions.map((c): CompletionOutcome => {
        try {
          this.#saveTaskResult(c.instanceId, c.taskId, c.output, c, now);
        } catch (error) {
          // Refusals are this completion's outcome; anything else (a driver error) rolls back all.
          if (isPersistenceError(error) && error.code !== ErrorCode.Backend) return error;
          throw error;
        }
        this.#run("deleteClaim", c.instanceId, c.taskId);
        return null;
      }),
    );
  }

  protected async doLoadSnapshot(instanceId: string): Promise<WorkflowSnapshot> {
    const { row, results } = read(this.database, () => {
      const row = this.#get<{
        header: Uint8Array;
        initial_input: Uint8Array | null;
        last_completed_task_id: string | null;
        updated_at: number;
      }>("loadSnapshot", instanceId);
      if (row === undefined) throw failures.snapshotNotFound(instanceId);
      return { row, results: this.#all<{ task_id: string; output: Uint8Array }>("loadResults", instanceId) };
    });
    const snapshot = decodeSnapshotHeader(plain(row.header), instanceId, {
      results: results.map((r) => ({ taskId: r.task_id, output: plain(r.output) })),
      lastCompletedTaskId: row.last_completed_task_id,
      updatedAt: row.updated_at,
    });
    if (row.initial_input !== null) snapshot.initialInput = plain(row.initial_input);
    return snapshot;
  }

  protected async doDeleteSnapshot(instanceId: string): Promise<void> {
    this.#write(() => {
      if (this.#run("deleteSnapshot", instanceId) === 0) {
        throw failures.snapshotNotFound(instanceId);
      }
      this.#run("deleteResults", instanceId);
      this.#run("deleteClaims", instanceId);
    });
  }

  protected async doListSnapshotsPage(cursor: string | null, limit: number): Promise<SnapshotPage> {
    // Keyset pagination on the primary key: the cursor is the last id of the previous page.
    const rows =
      cursor === null
        ? this.#all<{ instance_id: string }>("firstPage", limit + 1)
        : this.#all<{ instance_id: string }>("nextPage", cursor, limit + 1);
    const instanceIds = rows.slice(0, limit).map((r) => r.instance_id);
    const more = rows.length > limit;
    return { instanceIds, nextCursor: more ? (instanceIds[instanceIds.length - 1] ?? null) : null };
  }

  /** Inside a write transaction: takes the claim unless a live one exists. */
  #claim(
    instanceId: string,
    taskId: string,
    workerId: string,
    ttlMs: number | null,
    now: number,
  ): TaskClaim | null {
    const existing = this.#claimRow(instanceId, taskId);
    if (existing !== undefined && isClaimLive({ expiresAt: existing.expires_at }, now)) return null;
    const { last_token: token } = this.#get<{ last_token: number }>("nextToken") as { last_token: number };
    const claim: TaskClaim = {
      instanceId,
      taskId,
      workerId,
      claimedAt: now,
      expiresAt: ttlMs === null ? null : now + ttlMs,
      token,
    };
    this.#run("putClaim", instanceId, taskId, workerId, token, now, claim.expiresAt);
    return claim;
  }

  protected async doClaimTask(
    instanceId: string,
    taskId: string,
    workerId: string,
    ttlMs: number | null,
  ): Promise<TaskClaim | null> {
    return this.#write((now) => this.#claim(instanceId, taskId, workerId, ttlMs, now));
  }

  #ownedClaim(instanceId: string, taskId: string, workerId: string): ClaimRow {
    const claim = this.#claimRow(instanceId, taskId);
    assertClaimHolder(instanceId, taskId, claim?.worker_id, workerId);
    return claim as ClaimRow;
  }

  protected async doReleaseTaskClaim(instanceId: string, taskId: string, workerId: string): Promise<void> {
    this.#write(() => {
      this.#ownedClaim(instanceId, taskId, workerId);
      this.#run("deleteClaim", instanceId, taskId);
    });
  }

  protected async doExtendTaskClaim(
    instanceId: string,
    taskId: string,
    workerId: string,
    durationMs: number,
  ): Promise<TaskClaim> {
    return this.#write((now) => {
      const claim = this.#ownedClaim(instanceId, taskId, workerId);
      if (!isClaimLive({ expiresAt: claim.expires_at }, now)) {
        throw failures.claimExpired(instanceId, taskId);
      }
      const expiresAt = claim.expires_at === null ? null : now + durationMs;
      if (expiresAt !== null) this.#run("renewClaim", expiresAt, instanceId, taskId);
      return { instanceId, taskId, workerId, claimedAt: claim.claimed_at, expiresAt, token: claim.token };
    });
  }

  #ready(limit: number, now: number): ReadyRow[] {
    return this.#statement("readyTasks").all({ now, limit }) as unknown as ReadyRow[];
  }

  protected async doFindAvailableTasks(_workerId: string, limit: number): Promise<AvailableTask[]> {
    // One SELECT is one consistent read; no transaction needed.
    return this.#ready(limit, Date.now()).map((row) => ({
      instanceId: row.instance_id,
      taskId: row.ready_task_id,
      input: plain(row.input),
      workflowDefinitionHash: row.definition_hash,
    }));
  }

  protected async doClaimAvailableTasks(
    workerId: string,
    limit: number,
    ttlMs: number | null,
  ): Promise<ClaimedTask[]> {
    // Find and claim under one write lock: no other connection can claim in between, so every
    // row found is claimable and no task is handed out twice.
    return this.#write((now) =>
      this.#ready(limit, now).map((row) => ({
        instanceId: row.instance_id,
        taskId: row.ready_task_id,
        input: plain(row.input),
        workflowDefinitionHash: row.definition_hash,
        claim: this.#claim(row.instance_id, row.ready_task_id, workerId, ttlMs, now) as TaskClaim,
      })),
    );
  }

  protected async doClose(): Promise<void> {
    this.#prepared.clear();
    if (this.#owned) this.database.close();
  }
}

function configure(
  db: DatabaseSync,
  busyTimeoutMs: number | undefined,
  synchronous: string | undefined,
): void {
  if (busyTimeoutMs !== undefined) db.exec(`PRAGMA busy_timeout = ${busyTimeoutMs}`);
  if (synchronous !== undefined) db.exec(`PRAGMA synchronous = ${synchronous}`);
}

function open(options: NormalizedOptions): DatabaseSync {
  let db: DatabaseSync | undefined;
  try {
    db = new DatabaseSync(options.path as string);
    configure(db, options.busyTimeoutMs, options.synchronous);
    return db;
  } catch (error) {
    try {
      db?.close();
    } catch {
      // already closed
    }
    throw new BackendError(
      `could not open SQLite database ${quoted(options.path as string)}: ${String(error)}`,
      {
        cause: error,
      },
    );
  }
}
