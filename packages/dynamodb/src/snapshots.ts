/*
 * saveSnapshot, loadSnapshot and listSnapshotsPage (deleteSnapshot, with its claim tombstones,
 * is in deletion.ts). A snapshot is a head item (the header and the initial input, each inline or
 * chunked) plus one result item per completed task under the head's generation; a save writes a
 * new generation and commits by the head's conditional put.
 */
import {
  type AttributeValue,
  PutItemCommand,
  QueryCommand,
  type QueryCommandOutput,
  TransactWriteItemsCommand,
} from "@aws-sdk/client-dynamodb";
import {
  EMPTY_BYTES,
  type Fence,
  failures,
  type SnapshotPage,
  type TaskResult,
  ValidationError,
  type WorkflowSnapshot,
} from "@sayiir/persistence-core";
import {
  fromStoredParts,
  RETRY,
  retryOnRace,
  type StoredSnapshot,
  snapshotRefusal,
  toStoredSnapshot,
} from "@sayiir/persistence-core/adapter";
import {
  type ChunkSet,
  chunkSetOf,
  isChunked,
  MissingChunkError,
  readRef,
  refAttributes,
  type ValueRef,
} from "./chunks.js";
import { resultItem } from "./completion-plan.js";
import { type Context, quietly, quote, RACE_ATTEMPTS } from "./context.js";
import {
  batchWrite,
  cancellationReasons,
  expressions,
  type Item,
  isConditionFailed,
  isConflictOnly,
  type Key,
  N,
  S,
  str,
} from "./dynamo.js";
import { fenceCheck, getHead, getHeadItem, type Head, parseHead, resultItems, writeView } from "./items.js";
import { ATTR, freshId, HEAD_SK, HEAD_VALUE, keyOf, LIST_INDEX, STATUS } from "./layout.js";

/** What a saveSnapshot has written so far: undone if it fails before its commit for a known reason. */
interface PendingSave {
  generation: string;
  /** Values written (chunks) for the new head and its results. */
  written: ValueRef[];
  /** Result items written under the new generation. */
  resultKeys: Key[];
  committed: boolean;
  /** False while a write whose outcome we cannot know is the last one sent. */
  definite: boolean;
}

/**
 * saveSnapshot: 1. the values and result items the new head will point at, under keys nobody
 * reads yet; 2. the head's conditional put, the commit point; 3. the replaced generation dropped.
 * A failure before the commit for a known reason removes what step 1 wrote.
 */
export async function saveSnapshot(
  ctx: Context,
  snapshot: WorkflowSnapshot,
  fence: Fence | undefined,
): Promise<void> {
  const stored = toStoredSnapshot(snapshot);
  const pk = ctx.layout.instancePk(stored.instanceId);
  const save: PendingSave = {
    generation: freshId(),
    written: [],
    resultKeys: [],
    committed: false,
    definite: true,
  };
  try {
    const values = await writeValues(ctx, stored, pk, save);
    const previous = await commitHead(
      ctx,
      stored,
      headItem(ctx, stored, pk, save.generation, values),
      fence,
      save,
    );
    if (previous !== undefined) await quietly(() => dropGeneration(ctx, previous));
  } catch (error) {
    if (!save.committed && save.definite) await quietly(() => undoSave(ctx, save));
    throw error;
  }
}

/** Step 1: the header, the initial input and every result, chunked when large. */
async function writeValues(
  ctx: Context,
  stored: StoredSnapshot,
  pk: string,
  save: PendingSave,
): Promise<{ header: ValueRef; input: ValueRef | undefined }> {
  const now = ctx.now();
  const header = await ctx.chunks.write(stored.header, pk);
  save.written.push(header);
  let input: ValueRef | undefined;
  if (stored.initialInput !== null) {
    input = await ctx.chunks.write(stored.initialInput, pk);
    save.written.push(input);
  }
  const items: Item[] = [];
  for (const result of stored.results) {
    const ref = await ctx.chunks.write(result.output, pk);
    save.written.push(ref);
    items.push(resultItem(ctx.layout, pk, save.generation, result.taskId, now, ref));
  }
  save.resultKeys = items.map(keyOf);
  await batchWrite(
    ctx.client,
    ctx.tableName,
    items.map((Item) => ({ PutRequest: { Item } })),
  );
  return { header, input };
}

