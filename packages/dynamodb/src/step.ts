/*
 * completeTasks with `next`: one fenced write per workflow step. Per completion, ONE
 * TransactWriteItems, conditioned on the head as it was read (generation, nonce, status, event
 * count, attempts, updatedAt, last completed task and index keys: nothing changed it since):
 *   - the head's update: the new header (the kit's advanceHeader, from the stored header alone),
 *     status, position, schedule and index entry, updatedAt, last completed task and a fresh nonce
 *     (the head's version: a save, a transition or a result written against the head as it was
 *     before the step is judged again); a step to Completed or Failed also takes a fresh
 *     generation, so that every result of the old one is gone at once (dropped afterwards, as a
 *     terminal saveSnapshot drops the generation it replaces);
 *   - the put of this task's result (not for Completed/Failed), conditioned on what it held;
 *   - the claim's tombstone, under the fence condition (the same release as completeTasks);
 *   - the consumed event's delete (it must still be there);
 *   - the check that the next task still has no result, when that decided its readiness.
 * Other outputs are neither read nor written. The head and the claim come from completeTasks'
 * BatchGetItem; the oldest pending event of consumeEvent's name and, for a step to a wait,
 * whether an event of its name is pending take one Query each (none when no event was ever sent).
 */
import { type TransactWriteItem, TransactWriteItemsCommand } from "@aws-sdk/client-dynamodb";
import {
  failures,
  type NextStep,
  type PersistenceError,
  positionTaskId,
  type WorkflowState,
} from "@sayiir/persistence-core";
import {
  advanceHeader,
  fromStoredParts,
  RETRY,
  retryOnRace,
  type StepWrite,
  stepRefusal,
} from "@sayiir/persistence-core/adapter";
import { type ChunkSet, chunkSetOf, MissingChunkError, readRef, type ValueRef } from "./chunks.js";
import { attemptsCondition } from "./claims.js";
import type { Completing, CompletionCall } from "./completion.js";
import { priorCondition, priorOf, resultItem } from "./completion-plan.js";
import { type Context, quietly, quote, RACE_ATTEMPTS, tombstoneTtl } from "./context.js";
import { absentCheck, indexCondition, stateRewrite, valueClauses } from "./control.js";
import { cancellationReasons, expressions, type Item, isConflictOnly, N, S, str } from "./dynamo.js";
import { consumeItem, dropEvents, oldestEvents, type StoredEvent } from "./events.js";
import {
  eventCountCondition,
  FENCE_CONDITION,
  type Head,
  heldView,
  kindCondition,
  nonceCondition,
  parseClaim,
  parseHead,
  TOMBSTONE_UPDATE,
} from "./items.js";
import { ATTR, freshId, HEAD_VALUE, keyString } from "./layout.js";
import { scheduleOfTask, updateExpression } from "./readiness.js";
import { dropGeneration } from "./snapshots.js";

/** Reads the head, the claim and (under a generation) the task's result item again. */
export type Reread = (
  items: readonly Completing[],
  generations: ReadonlyMap<string, string>,
) => Promise<Map<string, Item>>;

/** One step being committed: the head as last read, and what the attempts learned. */
interface StepRun {
  item: Completing;
  next: NextStep;
  head: Head | undefined;
  /** The next position's task is known to hold a result (a failed absence check said so). */
  nextHasResult: boolean;
}

/** What one attempt will write, besides the head's update. */
interface StepPlan {
  head: Head;
  write: StepWrite;
  now: number;
  headerRef: ValueRef;
  /** The initial input taken out of a head written before it was stored on its own. */
  inputRef: ValueRef | undefined;
  consumed: StoredEvent | undefined;
  eventPending: boolean;
  /** The next task whose absence of a result the transaction checks. */
  absent: string | undefined;
  /** A fresh generation (a step to Completed or Failed). */
  generation: string | undefined;
}

/**
 * Commits one completion with `next` (its head and claim as read by completeTasks), until it does
 * not lose a race: judged by stepRefusal on what was read (nothing is sent when refused), then
 * the transaction; a cancelled one is judged again on a fresh read of the head, the claim and the
 * result item. Sets the completion's outcome in `call`.
 */
