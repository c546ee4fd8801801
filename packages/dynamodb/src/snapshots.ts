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
  type TransactWriteItem,
  TransactWriteItemsCommand,
} from "@aws-sdk/client-dynamodb";
import {
  EMPTY_BYTES,
  type EventRef,
  type Fence,
  failures,
  type SnapshotPage,
  type TaskResult,
  ValidationError,
  type WorkflowSnapshot,
} from "@sayiir/persistence-core";
import {
  consumeRefusal,
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
import { consumeItem, dropEvents, oldestEvents, type StoredEvent } from "./events.js";
import {
  encodeAttempts,
  eventCountCondition,
  fenceCheck,
  getHead,
  getHeadItem,
  type Head,
  keepsResults,
  nonceCondition,
  parseHead,
  resultItems,
  writeView,
} from "./items.js";
import { ATTR, freshId, HEAD_SK, HEAD_VALUE, keyOf, LIST_INDEX, STATUS } from "./layout.js";
import { entryAttributes, entryOf, positionAttributes, scheduleOfStored } from "./readiness.js";
import { finishAttributes, finishTimeOfSave } from "./retention.js";
import {
  type Candidate,
  candidates,
  MAX_REUSED,
  type Reused,
  reuseCheck,
  unchanged,
  unshare,
} from "./reuse.js";

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
  /** Unchanged large outputs whose chunk sets the new result items point at (see reuse.ts). */
  reused: Reused[];
  /** The generation the reuse was decided on: the commit must replace exactly it. */
  basis: string | undefined;
  /** A reused result was replaced since: write those outputs before committing again. */
  unshare: boolean;
}

/**
 * saveSnapshot: 1. the values and result items the new head will point at, under keys nobody
 * reads yet; 2. the head's conditional put, the commit point (with the consumed event's delete);
 * 3. the replaced generation dropped, and the events of a workflow that became terminal.
 * A failure before the commit for a known reason removes what step 1 wrote.
 */
export async function saveSnapshot(
  ctx: Context,
  snapshot: WorkflowSnapshot,
  fence: Fence | undefined,
  consume: EventRef | undefined,
): Promise<void> {
  const stored = toStoredSnapshot(snapshot);
  const pk = ctx.layout.instancePk(stored.instanceId);
  const save: PendingSave = {
    generation: freshId(),
    written: [],
    resultKeys: [],
    committed: false,
    definite: true,
    reused: [],
    basis: undefined,
    unshare: false,
  };
  try {
    const head = await getHead(ctx, stored.instanceId);
    const reusable = await candidates(ctx, stored, head);
    if (reusable.size > 0) save.basis = head?.generation;
    const values = await writeValues(ctx, stored, pk, save, reusable);
    const { previous, consumed } = await commitHead(ctx, stored, values, { fence, consume }, save, head);
    const kept = new Set(save.reused.map((r) => r.ref.chunkSetId));
    if (previous !== undefined) await quietly(() => dropGeneration(ctx, previous, kept));
    const set = chunkSetOf(consumed?.ref);
    if (set !== undefined) await quietly(() => ctx.chunks.delete([set]));
    if (stored.finished && previous !== undefined && !previous.finished) await dropEvents(ctx, previous);
  } catch (error) {
    if (!save.committed && save.definite) await quietly(() => undoSave(ctx, save));
    throw error;
  }
}

/**
 * Step 1: the header, the initial input and every result, chunked when large; an unchanged large
 * output of the current generation is not written again: its new item points at its chunk set.
 */
async function writeValues(
  ctx: Context,
  stored: StoredSnapshot,
  pk: string,
  save: PendingSave,
  reusable: ReadonlyMap<string, Candidate>,
): Promise<HeadValues> {
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
    const candidate = reusable.get(result.taskId);
    if (save.reused.length < MAX_REUSED && unchanged(candidate, result.output)) {
      save.reused.push({ ...candidate, taskId: result.taskId, output: result.output });
      items.push(resultItem(ctx.layout, pk, save.generation, result.taskId, now, candidate.ref));
      continue;
    }
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
  return { header, input, generation: save.generation };
}

interface HeadValues {
  header: ValueRef;
  input: ValueRef | undefined;
  generation: string;
}

/**
 * The new head item: its status, values and position; the incarnation, event count and
 * transition nonce of the head it replaces (its events stay pending); in the ready index when a
 * task is ready (or a wait's event is pending), in the timer index when a wait has a timeout, in
 * the finished index once finished, in the list index always.
 */
