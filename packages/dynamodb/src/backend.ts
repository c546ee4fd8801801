import {
  type AttributeValue,
  DeleteItemCommand,
  DynamoDBClient,
  GetItemCommand,
  PutItemCommand,
  QueryCommand,
  type QueryCommandOutput,
  ScanCommand,
  type ScanCommandOutput,
  type TransactWriteItem,
  TransactWriteItemsCommand,
  UpdateItemCommand,
} from "@aws-sdk/client-dynamodb";
import {
  type AvailableTask,
  assertClaimHolder,
  BackendError,
  BaseBackend,
  type ClaimedTask,
  type ClaimLostError,
  type CompletionOutcome,
  compareIds,
  decodeSnapshotHeader,
  EMPTY_BYTES,
  encodeSnapshotHeader,
  type Fence,
  failures,
  type SnapshotPage,
  type TaskClaim,
  type TaskResult,
  ValidationError,
  type ValidCompletion,
  type WorkflowSnapshot,
} from "@sayiir/persistence-core";
import { Chunks, chunkSetOf, MissingChunkError, readRef, refAttributes, type ValueRef } from "./chunks.js";
import {
  completionTransaction,
  cut,
  type Entry,
  inlineBytes,
  type Prior,
  priorOf,
  settleAll,
} from "./completion.js";
import {
  type AnyCommand,
  backoff,
  batchGet,
  batchWrite,
  cancellationReasons,
  expressions,
  type Item,
  isConditionFailed,
  isConflictOnly,
  type Key,
  N,
  num,
  S,
  sendRetrying,
  str,
} from "./dynamo.js";
import {
  ATTR,
  DELETE_MARKER_SK,
  freshId,
  HEAD_SK,
  hashId,
  Layout,
  LIST_INDEX,
  READY_INDEX,
} from "./layout.js";
import { type DynamoDBBackendOptions, type NormalizedOptions, normalizeOptions } from "./options.js";
import { ensureTable, TTL_ATTRIBUTE } from "./table.js";

/** How long a released or deleted claim's tombstone (which keeps its last token) is kept. */
const TOMBSTONE_SECONDS = 7 * 24 * 60 * 60;
/** Attempts of the optimistic loops (re-read and retry after losing a race). */
const RACE_ATTEMPTS = 50;
/** Items one TransactWriteItems may hold. */
const MAX_TRANSACTION_ITEMS = 100;
/** Instances whose completions are committed at once by one completeTasks call. */
const COMPLETION_LANES = 16;
/** Outputs whose chunks are written at once by one completeTasks call. */
const CHUNK_LANES = 4;

const quote = (id: string): string => JSON.stringify(id);

interface Head {
  pk: string;
  instanceId: string;
  generation: string;
  finished: boolean;
  positionTaskId: string | undefined;
  lastCompletedTaskId: string | undefined;
  updatedAt: number;
  definitionHash: string;
  /** In the ready index (either partition). */
  ready: boolean;
  /** In the leased partition (claimed by claim-next): its lease sort key. */
  leaseSk: string | undefined;
  header: ValueRef | undefined;
}

interface StoredClaim {
  token: number;
  workerId: string | undefined;
  claimedAt: number | undefined;
  expiresAt: number | undefined;
  /** Random per claim attempt: tells our own landed write from another caller's identical one. */
  nonce: string | undefined;
}

interface Candidate {
  pk: string;
  instanceId: string;
  taskId: string;
  updatedAt: number;
  /** Found in the leased partition (a lease that has ended): its lease sort key. */
  leaseSk?: string;
}

/** One shard of the ready index, read page by page in (updatedAt, instance id) order. */
class ShardCursor {
  buffer: Candidate[] = [];
  #startKey: Record<string, AttributeValue> | undefined;
  #done = false;
  constructor(
    private readonly fetch: (
      startKey: Record<string, AttributeValue> | undefined,
    ) => Promise<Pick<QueryCommandOutput, "Items" | "LastEvaluatedKey">>,
    private readonly leased = false,
  ) {}

  get exhausted(): boolean {
    return this.#done && this.buffer.length === 0;
  }

  async fill(): Promise<void> {
    while (this.buffer.length === 0 && !this.#done) {
      const out = await this.fetch(this.#startKey);
      this.#startKey = out.LastEvaluatedKey;
      if (this.#startKey === undefined) this.#done = true;
      for (const item of out.Items ?? []) {
        const instanceId = str(item, "iid");
        const taskId = str(item, "pos");
        const updatedAt = num(item, "upd");
        const pk = str(item, ATTR.pk);
        if (instanceId !== undefined && taskId !== undefined && updatedAt !== undefined && pk !== undefined) {
          const candidate: Candidate = { pk, instanceId, taskId, updatedAt };
          const leaseSk = str(item, ATTR.readySk);
          if (this.leased && leaseSk !== undefined) candidate.leaseSk = leaseSk;
          this.buffer.push(candidate);
        }
      }
    }
  }
}

/** One completion of a completeTasks call, with what the call learns about it on the way. */
interface Completing {
  index: number;
  c: ValidCompletion;
  pk: string;
  nonce: string;
  /** Where its output is stored (chunks written before any commit). */
  ref?: ValueRef;
  /** Its claim item as last read. */
  claim?: Item;
  /** What its result item held when last read (the put is conditioned on it). */
  prior?: Prior;
  /** The chunk set of the result it replaces: garbage once it commits. */
  replacing?: { chunkSetId: string; count: number };
}

/** Index order: updatedAt, then instance id in code point (UTF-8 byte) order, as the index sorts. */
const before = (a: Candidate, b: Candidate): boolean =>
  a.updatedAt < b.updatedAt || (a.updatedAt === b.updatedAt && compareIds(a.instanceId, b.instanceId) < 0);

/**
 * Sayiir persistence on one DynamoDB table (single-table design; see the README for the layout).
 * Claims, releases, extensions and fenced writes are conditional writes judged on the client
 * clock, with `clockSkewBudgetMs` of tolerance between clients.
 */
export class DynamoDBBackend extends BaseBackend {
  readonly client: DynamoDBClient;
  readonly tableName: string;
  readonly #ownsClient: boolean;
  readonly #o: NormalizedOptions;
  readonly #layout: Layout;
  readonly #chunks: Chunks;
  readonly #clientConfig: DynamoDBBackendOptions["clientConfig"];

  constructor(options: DynamoDBBackendOptions) {
    super(options);
    this.#o = normalizeOptions(options);
    this.#clientConfig = options.clientConfig;
    this.tableName = this.#o.tableName;
    this.#layout = new Layout(this.#o.keyPrefix, this.#o.shards);
    if (options.client !== undefined) {
      this.client = options.client;
      this.#ownsClient = false;
    } else {
      this.client = new DynamoDBClient({
        maxAttempts: this.#o.maxAttempts,
        requestHandler: {
          requestTimeout: this.#o.requestTimeoutMs,
          // Without this, @smithy/node-http-handler only logs a warning when requestTimeout passes,
          // and a request on a half-open connection waits forever.
          throwOnRequestTimeout: true,
          connectionTimeout: Math.min(5_000, this.#o.requestTimeoutMs),
        },
        ...options.clientConfig,
      });
      this.#ownsClient = true;
    }
    this.#chunks = new Chunks(this.client, this.tableName, this.#layout, this.#o.clock);
  }

  /** Static credentials given in clientConfig: scrubbed from wrapped error messages. */
  protected override secrets(): readonly string[] {
    const credentials = this.#clientConfig?.credentials;
    if (credentials === null || typeof credentials !== "object") return [];
    const { secretAccessKey, sessionToken } = credentials as {
      secretAccessKey?: unknown;
      sessionToken?: unknown;
    };
    return [secretAccessKey, sessionToken].filter((v): v is string => typeof v === "string" && v.length >= 4);
  }

  /** The key layout (exposed for tests and tooling). */
  get layout(): Layout {
    return this.#layout;
  }

  /** Creates the table and its indexes if missing and waits until they are ACTIVE. Idempotent. */
  async migrate(): Promise<void> {
    return this.run("migrate", () => ensureTable(this.client, this.tableName));
  }

  #now(): number {
    return this.#o.clock();
  }

  #send<T>(command: AnyCommand | (() => AnyCommand)): Promise<T> {
    return sendRetrying<T>(this.client, command, this.#o.conflictRetries);
  }

  // ---------------------------------------------------------------- items

  #headKey(pk: string): Key {
    return { [ATTR.pk]: S(pk), [ATTR.sk]: S(HEAD_SK) };
  }

  #parseHead(item: Item | undefined, instanceId: string): Head | undefined {
    if (item === undefined || str(item, ATTR.pk) === undefined) return undefined;
    const iid = str(item, "iid");
    if (iid !== instanceId) {
      throw new BackendError(
        `the head item of ${quote(instanceId)} belongs to another instance id (hash collision?)`,
      );
    }
    return {
      pk: str(item, ATTR.pk) as string,
      instanceId: iid,
      generation: str(item, "gen") ?? "",
      finished: str(item, "st") === "F",
      positionTaskId: str(item, "pos"),
      lastCompletedTaskId: str(item, "last"),
      updatedAt: num(item, "upd") ?? 0,
      definitionHash: str(item, "def") ?? "",
      ready: str(item, ATTR.readyPk) !== undefined,
      leaseSk: str(item, ATTR.readyPk)?.startsWith(`${this.#layout.base}K#`)
        ? str(item, ATTR.readySk)
        : undefined,
      header: readRef(item, "h"),
    };
  }