export async function completeStep(
  ctx: Context,
  item: Completing,
  head: Head | undefined,
  call: CompletionCall,
  reread: Reread,
): Promise<void> {
  const run: StepRun = { item, next: item.c.next as NextStep, head, nextHasResult: false };
  let replacing: ChunkSet | undefined;
  const outcome = await retryOnRace(
    `completeTasks (step) on ${quote(item.c.instanceId)}`,
    async () => {
      const plan = await prepare(ctx, run);
      if (plan === RETRY) {
        await refresh(ctx, run, reread);
        return RETRY;
      }
      if (!("write" in plan)) return plan;
      replacing = item.replacing;
      if (await sendStep(ctx, run, plan, call)) return null;
      await refresh(ctx, run, reread);
      if (!landedUnseen(run)) {
        // It did not land: the chunks it wrote for the new header are garbage. Only now (an
        // earlier send that landed unseen points the head at them).
        await quietly(() => ctx.chunks.delete(newSets(plan)));
        return RETRY;
      }
      // An earlier send of this attempt landed, its reply lost (the adapter resends on a conflict).
      await afterStep(ctx, plan);
      return null;
    },
    { attempts: RACE_ATTEMPTS },
  );
  call.outcomes[item.index] = outcome;
  if (outcome === null) {
    call.kept.add(item);
    if (replacing !== undefined) call.replaced.push(replacing);
  }
}

/** The step's refusal, or what to write; RETRY: the header's chunks were replaced under the read. */
async function prepare(ctx: Context, run: StepRun): Promise<StepPlan | PersistenceError | typeof RETRY> {
  const { item, next, head } = run;
  const c = item.c;
  const now = ctx.now();
  const base = {
    found: head !== undefined,
    finished: head?.finished ?? false,
    paused: head?.paused ?? false,
    claim: heldView(parseClaim(item.claim)),
    now,
  };
  // NotFound, ClaimLost, finished, paused first (the position is judged once the header is read).
  const early = stepRefusal(c.instanceId, c, { ...base, positionTask: c.taskId }, undefined, undefined);
  if (early !== null || head === undefined) return early ?? failures.snapshotNotFound(c.instanceId);
  let header: Uint8Array;
  let events: { consumed: StoredEvent | undefined; eventPending: boolean };
  try {
    [header, events] = await Promise.all([
      head.header === undefined ? new Uint8Array(0) : ctx.chunks.read(head.header),
      pendingEvents(ctx, head, c.consumeEvent?.eventName, next),
    ]);
  } catch (error) {
    if (error instanceof MissingChunkError) return RETRY;
    throw error;
  }
  // Decoded only when needed: a head without `pos` or without its own initial input.
  const decoded = () =>
    fromStoredParts({
      instanceId: c.instanceId,
      header,
      initialInput: null,
      results: [],
      lastCompletedTaskId: null,
    });
  // `pos` is absent for a wait whose task already has a result: the header still names that task.
  const positionTask = head.positionTaskId ?? stateTask(decoded().state);
  const refusal = stepRefusal(
    c.instanceId,
    c,
    { ...base, positionTask },
    c.consumeEvent,
    events.consumed?.sequence,
  );
  if (refusal !== null) return refusal;
  const nextTask =
    next.kind === "AtTask" ? next.taskId : next.kind === "AwaitingEvent" ? next.nextTaskId : undefined;
  const known = (taskId: string) =>
    taskId === c.taskId || taskId === head.lastCompletedTaskId || (taskId === nextTask && run.nextHasResult);
  const write = advanceHeader(
    {
      instanceId: c.instanceId,
      header,
      lastCompletedTaskId: head.lastCompletedTaskId ?? null,
      hasResult: known,
    },
    c.taskId,
    next,
    Math.max(head.updatedAt, now),
  );
  // A head written before the initial input was split out carries it in its header: kept apart.
  const legacyInput = head.input === undefined ? decoded().initialInput : undefined;
  const [headerRef, inputRef] = await Promise.all([
    ctx.chunks.write(write.header, head.pk),
    legacyInput === undefined ? undefined : ctx.chunks.write(legacyInput, head.pk),
  ]);
  return {
    head,
    write,
    now,
    headerRef,
    inputRef,
    ...events,
    absent: nextTask !== undefined && write.keepsResults && !known(nextTask) ? nextTask : undefined,
    generation: write.keepsResults ? undefined : freshId(),
  };
}