function headItem(
  ctx: Context,
  stored: StoredSnapshot,
  values: HeadValues,
  previous: Head | undefined,
  eventPending: boolean,
): Item {
  const { layout } = ctx;
  const id = stored.instanceId;
  const shard = layout.shardOf(id);
  const schedule = scheduleOfStored(stored);
  const item: Item = {
    ...layout.headKey(layout.instancePk(id)),
    [ATTR.instanceId]: S(id),
    [ATTR.generation]: S(values.generation),
    [ATTR.status]: S(stored.finished ? STATUS.finished : STATUS.inProgress),
    [ATTR.kind]: S(stored.status),
    [ATTR.updatedAt]: N(stored.updatedAt),
    [ATTR.definitionHash]: S(stored.definitionHash),
    [ATTR.listPk]: S(layout.listPk(shard)),
    [ATTR.listSk]: S(layout.listSk(id)),
    [ATTR.incarnation]: S(previous?.incarnation ?? freshId()),
    ...refAttributes(values.header, HEAD_VALUE.header),
    ...(values.input === undefined ? {} : refAttributes(values.input, HEAD_VALUE.input)),
    ...positionAttributes({ ...stored, ...schedule }),
    ...entryAttributes(entryOf(layout, id, { ...stored, ...schedule }, eventPending, ctx.now())),
  };
  // The first finish stamps the time; a terminal -> terminal save keeps the one it replaces.
  if (stored.finished)
    Object.assign(item, finishAttributes(layout, id, finishTimeOfSave(previous, ctx.now())));
  const attempts = encodeAttempts(stored.attempts);
  if (attempts !== undefined) item[ATTR.attempts] = S(attempts);
  if (previous !== undefined && previous.eventCount > 0) item[ATTR.eventCount] = N(previous.eventCount);
  // Kept: a transition whose reply was lost still recognises its write after this save.
  if (previous?.nonce !== undefined) item[ATTR.nonce] = S(previous.nonce);
  if (stored.lastCompletedTaskId !== null) item[ATTR.lastCompleted] = S(stored.lastCompletedTaskId);
  return item;
}

/** The fence of a write, and the event it consumes. */
interface SaveOptions {
  fence: Fence | undefined;
  consume: EventRef | undefined;
}

/**
 * Step 2: puts the head, conditioned on the generation, transition nonce and event count read
 * (none: on its absence), until it does not lose a race: a save that read the head before a
 * cancel, pause or resume changed it in place is judged again on the new state. Each attempt judges, on the head read, the fence, the
 * state (snapshotRefusal) and the event consumed (consumeRefusal: the oldest pending of its name),
 * and whether the new wait has an event pending. Returns the head it replaced and the event it
 * consumed.
 */
async function commitHead(
  ctx: Context,
  stored: StoredSnapshot,
  values: HeadValues,
  options: SaveOptions,
  save: PendingSave,
  head: Head | undefined,
): Promise<{ previous: Head | undefined; consumed: StoredEvent | undefined }> {
  const id = stored.instanceId;
  const pk = ctx.layout.instancePk(id);
  let previous = head;
  return retryOnRace(
    `saveSnapshot of ${quote(id)}`,
    async () => {
      if (save.reused.length > 0 && (save.unshare || previous?.generation !== save.basis))
        await unshare(ctx, pk, save);
      const view = await writeView(ctx, pk, options.fence, previous);
      const refusal = snapshotRefusal(id, options.fence, view, stored.status);
      if (refusal !== null) throw refusal;
      const { consumed, eventPending } = await pendingEvents(ctx, stored, previous, options.consume);
      const item = headItem(ctx, stored, values, previous, eventPending);
      const lost = await putHead(ctx, id, item, previous, { ...options, consumed }, save);
      // An SDK retry of a write that did land: the head already carries our generation.
      const head = lost === null ? undefined : parseHead(ctx.layout, lost.current, id);
      if (lost === null || head?.generation === save.generation) {
        save.committed = true;
        return { previous, consumed };
      }
      previous = head;
      return RETRY;
    },
    { attempts: RACE_ATTEMPTS },
  );
}

/**
 * What the write needs of the pending events, read after the head (its put is conditioned on the
 * event count read): the event it consumes, which must be the oldest pending of its name (else
 * ConflictError), and whether an event of the new wait's name is pending once it is consumed.
 */