/** The new head item: in the ready index when a task is ready, in the list index always. */
function headItem(
  ctx: Context,
  stored: StoredSnapshot,
  pk: string,
  generation: string,
  values: { header: ValueRef; input: ValueRef | undefined },
): Item {
  const { layout } = ctx;
  const id = stored.instanceId;
  const shard = layout.shardOf(id);
  const item: Item = {
    ...layout.headKey(pk),
    [ATTR.instanceId]: S(id),
    [ATTR.generation]: S(generation),
    [ATTR.status]: S(stored.finished ? STATUS.finished : STATUS.inProgress),
    [ATTR.updatedAt]: N(stored.updatedAt),
    [ATTR.definitionHash]: S(stored.definitionHash),
    [ATTR.listPk]: S(layout.listPk(shard)),
    [ATTR.listSk]: S(layout.listSk(id)),
    ...refAttributes(values.header, HEAD_VALUE.header),
    ...(values.input === undefined ? {} : refAttributes(values.input, HEAD_VALUE.input)),
  };
  if (stored.positionTaskId !== null) item[ATTR.position] = S(stored.positionTaskId);
  if (stored.lastCompletedTaskId !== null) item[ATTR.lastCompleted] = S(stored.lastCompletedTaskId);
  if (stored.readyTaskId !== null) {
    item[ATTR.readyPk] = S(layout.readyPk(shard));
    item[ATTR.readySk] = S(layout.readySk(stored.updatedAt, id));
  }
  return item;
}

/**
 * Step 2: puts the head, conditioned on the generation read (none: on its absence), until it
 * does not lose a race. Each attempt judges the fence and the reopening of a finished workflow
 * on the head read. Returns the head it replaced.
 */
async function commitHead(
  ctx: Context,
  stored: StoredSnapshot,
  item: Item,
  fence: Fence | undefined,
  save: PendingSave,
): Promise<Head | undefined> {
  const id = stored.instanceId;
  const pk = ctx.layout.instancePk(id);
  let previous = await getHead(ctx, id);
  return retryOnRace(
    `saveSnapshot of ${quote(id)}`,
    async () => {
      const refusal = snapshotRefusal(id, fence, await writeView(ctx, pk, fence, previous), stored.finished);
      if (refusal !== null) throw refusal;
      const lost = await putHead(ctx, id, item, previous, fence, save);
      // An SDK retry of a write that did land: the head already carries our generation.
      const head = lost === null ? undefined : parseHead(ctx.layout, lost.current, id);
      if (lost === null || head?.generation === save.generation) {
        save.committed = true;
        return previous;
      }
      previous = head;
      return RETRY;
    },
    { attempts: RACE_ATTEMPTS },
  );
}

/**
 * One conditional put of the head (fenced: in a transaction with the claim's condition check).
 * null: it landed; else the head item found instead. What is not a lost race is thrown.
 */
async function putHead(
  ctx: Context,
  id: string,
  item: Item,
  previous: Head | undefined,
  fence: Fence | undefined,
  save: PendingSave,
): Promise<{ current: Item | undefined } | null> {
  const pk = item[ATTR.pk]?.S as string;
  const put = {
    TableName: ctx.tableName,
    Item: item,
    ...expressions(
      {
        ConditionExpression:
          previous === undefined
            ? `attribute_not_exists(#${ATTR.pk})`
            : `attribute_exists(#${ATTR.pk}) AND #${ATTR.generation} = :gen`,
      },
      previous === undefined ? {} : { ":gen": S(previous.generation) },
    ),
    ReturnValuesOnConditionCheckFailure: "ALL_OLD" as const,
  };
  try {
    save.definite = false;
    if (fence === undefined) await ctx.send(new PutItemCommand(put));
    else {
      const check = fenceCheck(ctx, pk, fence, ctx.now());
      await ctx.send(
        () =>
          new TransactWriteItemsCommand({
            ClientRequestToken: freshId(),
            TransactItems: [check, { Put: put }],
          }),
      );
    }
    return null;
  } catch (error) {
    if (isConditionFailed(error)) {
      save.definite = true;
      return { current: error.Item };
    }
    const reasons = cancellationReasons(error);
    if (reasons === undefined) throw error;
    // Conflicts that outlasted the retries: the transaction did not apply.
    save.definite = true;
    if (isConflictOnly(error)) throw error;
    if (reasons[0]?.Code === "ConditionalCheckFailed") throw failures.fenceRejected(id, fence as Fence);
    if (reasons[1]?.Code === "ConditionalCheckFailed") return { current: reasons[1].Item };
    if (reasons.some((r) => r.Code === "TransactionConflict")) return { current: await getHeadItem(ctx, pk) };
    throw error;
  }
}

/** Before the commit, for a known reason: the new generation's items and chunks are orphans. */
async function undoSave(ctx: Context, save: PendingSave): Promise<void> {
  await batchWrite(
    ctx.client,
    ctx.tableName,
    save.resultKeys.map((Key) => ({ DeleteRequest: { Key } })),
  );
  await ctx.chunks.delete(save.written.map(chunkSetOf).filter((s) => s !== undefined));
}

/**
 * Best effort: deletes the result items of a generation that is no longer current and every
 * chunk set they, its header or its initial input used.
 */