/** The task an InProgress state's position runs (AtTask's, or the task after a wait), else null. */
function stateTask(state: WorkflowState): string | null {
  return state.kind === "InProgress" ? (positionTaskId(state.position) ?? null) : null;
}

/**
 * The event the step consumes (the oldest pending of its name: consumeRefusal judges it) and,
 * for a step to a wait, whether an event of its name is pending once that one is consumed.
 */
async function pendingEvents(
  ctx: Context,
  head: Head,
  consume: string | undefined,
  next: NextStep,
): Promise<{ consumed: StoredEvent | undefined; eventPending: boolean }> {
  const awaited = next.kind === "AwaitingEvent" ? next.eventName : undefined;
  const same = consume !== undefined && consume === awaited;
  const [oldest, waiting] = await Promise.all([
    consume === undefined ? [] : oldestEvents(ctx, head, consume, same ? 2 : 1),
    awaited === undefined || same ? [] : oldestEvents(ctx, head, awaited),
  ]);
  return { consumed: oldest[0], eventPending: same ? oldest.length > 1 : waiting.length > 0 };
}

/** Sends the step's transaction. True: it landed; false: cancelled, nothing applied (read again). */
async function sendStep(ctx: Context, run: StepRun, plan: StepPlan, call: CompletionCall): Promise<boolean> {
  const { item } = run;
  const { head, now } = plan;
  const items: TransactWriteItem[] = [{ Update: stepUpdate(ctx, plan, item.nonce) }];
  items.push({
    Update: {
      TableName: ctx.tableName,
      Key: ctx.layout.claimKey(head.pk, item.c.taskId),
      ...expressions(
        {
          UpdateExpression: `${TOMBSTONE_UPDATE}, #${ATTR.completedBy} = :cn`,
          ConditionExpression: FENCE_CONDITION,
        },
        { ":tok": N(item.c.token), ":now": N(now), ":ttl": N(tombstoneTtl(now)), ":cn": S(item.nonce) },
      ),
    },
  });
  if (plan.write.keepsResults) {
    items.push({
      Put: {
        TableName: ctx.tableName,
        Item: resultItem(ctx.layout, head.pk, head.generation, item.c.taskId, now, item.ref as ValueRef),
        ...priorCondition(item.prior ?? { kind: "none" }),
      },
    });
  }
  if (plan.consumed !== undefined) items.push(consumeItem(ctx, plan.consumed));
  const absentAt = items.length;
  if (plan.absent !== undefined)
    items.push(absentCheck(ctx, ctx.layout.resultKey(head.pk, head.generation, plan.absent)));
  call.kept.add(item);
  try {
    await ctx.send(
      () => new TransactWriteItemsCommand({ ClientRequestToken: freshId(), TransactItems: items }),
    );
  } catch (error) {
    const reasons = cancellationReasons(error);
    // No cancellation: the outcome is unknown, the chunks stay (cleanup() collects orphans).
    if (reasons === undefined) throw error;
    call.kept.delete(item);
    // The new header's chunks are dropped by the caller once a re-read shows the step did not
    // land (a resend's cancellation can hide an earlier send that did); thrown: cleanup() collects.
    if (isConflictOnly(error)) throw error;
    if (!reasons.some((r) => r.Code === "ConditionalCheckFailed" || r.Code === "TransactionConflict"))
      throw error;
    if (plan.absent !== undefined && reasons[absentAt]?.Code === "ConditionalCheckFailed")
      run.nextHasResult = true;
    return false;
  }
  await afterStep(ctx, plan);
  return true;
}

/** The chunk sets an attempt wrote for the head (garbage when it did not apply). */
const newSets = (plan: StepPlan): ChunkSet[] =>
  [chunkSetOf(plan.headerRef), chunkSetOf(plan.inputRef)].filter((set) => set !== undefined);

/**
 * After the commit, best effort: the replaced header's chunks, the consumed event's chunks and,
 * after a step to Completed or Failed, the old generation's results and the instance's events.
 */