async function pendingEvents(
  ctx: Context,
  stored: StoredSnapshot,
  previous: Head | undefined,
  consume: EventRef | undefined,
): Promise<{ consumed: StoredEvent | undefined; eventPending: boolean }> {
  const awaited = stored.awaiting?.eventName;
  const same = consume !== undefined && consume.eventName === awaited;
  const [oldest, waiting] = await Promise.all([
    consume === undefined || previous === undefined
      ? []
      : oldestEvents(ctx, previous, consume.eventName, same ? 2 : 1),
    awaited === undefined || same || previous === undefined ? [] : oldestEvents(ctx, previous, awaited),
  ]);
  const refusal = consumeRefusal(stored.instanceId, consume, oldest[0]?.sequence);
  if (refusal !== null) throw refusal;
  return {
    consumed: consume === undefined ? undefined : oldest[0],
    eventPending: same ? oldest.length > 1 : waiting.length > 0,
  };
}

/**
 * One conditional put of the head (fenced or consuming: in a transaction with the claim's
 * condition check and the event's delete). null: it landed; else the head item found instead.
 * What is not a lost race is thrown.
 */
async function putHead(
  ctx: Context,
  id: string,
  item: Item,
  previous: Head | undefined,
  options: { fence: Fence | undefined; consumed: StoredEvent | undefined },
  save: PendingSave,
): Promise<{ current: Item | undefined } | null> {
  const pk = item[ATTR.pk]?.S as string;
  const { fence, consumed } = options;
  const put = {
    TableName: ctx.tableName,
    Item: item,
    ...expressions(
      {
        ConditionExpression:
          previous === undefined
            ? `attribute_not_exists(#${ATTR.pk})`
            : `attribute_exists(#${ATTR.pk}) AND #${ATTR.generation} = :gen AND ` +
              `${nonceCondition(previous.nonce)} AND ${eventCountCondition(previous.eventCount)}`,
      },
      previous === undefined
        ? {}
        : {
            ":gen": S(previous.generation),
            ":nc_read": S(previous.nonce ?? ""),
            ":evn": N(previous.eventCount),
          },
    ),
    ReturnValuesOnConditionCheckFailure: "ALL_OLD" as const,
  };
  const items: TransactWriteItem[] = [];
  if (fence !== undefined) items.push(fenceCheck(ctx, pk, fence, ctx.now()));
  items.push({ Put: put });
  if (consumed !== undefined) items.push(consumeItem(ctx, consumed));
  const checksAt = items.length;
  for (const reused of save.reused) items.push(reuseCheck(ctx, reused));
  try {
    save.definite = false;
    if (items.length === 1) await ctx.send(new PutItemCommand(put));
    else {
      await ctx.send(
        () => new TransactWriteItemsCommand({ ClientRequestToken: freshId(), TransactItems: items }),
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
    if (reasons.slice(checksAt).some((r) => r.Code === "ConditionalCheckFailed")) save.unshare = true;
    if (isConflictOnly(error)) throw error;
    const at = fence === undefined ? 0 : 1;
    if (fence !== undefined && reasons[0]?.Code === "ConditionalCheckFailed")
      throw failures.fenceRejected(id, fence);
    if (reasons[at]?.Code === "ConditionalCheckFailed") return { current: reasons[at].Item };
    // The consumed event is gone (or a conflict): read again; the next attempt judges it.
    if (reasons.some((r) => r.Code === "TransactionConflict" || r.Code === "ConditionalCheckFailed"))
      return { current: await getHeadItem(ctx, pk) };
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
 * chunk set they, its header or its initial input used, but the sets in `kept` (reused by the
 * generation that replaced it).
 */
export async function dropGeneration(
  ctx: Context,
  head: Head,
  kept: ReadonlySet<string> = new Set(),
): Promise<void> {
  const items = await resultItems(ctx, head.pk, head.generation);
  const sets: ChunkSet[] = [];
  for (const ref of [...items.map((item) => readRef(item)), head.header, head.input]) {
    const set = chunkSetOf(ref);
    if (set !== undefined && !kept.has(set.chunkSetId)) sets.push(set);
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
          ...(head.attempts.length === 0 ? {} : { attempts: head.attempts }),
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
  if (keepsResults(head)) {
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