  async #getHead(instanceId: string): Promise<Head | undefined> {
    const pk = this.#layout.instancePk(instanceId);
    const out = await this.#send<{ Item?: Item }>(
      new GetItemCommand({ TableName: this.tableName, Key: this.#headKey(pk), ConsistentRead: true }),
    );
    return this.#parseHead(out.Item, instanceId);
  }

  #claimKey(pk: string, taskId: string): Key {
    return { [ATTR.pk]: S(pk), [ATTR.sk]: S(this.#layout.claimSk(taskId)) };
  }

  #parseClaim(item: Item | undefined): StoredClaim | undefined {
    const token = num(item, "tok");
    if (item === undefined || token === undefined) return undefined;
    return {
      token,
      workerId: str(item, "w"),
      claimedAt: num(item, "ca"),
      expiresAt: num(item, "exp"),
      nonce: str(item, "nc"),
    };
  }

  async #getClaim(pk: string, taskId: string): Promise<StoredClaim | undefined> {
    const out = await this.#send<{ Item?: Item }>(
      new GetItemCommand({
        TableName: this.tableName,
        Key: this.#claimKey(pk, taskId),
        ConsistentRead: true,
      }),
    );
    return this.#parseClaim(out.Item);
  }

  /** Held, and not yet takeable by others: others wait `expiresAt + skew budget` on their clock. */
  #liveForOthers(claim: StoredClaim | undefined, now: number): boolean {
    return (
      claim !== undefined &&
      claim.workerId !== undefined &&
      (claim.expiresAt === undefined || claim.expiresAt + this.#o.skewMs > now)
    );
  }

  /** Live for its holder: the holder stops trusting its claim at `expiresAt` on its own clock. */
  #liveForHolder(claim: StoredClaim | undefined, now: number): boolean {
    return (
      claim !== undefined &&
      claim.workerId !== undefined &&
      (claim.expiresAt === undefined || claim.expiresAt > now)
    );
  }

  /** The condition a fenced write puts on the claim item (evaluated in the same transaction). */
  #fenceCheck(pk: string, fence: Fence, now: number): TransactWriteItem {
    return {
      ConditionCheck: {
        TableName: this.tableName,
        Key: this.#claimKey(pk, fence.taskId),
        ...expressions(
          {
            ConditionExpression:
              "#tok = :tok AND attribute_exists(#w) AND (attribute_not_exists(#exp) OR #exp > :now)",
          },
          { ":tok": N(fence.token), ":now": N(now) },
        ),
        ReturnValuesOnConditionCheckFailure: "ALL_OLD",
      },
    };
  }

  async #fenceHolds(pk: string, fence: Fence): Promise<boolean> {
    const claim = await this.#getClaim(pk, fence.taskId);
    return this.#liveForHolder(claim, this.#now()) && claim?.token === fence.token;
  }

  #lost(instanceId: string, fence: Fence): ClaimLostError {
    return failures.fenceRejected(instanceId, fence);
  }

  async #queryAll(input: ConstructorParameters<typeof QueryCommand>[0]): Promise<Item[]> {
    const items: Item[] = [];
    let startKey: Record<string, AttributeValue> | undefined;
    do {
      const out = await this.#send<QueryCommandOutput>(
        new QueryCommand({ ...input, ExclusiveStartKey: startKey }),
      );
      items.push(...(out.Items ?? []));
      startKey = out.LastEvaluatedKey;
    } while (startKey !== undefined);
    return items;
  }

  async #resultItems(pk: string, generation: string): Promise<Item[]> {
    return this.#queryAll({
      TableName: this.tableName,
      ConsistentRead: true,
      ...expressions(
        { KeyConditionExpression: "#PK = :pk AND begins_with(#SK, :prefix)" },
        { ":pk": S(pk), ":prefix": S(this.#layout.resultPrefix(generation)) },
      ),
    });
  }

  /** Best effort: deletes the result items of one generation and every chunk set they or a header used. */
  async #dropGeneration(pk: string, generation: string, header: ValueRef | undefined): Promise<void> {
    const items = await this.#resultItems(pk, generation);
    const sets = items.map((item) => chunkSetOf(readRef(item))).filter((s) => s !== undefined);
    const headerSet = chunkSetOf(header);
    if (headerSet) sets.push(headerSet);
    await batchWrite(
      this.client,
      this.tableName,
      items.map((item) => ({
        DeleteRequest: { Key: { [ATTR.pk]: item[ATTR.pk]!, [ATTR.sk]: item[ATTR.sk]! } },
      })),
    );
    await this.#chunks.delete(sets);
  }

  async #quietly(work: () => Promise<void>): Promise<void> {
    try {
      await work();
    } catch {
      // Left for cleanup(): orphans never change what a reader sees.
    }
  }

  // ---------------------------------------------------------------- snapshots

  protected async doSaveSnapshot(snapshot: WorkflowSnapshot, fence: Fence | undefined): Promise<void> {
    const id = snapshot.instanceId;
    const pk = this.#layout.instancePk(id);
    const state = snapshot.state;
    const inProgress = state.kind === "InProgress";
    const generation = freshId();
    const now = this.#now();
    const written: ValueRef[] = [];
    let resultKeys: Key[] = [];
    let committed = false;
    let definite = true;
    try {
      // 1. Everything the new head will point at, under keys nobody reads yet.
      const header = await this.#chunks.write(encodeSnapshotHeader(snapshot), pk);
      written.push(header);
      const results = inProgress ? Object.values(state.completedTasks) : [];
      const resultItems: Item[] = [];
      for (const result of results) {
        const ref = await this.#chunks.write(result.output, pk);
        written.push(ref);
        resultItems.push({
          [ATTR.pk]: S(pk),
          [ATTR.sk]: S(this.#layout.resultSk(generation, result.taskId)),
          tid: S(result.taskId),
          gen: S(generation),
          at: N(now),
          ...refAttributes(ref),
        });
      }
      resultKeys = resultItems.map((item) => ({ [ATTR.pk]: item[ATTR.pk]!, [ATTR.sk]: item[ATTR.sk]! }));
      await batchWrite(
        this.client,
        this.tableName,
        resultItems.map((Item) => ({ PutRequest: { Item } })),
      );

      // 2. The head: its conditional write is the commit point.
      const positionTaskId =
        inProgress && state.position.kind === "AtTask" ? state.position.taskId : undefined;
      const ready =
        positionTaskId !== undefined && inProgress && !Object.hasOwn(state.completedTasks, positionTaskId);
      const shard = this.#layout.shardOf(id);
      const headItem: Item = {
        ...this.#headKey(pk),
        iid: S(id),
        gen: S(generation),
        st: S(inProgress ? "P" : "F"),
        upd: N(snapshot.updatedAt),
        def: S(snapshot.definitionHash),
        [ATTR.listPk]: S(this.#layout.listPk(shard)),
        [ATTR.listSk]: S(hashId(id)),
        ...refAttributes(header, "h"),
      };
      if (positionTaskId !== undefined) headItem.pos = S(positionTaskId);
      if (inProgress && state.lastCompletedTaskId !== null) headItem.last = S(state.lastCompletedTaskId);
      if (ready) {
        headItem[ATTR.readyPk] = S(this.#layout.readyPk(shard));
        headItem[ATTR.readySk] = S(this.#layout.readySk(snapshot.updatedAt, id));
      }

      let previous = await this.#getHead(id);
      for (let attempt = 0; ; attempt++) {
        if (attempt >= RACE_ATTEMPTS)
          throw new BackendError(`saveSnapshot of ${quote(id)} kept losing races`);
        if (fence !== undefined && !(await this.#fenceHolds(pk, fence))) throw this.#lost(id, fence);
        if (previous?.finished && inProgress) {
          throw failures.cannotReopen(id);
        }
        const condition = expressions(
          {
            ConditionExpression:
              previous === undefined ? "attribute_not_exists(#PK)" : "attribute_exists(#PK) AND #gen = :gen",
          },
          previous === undefined ? {} : { ":gen": S(previous.generation) },
        );
        try {
          definite = false;
          if (fence === undefined) {
            await this.#send(
              new PutItemCommand({
                TableName: this.tableName,
                Item: headItem,
                ...condition,
                ReturnValuesOnConditionCheckFailure: "ALL_OLD",
              }),
            );
          } else {
            const check = this.#fenceCheck(pk, fence, this.#now());
            await this.#send(
              () =>
                new TransactWriteItemsCommand({
                  ClientRequestToken: freshId(),
                  TransactItems: [
                    check,
                    {
                      Put: {
                        TableName: this.tableName,
                        Item: headItem,
                        ...condition,
                        ReturnValuesOnConditionCheckFailure: "ALL_OLD",
                      },
                    },
                  ],
                }),
            );
          }
          committed = true;
          break;
        } catch (error) {
          let current: Item | undefined;
          if (isConditionFailed(error)) {
            current = error.Item;
          } else {
            const reasons = cancellationReasons(error);
            if (reasons === undefined) throw error;
            // Conflicts that outlasted the retries: the transaction did not apply.
            definite = true;
            if (isConflictOnly(error)) throw error;
            if (reasons[0]?.Code === "ConditionalCheckFailed") {
              throw this.#lost(id, fence as Fence);
            }
            if (reasons[1]?.Code === "ConditionalCheckFailed") current = reasons[1].Item;
            else if (reasons.some((r) => r.Code === "TransactionConflict")) {
              await backoff(attempt);
              current = (
                await this.#send<{ Item?: Item }>(
                  new GetItemCommand({
                    TableName: this.tableName,
                    Key: this.#headKey(pk),
                    ConsistentRead: true,
                  }),
                )
              ).Item;
            } else throw error;
          }
          definite = true;
          const head = this.#parseHead(current, id);
          // An SDK retry of a write that did land: the head already carries our generation.
          if (head?.generation === generation) {
            committed = true;
            break;
          }
          previous = head;
        }
      }

      // 3. The replaced generation is garbage now (nobody can make it current again).
      if (previous !== undefined) {
        const old = previous;
        await this.#quietly(() => this.#dropGeneration(pk, old.generation, old.header));
      }
    } catch (error) {
      if (!committed && definite) {
        await this.#quietly(async () => {
          await batchWrite(
            this.client,
            this.tableName,
            resultKeys.map((Key) => ({ DeleteRequest: { Key } })),
          );
          await this.#chunks.delete(written.map(chunkSetOf).filter((s) => s !== undefined));
        });
      }
      throw error;
    }
  }

  protected async doSaveTaskResult(
    instanceId: string,
    taskId: string,
    output: Uint8Array,
    fence: Fence | undefined,
  ): Promise<void> {
    const pk = this.#layout.instancePk(instanceId);
    let head = await this.#getHead(instanceId);
    if (head === undefined) throw failures.snapshotNotFound(instanceId);
    const ref = await this.#chunks.write(output, pk);
    const ours = chunkSetOf(ref);
    let done = false;
    // False while a transaction whose outcome we cannot know is the last one sent.
    let definite = true;
    let sentGeneration = head.generation;
    try {
      for (let attempt = 0; ; attempt++) {
        if (head === undefined) throw failures.snapshotNotFound(instanceId);
        if (attempt >= RACE_ATTEMPTS)
          throw new BackendError(`saveTaskResult on ${quote(instanceId)} kept losing races`);
        if (head.finished) {
          if (fence !== undefined && !(await this.#fenceHolds(pk, fence)))
            throw this.#lost(instanceId, fence);
          throw failures.resultsFinal(instanceId);
        }
        const now = this.#now();
        const updatedAt = Math.max(head.updatedAt, now);
        const values: Record<string, AttributeValue> = {
          ":gen": S(head.generation),
          ":P": S("P"),
          ":upd": N(updatedAt),
          ":last": S(taskId),
        };
        let update = "SET #last = :last, #upd = :upd";
        if (head.ready && head.positionTaskId === taskId)
          update += ` REMOVE #${ATTR.readyPk}, #${ATTR.readySk}`;
        else if (head.ready) {
          // (Back) into the ready partition: a lease key would not carry the new updatedAt.
          update += `, #${ATTR.readyPk} = :gpk, #${ATTR.readySk} = :gsk`;
          values[":gpk"] = S(this.#layout.readyPk(this.#layout.shardOf(instanceId)));
          values[":gsk"] = S(this.#layout.readySk(updatedAt, instanceId));
        }
        const condition =
          "attribute_exists(#PK) AND #gen = :gen AND #st = :P AND #upd <= :upd AND " +
          (head.ready ? `attribute_exists(#${ATTR.readyPk})` : `attribute_not_exists(#${ATTR.readyPk})`);
        const items: TransactWriteItem[] = [
          {
            Update: {
              TableName: this.tableName,
              Key: this.#headKey(pk),
              ...expressions({ UpdateExpression: update, ConditionExpression: condition }, values),
              ReturnValuesOnConditionCheckFailure: "ALL_OLD",
            },
          },
          {
            Put: {
              TableName: this.tableName,
              Item: {
                [ATTR.pk]: S(pk),
                [ATTR.sk]: S(this.#layout.resultSk(head.generation, taskId)),
                tid: S(taskId),
                gen: S(head.generation),
                at: N(now),
                ...refAttributes(ref),
              },
            },
          },
        ];
        if (fence !== undefined) items.push(this.#fenceCheck(pk, fence, now));
        // The result item may replace an earlier output of the same task: find its chunks first.
        // (Never our own set: an earlier attempt of this call may have landed after all.)
        const replaced = (await this.#replacedChunks(pk, head, taskId)).filter(
          (set) => set.chunkSetId !== ours?.chunkSetId,
        );
        try {
          sentGeneration = head.generation;
          definite = false;
          await this.#send(
            () => new TransactWriteItemsCommand({ ClientRequestToken: freshId(), TransactItems: items }),
          );
          done = true;
          await this.#quietly(() => this.#chunks.delete(replaced));
          return;
        } catch (error) {
          const reasons = cancellationReasons(error);
          // Cancelled (conflicts included): the transaction surely did not apply.
          if (reasons !== undefined) definite = true;
          if (reasons === undefined || isConflictOnly(error)) throw error;
          const headReason = reasons[0];
          if (headReason?.Code === "ConditionalCheckFailed") {
            head = this.#parseHead(headReason.Item, instanceId);
            if (head === undefined) throw failures.snapshotNotFound(instanceId);
          }
          if (fence !== undefined && reasons[2]?.Code === "ConditionalCheckFailed")
            throw this.#lost(instanceId, fence);
          if (headReason?.Code !== "ConditionalCheckFailed") {
            if (!reasons.some((r) => r.Code === "TransactionConflict")) throw error;
            await backoff(attempt);
            head = await this.#getHead(instanceId);
          }
        }
      }
    } finally {
      if (!done && ours !== undefined) {
        await this.#quietly(async () => {
          // Outcome unknown (a lost response, a timeout): the result may have committed and point
          // at our chunks. Delete them only if the stored result does not; else cleanup() will.
          if (!definite) {
            const out = await this.#send<{ Item?: Item }>(
              new GetItemCommand({
                TableName: this.tableName,
                Key: { [ATTR.pk]: S(pk), [ATTR.sk]: S(this.#layout.resultSk(sentGeneration, taskId)) },
                ConsistentRead: true,
              }),
            );
            if (out.Item !== undefined && chunkSetOf(readRef(out.Item))?.chunkSetId === ours.chunkSetId)
              return;
          }
          await this.#chunks.delete([ours]);
        });
      }
    }
  }

  /**
   * completeTasks: the chunks of large outputs are written while ONE BatchGetItem reads every head
   * and claim item concerned; then each instance commits its completions in one TransactWriteItems
   * (or a few, under the 100-item / 4 MB limits): the head's update once, and per completion its
   * result put and its claim's tombstone, conditioned as saveTaskResult's fence is. Instances run
   * in parallel (bounded). Completions are judged on the items read, in saveTaskResult's order, so
   * a refused one is not sent at all; a cancelled transaction is judged again on a fresh read.
   */
  protected override async doCompleteTasks(
    completions: readonly ValidCompletion[],
  ): Promise<CompletionOutcome[]> {
    const outcomes: CompletionOutcome[] = completions.map(() => null);
    const groups = new Map<string, Completing[]>();
    for (const [index, c] of completions.entries()) {
      const item: Completing = { index, c, pk: this.#layout.instancePk(c.instanceId), nonce: freshId() };
      const group = groups.get(c.instanceId);
      if (group === undefined) groups.set(c.instanceId, [item]);
      else group.push(item);
    }
    const all = [...groups.values()].flat();
    // Chunk sets a result may point at (landed, or sent with an unknown outcome): never collected here.
    const kept = new Set<Completing>();
    const replaced: Array<{ chunkSetId: string; count: number }> = [];
    try {
      const [read, wrote] = await Promise.allSettled([
        this.#readForCompletion(all),
        settleAll(all, CHUNK_LANES, async (item) => {
          item.ref = await this.#chunks.write(item.c.output, item.pk);
        }),
      ]);
      if (wrote.status === "rejected") throw wrote.reason;
      if (read.status === "rejected") throw read.reason;
      const items = read.value;
      await settleAll([...groups], COMPLETION_LANES, async ([instanceId, group]) => {
        const pk = (group[0] as Completing).pk;
        const head = this.#parseHead(items.get(this.#itemKey(this.#headKey(pk))), instanceId);
        for (const item of group) item.claim = items.get(this.#itemKey(this.#claimKey(pk, item.c.taskId)));
        await this.#completeOn(instanceId, head, group, kept, replaced, outcomes);
      });
      return outcomes;
    } finally {
      const ours = new Set(all.map((item) => chunkSetOf(item.ref)?.chunkSetId));
      const garbage = [
        ...all.filter((item) => !kept.has(item)).map((item) => chunkSetOf(item.ref)),
        ...replaced.filter((set) => !ours.has(set.chunkSetId)),
      ].filter((set) => set !== undefined);
      if (garbage.length > 0) await this.#quietly(() => this.#chunks.delete(garbage));
    }
  }

  #itemKey(key: Key): string {
    return `${key[ATTR.pk]?.S}\u0000${key[ATTR.sk]?.S}`;
  }

  /** Strongly consistent reads of the heads and claim items (and, given a generation, result items). */
  async #readForCompletion(
    items: readonly Completing[],
    generations?: ReadonlyMap<string, string>,
  ): Promise<Map<string, Item>> {
    const keys = new Map<string, Key>();
    for (const item of items) {
      for (const key of [this.#headKey(item.pk), this.#claimKey(item.pk, item.c.taskId)])
        keys.set(this.#itemKey(key), key);
      const generation = generations?.get(item.pk);
      if (generation !== undefined) {
        const key = { [ATTR.pk]: S(item.pk), [ATTR.sk]: S(this.#layout.resultSk(generation, item.c.taskId)) };
        keys.set(this.#itemKey(key), key);
      }
    }
    const found = await batchGet(this.client, this.tableName, [...keys.values()], 100, 4);
    return new Map(found.map((item) => [this.#itemKey(item), item]));
  }

  /**
   * The completions of one instance. Each round judges the open ones on what was read (no head:
   * NotFound; the claim not held with that token, or expired on our clock: ClaimLost; finished:
   * Conflict) and sends the others, a transaction at a time. A cancelled transaction applied
   * nothing: the head, the claims and the result items are read again and the round repeats. A
   * completion whose claim is found tombstoned with its own nonce was committed by an earlier
   * send whose response never arrived (the adapter resends on a transaction conflict).
   */
  async #completeOn(
    instanceId: string,
    first: Head | undefined,
    group: Completing[],
    kept: Set<Completing>,
    replaced: Array<{ chunkSetId: string; count: number }>,
    outcomes: CompletionOutcome[],
  ): Promise<void> {
    let head = first;
    let open = group;
    const landed = (items: readonly Completing[]): void => {
      for (const item of items) {
        kept.add(item);
        outcomes[item.index] = null;
        if (item.replacing !== undefined) replaced.push(item.replacing);
      }
      const done = new Set(items);
      open = open.filter((item) => !done.has(item));
    };
    for (let attempt = 0; open.length > 0; ) {
      const now = this.#now();
      const ready: Completing[] = [];
      for (const item of open) {
        const claim = this.#parseClaim(item.claim);
        let outcome: CompletionOutcome = null;
        if (head === undefined) outcome = failures.snapshotNotFound(instanceId);
        else if (!this.#liveForHolder(claim, now) || claim?.token !== item.c.token)
          outcome = this.#lost(instanceId, item.c);
        else if (head.finished) outcome = failures.resultsFinal(instanceId);
        if (outcome === null) ready.push(item);
        else outcomes[item.index] = outcome;
      }
      open = ready;
      const batch = cut(open, (item) => inlineBytes(item.ref as ValueRef))[0];
      if (head === undefined || batch === undefined) return;
      if (attempt >= RACE_ATTEMPTS)
        throw new BackendError(`completeTasks on ${quote(instanceId)} kept losing races`);
      const entries = batch.map(
        (item): Entry => ({
          taskId: item.c.taskId,
          token: item.c.token,
          nonce: item.nonce,
          ref: item.ref as ValueRef,
          prior: item.prior ?? { kind: "none" },
        }),
      );
      const tx = completionTransaction({
        tableName: this.tableName,
        layout: this.#layout,
        head,
        entries,
        now,
        tombstoneTtl: Math.floor(now / 1000) + TOMBSTONE_SECONDS,
      });
      for (const item of batch) kept.add(item);
      try {
        await this.#send(
          () => new TransactWriteItemsCommand({ ClientRequestToken: freshId(), TransactItems: tx.items }),
        );
      } catch (error) {
        const reasons = cancellationReasons(error);
        // No cancellation: the outcome is unknown, the chunks stay (cleanup() collects orphans).
        if (reasons === undefined) throw error;
        for (const item of batch) kept.delete(item);
        if (isConflictOnly(error)) throw error;
        if (!reasons.some((r) => r.Code === "ConditionalCheckFailed" || r.Code === "TransactionConflict"))
          throw error;
        if (reasons.some((r) => r.Code === "TransactionConflict")) await backoff(attempt);
        attempt++;
        const again = await this.#rereadForCompletion(instanceId, head, open);
        head = again.head;
        landed(again.landed);
        continue;
      }
      landed(batch);
      head = {
        ...head,
        ...tx.after,
        leaseSk: undefined,
        lastCompletedTaskId: batch[batch.length - 1]?.c.taskId,
      };
    }
  }

  /**
   * After a cancelled transaction: reads the head, the open completions' claim items and their
   * result items (under the generation sent) again. A claim tombstoned with a completion's own
   * nonce means that completion committed unseen: it has landed.
   */
  async #rereadForCompletion(
    instanceId: string,
    sent: Head,
    open: readonly Completing[],
  ): Promise<{ head: Head | undefined; landed: Completing[] }> {
    const items = await this.#readForCompletion(open, new Map([[sent.pk, sent.generation]]));
    const head = this.#parseHead(items.get(this.#itemKey(this.#headKey(sent.pk))), instanceId);
    const landed: Completing[] = [];
    for (const item of open) {
      item.claim = items.get(this.#itemKey(this.#claimKey(item.pk, item.c.taskId)));
      const claim = this.#parseClaim(item.claim);
      if (
        claim?.token === item.c.token &&
        claim.workerId === undefined &&
        str(item.claim, "cn") === item.nonce
      ) {
        landed.push(item);
        continue;
      }
      const result = items.get(
        this.#itemKey({
          [ATTR.pk]: S(item.pk),
          [ATTR.sk]: S(this.#layout.resultSk(sent.generation, item.c.taskId)),
        }),
      );
      const ref = result === undefined || head?.generation !== sent.generation ? undefined : readRef(result);
      item.prior = priorOf(ref);
      item.replacing = chunkSetOf(ref);
    }
    return { head, landed };
  }

  async #replacedChunks(
    pk: string,
    head: Head,
    taskId: string,
  ): Promise<Array<{ chunkSetId: string; count: number }>> {
    const out = await this.#send<{ Item?: Item }>(
      new GetItemCommand({
        TableName: this.tableName,
        Key: { [ATTR.pk]: S(pk), [ATTR.sk]: S(this.#layout.resultSk(head.generation, taskId)) },
        ConsistentRead: true,
        ...expressions({ ProjectionExpression: "#c, #n, #l" }),
      }),
    );
    const set = out.Item === undefined ? undefined : chunkSetOf(readRef(out.Item));
    return set ? [set] : [];
  }

  protected async doLoadSnapshot(instanceId: string): Promise<WorkflowSnapshot> {
    for (let attempt = 0; ; attempt++) {
      const head = await this.#getHead(instanceId);
      if (head === undefined) throw failures.snapshotNotFound(instanceId);
      try {
        const header = head.header === undefined ? EMPTY_BYTES : await this.#chunks.read(head.header);
        let results: TaskResult[] = [];
        let racy = head.header !== undefined && "chunkSetId" in head.header;
        if (!head.finished) {
          const items = await this.#resultItems(head.pk, head.generation);
          racy ||= items.length > 0;
          results = await Promise.all(
            items.map(async (item) => {
              const ref = readRef(item);
              const output = ref === undefined ? EMPTY_BYTES : await this.#chunks.read(ref);
              return { taskId: str(item, "tid") ?? "", output };
            }),
          );
        }
        // The generation read is still current: nothing of it can have been deleted under us.
        if (
          racy &&
          attempt < RACE_ATTEMPTS &&
          (await this.#getHead(instanceId))?.generation !== head.generation
        )
          continue;
        return decodeSnapshotHeader(header, instanceId, {
          results,
          lastCompletedTaskId: head.lastCompletedTaskId ?? null,
          updatedAt: head.updatedAt,
        });
      } catch (error) {
        if (error instanceof MissingChunkError && attempt < RACE_ATTEMPTS) continue;
        throw error;
      }
    }
  }

  /** Every claim item (live or tombstone) of an instance: key, token, and whether it is held. */
  async #claimItems(pk: string): Promise<Array<{ key: Key; token: number; held: boolean }>> {
    const items = await this.#queryAll({
      TableName: this.tableName,
      ConsistentRead: true,
      ...expressions(
        {
          KeyConditionExpression: "#PK = :pk AND begins_with(#SK, :prefix)",
          ProjectionExpression: "#PK, #SK, #tok, #w",
        },
        { ":pk": S(pk), ":prefix": S("L#") },
      ),
    });
    const out: Array<{ key: Key; token: number; held: boolean }> = [];
    for (const item of items) {
      const token = num(item, "tok");
      if (token === undefined) continue;
      out.push({
        key: { [ATTR.pk]: item[ATTR.pk]!, [ATTR.sk]: item[ATTR.sk]! },
        token,
        held: str(item, "w") !== undefined,
      });
    }
    return out;
  }

  /** Turns a claim into a tombstone (it keeps its token), if it still holds `token`. */
  #tombstone(key: Key, token: number): UpdateItemCommand {
    return new UpdateItemCommand({
      TableName: this.tableName,
      Key: key,
      ...expressions(
        {
          UpdateExpression: `REMOVE #w, #ca, #exp, #nc SET #${TTL_ATTRIBUTE} = :ttl`,
          ConditionExpression: "#tok = :tok",
        },
        { ":tok": N(token), ":ttl": N(Math.floor(this.#now() / 1000) + TOMBSTONE_SECONDS) },
      ),
    });
  }

  /** Best effort: tombstones the given claims that still hold the token read. */
  async #tombstoneAll(claims: Array<{ key: Key; token: number; held: boolean }>): Promise<void> {
    await Promise.all(
      claims
        .filter((c) => c.held)
        .map((c) =>
          this.#send(this.#tombstone(c.key, c.token)).catch((error: unknown) => {
            if (!isConditionFailed(error)) throw error;
          }),
        ),
    );
  }

  #deleteMarkerKey(pk: string): Key {
    return { [ATTR.pk]: S(pk), [ATTR.sk]: S(DELETE_MARKER_SK) };
  }

  async #markedBy(pk: string, op: string): Promise<boolean> {
    const out = await this.#send<{ Item?: Item }>(
      new GetItemCommand({ TableName: this.tableName, Key: this.#deleteMarkerKey(pk), ConsistentRead: true }),
    );
    return str(out.Item, "op") === op;
  }

  /**
   * Deletes the head and tombstones every claim in ONE transaction, conditioned on the head's
   * generation and on each claim still holding the token read (a claim taken meanwhile makes it
   * retry), so a failure can never leave the head gone and a pre-delete claim live. With more
   * claims than fit a transaction, the claims are tombstoned first and the head deleted after
   * (a failure in between leaves the instance with its claims released, never the reverse).
   */
  protected async doDeleteSnapshot(instanceId: string): Promise<void> {
    const pk = this.#layout.instancePk(instanceId);
    const op = freshId();
    let head = await this.#getHead(instanceId);
    let seen: Array<{ key: Key; token: number; held: boolean }> = [];
    let target: Head | undefined;
    for (let attempt = 0; ; attempt++) {
      if (head === undefined) {
        // Deleted by a concurrent call (or by an attempt of ours: see below): either way, no claim
        // read while the head existed stays live.
        await this.#tombstoneAll(seen);
        throw failures.snapshotNotFound(instanceId);
      }
      if (attempt >= RACE_ATTEMPTS)
        throw new BackendError(`deleteSnapshot of ${quote(instanceId)} kept losing races`);
      target = head;
      const claims = await this.#claimItems(pk);
      seen = claims;
      const headDelete = {
        TableName: this.tableName,
        Key: this.#headKey(pk),
        ...expressions({ ConditionExpression: "#gen = :gen" }, { ":gen": S(head.generation) }),
        ReturnValuesOnConditionCheckFailure: "ALL_OLD" as const,
      };
      if (claims.length > MAX_TRANSACTION_ITEMS - 2) {
        await this.#tombstoneAll(claims);
        try {
          await this.#send(new DeleteItemCommand(headDelete));
          break;
        } catch (error) {
          if (!isConditionFailed(error)) throw error;
          head = this.#parseHead(error.Item, instanceId);
          if (head === undefined) throw failures.snapshotNotFound(instanceId);
          continue;
        }
      }
      const ttl = N(Math.floor(this.#now() / 1000) + TOMBSTONE_SECONDS);
      const items: TransactWriteItem[] = [
        { Delete: headDelete },
        {
          Put: {
            TableName: this.tableName,
            Item: { ...this.#deleteMarkerKey(pk), op: S(op), at: N(this.#now()), [TTL_ATTRIBUTE]: ttl },
          },
        },
        ...claims.map((c): TransactWriteItem => {
          const condition = { ConditionExpression: "#tok = :tok" };
          return c.held
            ? {
                Update: {
                  TableName: this.tableName,
                  Key: c.key,
                  ...expressions(
                    {
                      ...condition,
                      UpdateExpression: `REMOVE #w, #ca, #exp, #nc SET #${TTL_ATTRIBUTE} = :ttl`,
                    },
                    { ":tok": N(c.token), ":ttl": ttl },
                  ),
                },
              }
            : {
                ConditionCheck: {
                  TableName: this.tableName,
                  Key: c.key,
                  ...expressions(condition, { ":tok": N(c.token) }),
                },
              };
        }),
      ];
      try {
        await this.#send(
          () => new TransactWriteItemsCommand({ ClientRequestToken: freshId(), TransactItems: items }),
        );
        break;
      } catch (error) {
        const reasons = cancellationReasons(error);
        if (reasons === undefined || isConflictOnly(error)) throw error;
        if (reasons[0]?.Code === "ConditionalCheckFailed") {
          // An SDK retry of our transaction that did land (its response was lost) finds the head
          // gone, or already re-created by someone else: our marker says it committed.
          if (await this.#markedBy(pk, op)) break;
          head = this.#parseHead(reasons[0].Item, instanceId);
        } else if (
          reasons.some((r) => r.Code === "ConditionalCheckFailed" || r.Code === "TransactionConflict")
        ) {
          // A claim was taken, released or renewed meanwhile: read them again.
          await backoff(attempt);
        } else throw error;
      }
    }
    // Committed. Its results and chunks are garbage, and the marker has served (else: TTL, cleanup()).
    const deleted = target as Head;
    await this.#quietly(async () => {
      await this.#send(
        new DeleteItemCommand({
          TableName: this.tableName,
          Key: this.#deleteMarkerKey(pk),
          ...expressions({ ConditionExpression: "#op = :op" }, { ":op": S(op) }),
        }),
      );
    });
    await this.#quietly(() => this.#dropGeneration(pk, deleted.generation, deleted.header));
  }

  protected async doListSnapshotsPage(cursor: string | null, limit: number): Promise<SnapshotPage> {
    let shard = 0;
    let startKey: Record<string, AttributeValue> | undefined;
    if (cursor !== null) {
      const decoded = this.#layout.decodeCursor(cursor);
      if (decoded === undefined)
        throw new ValidationError("cursor must be a string returned by listSnapshotsPage");
      shard = decoded.shard;
      startKey = {
        [ATTR.pk]: S(`${this.#layout.base}I#${decoded.lastHash}`),
        [ATTR.sk]: S(HEAD_SK),
        [ATTR.listPk]: S(this.#layout.listPk(shard)),
        [ATTR.listSk]: S(decoded.lastHash),
      };
    }
    const instanceIds: string[] = [];
    let last: { shard: number; hash: string } | undefined;
    while (shard < this.#o.shards && instanceIds.length < limit) {
      const out = await this.#send<QueryCommandOutput>(
        new QueryCommand({
          TableName: this.tableName,
          IndexName: LIST_INDEX,
          Limit: limit - instanceIds.length,
          ExclusiveStartKey: startKey,
          ...expressions(
            { KeyConditionExpression: "#LPK = :lpk" },
            { ":lpk": S(this.#layout.listPk(shard)) },
          ),
        }),
      );
      for (const item of out.Items ?? []) {
        const id = str(item, "iid");
        const hash = str(item, ATTR.listSk);
        if (id === undefined || hash === undefined) continue;
        instanceIds.push(id);
        last = { shard, hash };
      }
      startKey = out.LastEvaluatedKey;
      if (startKey === undefined) shard++;
    }
    const more = instanceIds.length >= limit && shard < this.#o.shards && last !== undefined;
    return {
      instanceIds,
      nextCursor: more && last ? this.#layout.encodeCursor(last.shard, last.hash) : null,
    };
  }

  // ---------------------------------------------------------------- claims

  #toClaim(instanceId: string, taskId: string, workerId: string, claim: StoredClaim): TaskClaim {
    return {
      instanceId,
      taskId,
      workerId,
      claimedAt: claim.claimedAt ?? 0,
      expiresAt: claim.expiresAt ?? null,
      token: claim.token,
    };
  }

  /**
   * Claims (instance, task) with a conditional write on the claim item. With `ready`, the head must
   * still show this exact ready state in the same transaction (claim-next).
   */
  async #tryClaim(
    instanceId: string,
    taskId: string,
    workerId: string,
    ttlMs: number | null,
    ready?: Head,
  ): Promise<TaskClaim | null> {
    const pk = this.#layout.instancePk(instanceId);
    let current = await this.#getClaim(pk, taskId);
    for (let attempt = 0; attempt < RACE_ATTEMPTS; attempt++) {
      const now = this.#now();
      if (this.#liveForOthers(current, now)) return null;
      const claim: StoredClaim = {
        token: Math.max((current?.token ?? 0) + 1, now * 1000),
        workerId,
        claimedAt: now,
        expiresAt: ttlMs === null ? undefined : now + ttlMs,
        nonce: freshId(),
      };
      const item: Item = {
        ...this.#claimKey(pk, taskId),
        iid: S(instanceId),
        tid: S(taskId),
        tok: N(claim.token),
        w: S(workerId),
        ca: N(now),
        nc: S(claim.nonce as string),
      };
      if (claim.expiresAt !== undefined) item.exp = N(claim.expiresAt);
      const condition = expressions(
        {
          ConditionExpression:
            current === undefined
              ? "attribute_not_exists(#PK)"
              : "#tok = :old AND (attribute_not_exists(#w) OR #exp <= :cut)",
        },
        current === undefined ? {} : { ":old": N(current.token), ":cut": N(now - this.#o.skewMs) },
      );
      try {
        if (ready === undefined) {
          await this.#send(
            new PutItemCommand({
              TableName: this.tableName,
              Item: item,
              ...condition,
              ReturnValuesOnConditionCheckFailure: "ALL_OLD",
            }),
          );
        } else {
          const headCondition =
            `attribute_exists(#${ATTR.readyPk}) AND #gen = :gen AND #pos = :pos AND ` +
            (ready.lastCompletedTaskId === undefined ? "attribute_not_exists(#last)" : "#last = :last");
          await this.#send(
            () =>
              new TransactWriteItemsCommand({
                ClientRequestToken: freshId(),
                TransactItems: [
                  {
                    // The head moves to the leased partition: discovery no longer reads past it.
                    Update: {
                      TableName: this.tableName,
                      Key: this.#headKey(pk),
                      ...expressions(
                        {
                          ConditionExpression: headCondition,
                          UpdateExpression: `SET #${ATTR.readyPk} = :kpk, #${ATTR.readySk} = :ksk`,
                        },
                        {
                          ":gen": S(ready.generation),
                          ":pos": S(taskId),
                          ":last": S(ready.lastCompletedTaskId ?? ""),
                          ":kpk": S(this.#layout.leasedPk(this.#layout.shardOf(instanceId))),
                          ":ksk": S(
                            this.#layout.leaseSk(
                              claim.expiresAt === undefined ? undefined : claim.expiresAt + this.#o.skewMs,
                              instanceId,
                            ),
                          ),
                        },
                      ),
                    },
                  },
                  {
                    Put: {
                      TableName: this.tableName,
                      Item: item,
                      ...condition,
                      ReturnValuesOnConditionCheckFailure: "ALL_OLD",
                    },
                  },
                ],
              }),
          );
        }
        return this.#toClaim(instanceId, taskId, workerId, claim);
      } catch (error) {
        if (isConditionFailed(error)) {
          current = this.#parseClaim(error.Item);
        } else {
          const reasons = cancellationReasons(error);
          if (reasons === undefined || isConflictOnly(error)) throw error;
          // The task is no longer in the state the caller saw: not ready, nothing to claim.
          if (reasons[0]?.Code === "ConditionalCheckFailed") return null;
          if (reasons[1]?.Code === "ConditionalCheckFailed") current = this.#parseClaim(reasons[1].Item);
          else if (reasons.some((r) => r.Code === "TransactionConflict")) {
            await backoff(attempt);
            current = await this.#getClaim(pk, taskId);
          } else throw error;
        }
        // An SDK retry of a put that did land (the nonce: two callers can compute the same token).
        if (current?.token === claim.token && current.nonce === claim.nonce) {
          return this.#toClaim(instanceId, taskId, workerId, claim);
        }
      }
    }
    return null;
  }

  protected async doClaimTask(
    instanceId: string,
    taskId: string,
    workerId: string,
    ttlMs: number | null,
  ): Promise<TaskClaim | null> {
    return this.#tryClaim(instanceId, taskId, workerId, ttlMs);
  }

  #ownedClaim(
    claim: StoredClaim | undefined,
    instanceId: string,
    taskId: string,
    workerId: string,
  ): StoredClaim {
    // A tombstone (a released claim kept for its token) has no worker: no claim.
    assertClaimHolder(instanceId, taskId, claim?.workerId, workerId);
    return claim as StoredClaim;
  }

  protected async doReleaseTaskClaim(instanceId: string, taskId: string, workerId: string): Promise<void> {
    const pk = this.#layout.instancePk(instanceId);
    let current = await this.#getClaim(pk, taskId);
    this.#ownedClaim(current, instanceId, taskId, workerId);
    // First out of the leased partition (if claim-next put the head there), then the tombstone:
    // a failure in between leaves a claimed task in the ready partition (harmless), never an
    // unclaimed one hidden in the leased partition.
    const head = await this.#getHead(instanceId).catch((error: unknown) => {
      if (error instanceof BackendError) return undefined; // another instance's head (hash collision)
      throw error;
    });
    if (head?.leaseSk !== undefined && head.positionTaskId === taskId) {
      await this.#moveLease(head, {
        pk: this.#layout.readyPk(this.#layout.shardOf(instanceId)),
        sk: this.#layout.readySk(head.updatedAt, instanceId),
      });
    }
    for (let attempt = 0; attempt < RACE_ATTEMPTS; attempt++) {
      const claim = this.#ownedClaim(current, instanceId, taskId, workerId);
      try {
        // A tombstone, not a delete: it keeps the last token so the next claim's is larger.
        await this.#send(
          new UpdateItemCommand({
            TableName: this.tableName,
            Key: this.#claimKey(pk, taskId),
            ...expressions(
              {
                UpdateExpression: `REMOVE #w, #ca, #exp, #nc SET #${TTL_ATTRIBUTE} = :ttl`,
                ConditionExpression: "#tok = :tok AND #w = :w",
              },
              {
                ":tok": N(claim.token),
                ":w": S(workerId),
                ":ttl": N(Math.floor(this.#now() / 1000) + TOMBSTONE_SECONDS),
              },
            ),
            ReturnValuesOnConditionCheckFailure: "ALL_OLD",
          }),
        );
        return;
      } catch (error) {
        if (!isConditionFailed(error)) throw error;
        current = this.#parseClaim(error.Item);
        // An SDK retry of an update that did land: the tombstone of our own token.
        if (current?.token === claim.token && current.workerId === undefined) return;
      }
    }
    throw new BackendError(`releaseTaskClaim on ${quote(instanceId)} kept losing races`);
  }

  protected async doExtendTaskClaim(
    instanceId: string,
    taskId: string,
    workerId: string,
    durationMs: number,
  ): Promise<TaskClaim> {
    const pk = this.#layout.instancePk(instanceId);
    let current = await this.#getClaim(pk, taskId);
    for (let attempt = 0; attempt < RACE_ATTEMPTS; attempt++) {
      const claim = this.#ownedClaim(current, instanceId, taskId, workerId);
      const now = this.#now();
      if (!this.#liveForHolder(claim, now)) {
        throw failures.claimExpired(instanceId, taskId);
      }
      if (claim.expiresAt === undefined) return this.#toClaim(instanceId, taskId, workerId, claim);
      const expiresAt = now + durationMs;
      try {
        await this.#send(
          new UpdateItemCommand({
            TableName: this.tableName,
            Key: this.#claimKey(pk, taskId),
            ...expressions(
              {
                UpdateExpression: "SET #exp = :exp",
                ConditionExpression: "#tok = :tok AND #w = :w AND #exp > :now",
              },
              { ":exp": N(expiresAt), ":tok": N(claim.token), ":w": S(workerId), ":now": N(now) },
            ),
            ReturnValuesOnConditionCheckFailure: "ALL_OLD",
          }),
        );
        return this.#toClaim(instanceId, taskId, workerId, { ...claim, expiresAt });
      } catch (error) {
        if (!isConditionFailed(error)) throw error;
        current = this.#parseClaim(error.Item);
      }
    }
    throw new BackendError(`extendTaskClaim on ${quote(instanceId)} kept losing races`);
  }

  // ---------------------------------------------------------------- discovery

  /** Ready-index candidates of every shard, merged into (updatedAt, instance id) order. */
  async *#candidates(pageSize: number): AsyncGenerator<Candidate, void, undefined> {
    const cursors = Array.from(
      { length: this.#o.shards },
      (_, shard) =>
        new ShardCursor((startKey) =>
          this.#send<QueryCommandOutput>(
            new QueryCommand({
              TableName: this.tableName,
              IndexName: READY_INDEX,
              Limit: pageSize,
              ExclusiveStartKey: startKey,
              ...expressions(
                { KeyConditionExpression: "#GPK = :gpk" },
                { ":gpk": S(this.#layout.readyPk(shard)) },
              ),
            }),
          ),
        ),
    );
    // Leases that have ended (expiresAt + skew budget passed on our clock) are ready again: all of
    // them, in (updatedAt, instance id) order, merged with the ready partitions.
    const cut = this.#layout.leaseSk(this.#now() + 1, "");
    cursors.push(
      new ShardCursor(async () => {
        const lists = await Promise.all(
          Array.from({ length: this.#o.shards }, (_, shard) =>
            this.#queryAll({
              TableName: this.tableName,
              IndexName: READY_INDEX,
              ...expressions(
                { KeyConditionExpression: "#GPK = :kpk AND #GSK < :cut" },
                { ":kpk": S(this.#layout.leasedPk(shard)), ":cut": S(cut) },
              ),
            }),
          ),
        );
        const items = lists.flat();
        const key = (item: Item) => ({
          updatedAt: num(item, "upd") ?? 0,
          instanceId: str(item, "iid") ?? "",
        });
        items.sort((a, b) => {
          const x = key(a);
          const y = key(b);
          return x.updatedAt - y.updatedAt || compareIds(x.instanceId, y.instanceId);
        });
        return { Items: items };
      }, true),
    );
    for (;;) {
      await Promise.all(cursors.map((c) => c.fill()));
      let best: ShardCursor | undefined;
      for (const c of cursors) {
        const head = c.buffer[0];
        if (head !== undefined && (best === undefined || before(head, best.buffer[0] as Candidate))) best = c;
      }
      if (best === undefined) return;
      yield best.buffer.shift() as Candidate;
    }
  }

  /**
   * Ready tasks in index order, verified on the base table (the index is eventually consistent):
   * the head still ready at that task, and no claim another worker must respect.
   */
  async *#verified(
    pageSize: number,
  ): AsyncGenerator<Array<{ candidate: Candidate; head: Head }>, void, undefined> {
    const batchSize = Math.min(pageSize, 50);
    let batch: Candidate[] = [];
    const seen = new Set<string>();
    const flush = async (): Promise<Array<{ candidate: Candidate; head: Head }>> => {
      const keys: Key[] = [];
      for (const c of batch) keys.push(this.#headKey(c.pk), this.#claimKey(c.pk, c.taskId));
      const items = await batchGet(this.client, this.tableName, keys, 100, 2);
      const byKey = new Map(items.map((item) => [`${str(item, ATTR.pk)}\u0000${str(item, ATTR.sk)}`, item]));
      const now = this.#now();
      const out: Array<{ candidate: Candidate; head: Head }> = [];
      const repairs: Array<Promise<void>> = [];
      for (const c of batch) {
        const headItem = byKey.get(`${c.pk}\u0000${HEAD_SK}`);
        if (headItem === undefined || str(headItem, "iid") !== c.instanceId) continue;
        const head = this.#parseHead(headItem, c.instanceId) as Head;
        if (!head.ready || head.finished || head.positionTaskId !== c.taskId) continue;
        const claim = this.#parseClaim(byKey.get(`${c.pk}\u0000${this.#layout.claimSk(c.taskId)}`));
        const live = this.#liveForOthers(claim, now);
        // An ended lease: back to the ready partition; a renewed one (extend, or taken over by
        // claimTask): re-keyed to when the live claim ends. Both conditional on the lease read.
        if (c.leaseSk !== undefined && head.leaseSk === c.leaseSk) {
          const to = live
            ? {
                pk: this.#layout.leasedPk(this.#layout.shardOf(c.instanceId)),
                sk: this.#layout.leaseSk(
                  claim?.expiresAt === undefined ? undefined : claim.expiresAt + this.#o.skewMs,
                  c.instanceId,
                ),
              }
            : {
                pk: this.#layout.readyPk(this.#layout.shardOf(c.instanceId)),
                sk: this.#layout.readySk(head.updatedAt, c.instanceId),
              };
          if (to.sk !== c.leaseSk || !live) repairs.push(this.#quietly(() => this.#moveLease(head, to)));
        }
        if (live) continue;
        out.push({ candidate: c, head });
      }
      await Promise.all(repairs);
      batch = [];
      return out;
    };
    for await (const candidate of this.#candidates(Math.min(Math.max(pageSize, 10), 200))) {
      if (seen.has(candidate.pk)) continue;
      seen.add(candidate.pk);
      batch.push(candidate);
      if (batch.length >= batchSize) yield await flush();
    }
    if (batch.length > 0) yield await flush();
  }

  /** Moves a leased head's index entry (conditional on the lease it still has). */
  async #moveLease(head: Head, to: { pk: string; sk: string }): Promise<void> {
    try {
      await this.#send(
        new UpdateItemCommand({
          TableName: this.tableName,
          Key: this.#headKey(head.pk),
          ...expressions(
            {
              UpdateExpression: `SET #${ATTR.readyPk} = :to, #${ATTR.readySk} = :tosk`,
              ConditionExpression: `#${ATTR.readyPk} = :kpk AND #${ATTR.readySk} = :ksk`,
            },
            {
              ":to": S(to.pk),
              ":tosk": S(to.sk),
              ":kpk": S(this.#layout.leasedPk(this.#layout.shardOf(head.instanceId))),
              ":ksk": S(head.leaseSk ?? ""),
            },
          ),
        }),
      );
    } catch (error) {
      if (!isConditionFailed(error)) throw error;
    }
  }

  /** The input of a ready task: the last completed task's output, else the initial input, else empty. */
  async #input(head: Head): Promise<Uint8Array | undefined> {
    if (head.lastCompletedTaskId !== undefined) {
      const out = await this.#send<{ Item?: Item }>(
        new GetItemCommand({
          TableName: this.tableName,
          Key: {
            [ATTR.pk]: S(head.pk),
            [ATTR.sk]: S(this.#layout.resultSk(head.generation, head.lastCompletedTaskId)),
          },
          ConsistentRead: true,
        }),
      );
      const ref = out.Item === undefined ? undefined : readRef(out.Item);
      if (ref === undefined) return undefined;
      try {
        return await this.#chunks.read(ref);
      } catch (error) {
        if (error instanceof MissingChunkError) return undefined;
        throw error;
      }
    }
    if (head.header === undefined) return undefined;
    try {
      const header = await this.#chunks.read(head.header);
      const snapshot = decodeSnapshotHeader(header, head.instanceId, {
        results: [],
        lastCompletedTaskId: null,
      });
      return snapshot.initialInput ?? EMPTY_BYTES;
    } catch (error) {
      if (error instanceof MissingChunkError) return undefined;
      throw error;
    }
  }

  protected async doFindAvailableTasks(_workerId: string, limit: number): Promise<AvailableTask[]> {
    const found: AvailableTask[] = [];
    for await (const batch of this.#verified(limit)) {
      const inputs = await Promise.all(batch.map(({ head }) => this.#input(head)));
      for (const [i, { candidate, head }] of batch.entries()) {
        const input = inputs[i];
        if (input === undefined || found.length >= limit) continue;
        found.push({
          instanceId: candidate.instanceId,
          taskId: candidate.taskId,
          input,
          workflowDefinitionHash: head.definitionHash,
        });
      }
      if (found.length >= limit) break;
    }
    return found;
  }

  protected async doClaimAvailableTasks(
    workerId: string,
    limit: number,
    ttlMs: number | null,
  ): Promise<ClaimedTask[]> {
    const claimed: ClaimedTask[] = [];
    let failure: { reason: unknown } | undefined;
    try {
      for await (const batch of this.#verified(limit)) {
        let pending = batch;
        while (pending.length > 0 && claimed.length < limit) {
          const take = pending.slice(0, limit - claimed.length);
          pending = pending.slice(take.length);
          // Settled, not all-or-nothing: a claim that landed must reach its caller even when another
          // claim of the same call failed (with no ttl it would never expire).
          const got = await Promise.allSettled(
            take.map(async ({ candidate, head }) => {
              const input = await this.#input(head);
              if (input === undefined) return undefined;
              const claim = await this.#tryClaim(
                candidate.instanceId,
                candidate.taskId,
                workerId,
                ttlMs,
                head,
              );
              if (claim === null) return undefined;
              const task: ClaimedTask = {
                instanceId: candidate.instanceId,
                taskId: candidate.taskId,
                input,
                workflowDefinitionHash: head.definitionHash,
                claim,
              };
              return task;
            }),
          );
          for (const result of got) {
            if (result.status === "rejected") failure ??= { reason: result.reason };
            else if (result.value !== undefined) claimed.push(result.value);
          }
          if (failure !== undefined) break;
        }
        if (claimed.length >= limit || failure !== undefined) break;
      }
    } catch (error) {
      // Discovery itself failed (after earlier batches may have claimed): same rule.
      failure ??= { reason: error };
    }
    // Part of the call failed: what was claimed is returned; only a call that claimed nothing fails.
    if (failure !== undefined && claimed.length === 0) throw failure.reason;
    return claimed;
  }

  // ---------------------------------------------------------------- maintenance

  /**
   * Deletes what interrupted writes left behind: result items of a generation that is not (or no
   * longer) current, chunk items that no head or current result points at, and the markers of
   * interrupted deletes. Only items older than `graceMs` (default 15 minutes) are touched, so
   * writes in flight are safe. It scans the table (filtered to this backend's key prefix): run it
   * off-peak.
   */
  async cleanup(options: { graceMs?: number } = {}): Promise<{ deletedItems: number }> {
    return this.run("cleanup", async () => {
      const graceMs = options.graceMs ?? 15 * 60_000;
      const cutoff = this.#now() - graceMs;
      const heads = new Map<string, string>();
      const referenced = new Set<string>();
      const results: Array<{ key: Key; pk: string; gen: string; at: number; chunkSetId?: string }> = [];
      const chunks: Array<{ key: Key; chunkSetId: string; at: number }> = [];
      const markers: Array<{ key: Key; at: number }> = [];
      let startKey: Record<string, AttributeValue> | undefined;
      const base = this.#layout.base;
      do {
        const out: ScanCommandOutput = await this.#send(
          new ScanCommand({
            TableName: this.tableName,
            ExclusiveStartKey: startKey,
            ConsistentRead: true,
            ...expressions(
              {
                FilterExpression: "begins_with(#PK, :base)",
                ProjectionExpression: "#PK, #SK, #gen, #at, #c, #hc",
              },
              { ":base": S(base) },
            ),
          }),
        );
        startKey = out.LastEvaluatedKey;
        for (const item of out.Items ?? []) {
          const pk = str(item, ATTR.pk) as string;
          const sk = str(item, ATTR.sk) as string;
          const key = { [ATTR.pk]: S(pk), [ATTR.sk]: S(sk) };
          if (sk === HEAD_SK) {
            heads.set(pk, str(item, "gen") ?? "");
            const hc = str(item, "hc");
            if (hc) referenced.add(hc);
          } else if (sk.startsWith("R#")) {
            const entry: (typeof results)[number] = {
              key,
              pk,
              gen: str(item, "gen") ?? "",
              at: num(item, "at") ?? 0,
            };
            const c = str(item, "c");
            if (c !== undefined) entry.chunkSetId = c;
            results.push(entry);
          } else if (sk === DELETE_MARKER_SK) {
            markers.push({ key, at: num(item, "at") ?? 0 });
          } else if (pk.startsWith(`${base}C#`)) {
            const rest = pk.slice(base.length + 2);
            chunks.push({ key, chunkSetId: rest.slice(0, rest.lastIndexOf("#")), at: num(item, "at") ?? 0 });
          }
        }
      } while (startKey !== undefined);
      const garbage: Key[] = [];
      for (const r of results) {
        if (heads.get(r.pk) === r.gen || r.at > cutoff) {
          if (r.chunkSetId) referenced.add(r.chunkSetId);
        } else garbage.push(r.key);
      }
      for (const c of chunks) if (!referenced.has(c.chunkSetId) && c.at <= cutoff) garbage.push(c.key);
      for (const m of markers) if (m.at <= cutoff) garbage.push(m.key);
      await batchWrite(
        this.client,
        this.tableName,
        garbage.map((Key) => ({ DeleteRequest: { Key } })),
      );
      return { deletedItems: garbage.length };
    });
  }

  protected async doClose(): Promise<void> {
    if (this.#ownsClient) this.client.destroy();
  }
}