async function afterStep(ctx: Context, plan: StepPlan): Promise<void> {
  const { head } = plan;
  const sets = [chunkSetOf(head.header), chunkSetOf(plan.consumed?.ref)].filter((set) => set !== undefined);
  if (sets.length > 0) await quietly(() => ctx.chunks.delete(sets));
  if (plan.generation !== undefined) {
    // The initial input stays the new head's: only the old generation's results go.
    await quietly(() => dropGeneration(ctx, { ...head, header: undefined, input: undefined }));
    await dropEvents(ctx, head);
  }
}

/**
 * The head's update: header, status, updatedAt, last completed task, position, schedule and index
 * entry (as a saveSnapshot of the stepped snapshot files them), the step's nonce, and for a
 * terminal step a fresh generation. Conditioned on everything that decided it, as read.
 */
function stepUpdate(ctx: Context, plan: StepPlan, nonce: string) {
  const { head, write } = plan;
  const task = write.readyTaskId ?? write.awaiting?.nextTaskId ?? null;
  const state = { ...write, ...scheduleOfTask(write.schedule, head.attempts, task) };
  const { set, remove, values } = stateRewrite(ctx, head, state, plan.eventPending, {
    ...write,
    nonce,
    now: plan.now,
  });
  Object.assign(values, {
    ":att": S(head.attemptsJson ?? ""),
    ":upd_read": N(head.updatedAt),
    ":last_read": S(head.lastCompletedTaskId ?? ""),
  });
  if (write.lastCompletedTaskId === null) remove.push(`#${ATTR.lastCompleted}`);
  else {
    set.push(`#${ATTR.lastCompleted} = :last_new`);
    values[":last_new"] = S(write.lastCompletedTaskId);
  }
  if (plan.generation !== undefined) {
    set.push(`#${ATTR.generation} = :gen_new`);
    values[":gen_new"] = S(plan.generation);
  }
  valueClauses(HEAD_VALUE.header, plan.headerRef, set, remove, values);
  if (plan.inputRef !== undefined) valueClauses(HEAD_VALUE.input, plan.inputRef, set, remove, values);
  const condition = [
    `attribute_exists(#${ATTR.pk}) AND #${ATTR.generation} = :gen AND #${ATTR.status} = :P`,
    kindCondition(head.kind),
    nonceCondition(head.nonce),
    eventCountCondition(head.eventCount),
    attemptsCondition(head),
    `#${ATTR.updatedAt} = :upd_read`,
    head.lastCompletedTaskId === undefined
      ? `attribute_not_exists(#${ATTR.lastCompleted})`
      : `#${ATTR.lastCompleted} = :last_read`,
    indexCondition(head),
  ].join(" AND ");
  return {
    TableName: ctx.tableName,
    Key: ctx.layout.headKey(head.pk),
    ...expressions(
      { UpdateExpression: updateExpression(set, remove), ConditionExpression: condition },
      values,
    ),
  };
}

/** After a cancelled transaction: the head, the claim and the task's result item read again. */
async function refresh(ctx: Context, run: StepRun, reread: Reread): Promise<void> {
  const { item } = run;
  const { layout } = ctx;
  const sent = run.head;
  const found = await reread([item], new Map(sent === undefined ? [] : [[item.pk, sent.generation]]));
  item.claim = found.get(keyString(layout.claimKey(item.pk, item.c.taskId)));
  run.head = parseHead(layout, found.get(keyString(layout.headKey(item.pk))), item.c.instanceId);
  const result =
    sent === undefined || run.head?.generation !== sent.generation
      ? undefined
      : found.get(keyString(layout.resultKey(item.pk, sent.generation, item.c.taskId)));
  const ref = result === undefined ? undefined : readRef(result);
  item.prior = priorOf(ref);
  item.replacing = chunkSetOf(ref);
}

/** The claim was tombstoned by this very completion (a send whose reply was lost landed). */
function landedUnseen(run: StepRun): boolean {
  const claim = parseClaim(run.item.claim);
  return (
    claim?.token === run.item.c.token &&
    claim.workerId === undefined &&
    str(run.item.claim, ATTR.completedBy) === run.item.nonce
  );
}