export async function dropGeneration(ctx: Context, head: Head): Promise<void> {
  const items = await resultItems(ctx, head.pk, head.generation);
  const sets: ChunkSet[] = [];
  for (const ref of [...items.map((item) => readRef(item)), head.header, head.input]) {
    const set = chunkSetOf(ref);
    if (set !== undefined) sets.push(set);
  }
  await batchWrite(
    ctx.client,
    ctx.tableName,
    items.map((item) => ({ DeleteRequest: { Key: keyOf(item) } })),
  );
  await ctx.chunks.delete(sets);
}

/**
 * loadSnapshot: the head (strongly consistent), its header, initial input and the results of its
 * generation; when any of them is chunked or there are results, the generation must still be
 * current after the reads (a concurrent save deletes the replaced one), else it reads again.
 * After RACE_ATTEMPTS such retries it keeps what it read.
 */
export async function loadSnapshot(ctx: Context, instanceId: string): Promise<WorkflowSnapshot> {
  return retryOnRace(
    `loadSnapshot of ${quote(instanceId)}`,
    async (attempt) => {
      const retriable = attempt < RACE_ATTEMPTS;
      const head = await getHead(ctx, instanceId);
      if (head === undefined) throw failures.snapshotNotFound(instanceId);
      try {
        const { header, input, results, racy } = await readGeneration(ctx, head);
        if (racy && retriable && (await getHead(ctx, instanceId))?.generation !== head.generation)
          return RETRY;
        return fromStoredParts({
          instanceId,
          header,
          initialInput: input,
          results,
          lastCompletedTaskId: head.lastCompletedTaskId ?? null,
          updatedAt: head.updatedAt,
        });
      } catch (error) {
        if (error instanceof MissingChunkError && retriable) return RETRY;
        throw error;
      }
    },
    { attempts: RACE_ATTEMPTS + 1 },
  );
}

/** The values of one generation; `racy` when a concurrent save could have deleted some of them. */
async function readGeneration(
  ctx: Context,
  head: Head,
): Promise<{ header: Uint8Array; input: Uint8Array | undefined; results: TaskResult[]; racy: boolean }> {
  const [header, input] = await Promise.all([
    head.header === undefined ? EMPTY_BYTES : ctx.chunks.read(head.header),
    head.input === undefined ? undefined : ctx.chunks.read(head.input),
  ]);
  let results: TaskResult[] = [];
  let racy = isChunked(head.header) || isChunked(head.input);
  if (!head.finished) {
    const items = await resultItems(ctx, head.pk, head.generation);
    racy ||= items.length > 0;
    results = await Promise.all(
      items.map(async (item) => {
        const ref = readRef(item);
        const output = ref === undefined ? EMPTY_BYTES : await ctx.chunks.read(ref);
        return { taskId: str(item, ATTR.taskId) ?? "", output };
      }),
    );
  }
  return { header, input, results, racy };
}

/** listSnapshotsPage: the list index, shard after shard; the cursor is `<shard>.<hash>`. */
export async function listSnapshotsPage(
  ctx: Context,
  cursor: string | null,
  limit: number,
): Promise<SnapshotPage> {
  const { layout } = ctx;
  let shard = 0;
  let startKey: Record<string, AttributeValue> | undefined;
  if (cursor !== null) {
    const decoded = layout.decodeCursor(cursor);
    if (decoded === undefined)
      throw new ValidationError("cursor must be a string returned by listSnapshotsPage");
    shard = decoded.shard;
    startKey = {
      [ATTR.pk]: S(layout.instancePkOfHash(decoded.lastHash)),
      [ATTR.sk]: S(HEAD_SK),
      [ATTR.listPk]: S(layout.listPk(shard)),
      [ATTR.listSk]: S(decoded.lastHash),
    };
  }
  const instanceIds: string[] = [];
  let last: { shard: number; hash: string } | undefined;
  while (shard < layout.shards && instanceIds.length < limit) {
    const out = await ctx.send<QueryCommandOutput>(
      new QueryCommand({
        TableName: ctx.tableName,
        IndexName: LIST_INDEX,
        Limit: limit - instanceIds.length,
        ExclusiveStartKey: startKey,
        ...expressions(
          { KeyConditionExpression: `#${ATTR.listPk} = :lpk` },
          { ":lpk": S(layout.listPk(shard)) },
        ),
      }),
    );
    for (const item of out.Items ?? []) {
      const id = str(item, ATTR.instanceId);
      const hash = str(item, ATTR.listSk);
      if (id === undefined || hash === undefined) continue;
      instanceIds.push(id);
      last = { shard, hash };
    }
    startKey = out.LastEvaluatedKey;
    if (startKey === undefined) shard++;
  }
  const more = instanceIds.length >= limit && shard < layout.shards && last !== undefined;
  return { instanceIds, nextCursor: more && last ? layout.encodeCursor(last.shard, last.hash) : null };
}
