/*
 * cancelWorkflow, pauseWorkflow and resumeWorkflow: one conditional update of the head each (the
 * kit's transitionHeader gives the new header and index fields without reading any output), in a
 * transaction when more items must change with it: cancel revokes every claim of the instance
 * (each claim's expiry set in the past, beyond the skew budget, its token kept), and a state
 * decided on a task having no result checks that it still has none.
 */
import {
  type AttributeValue,
  GetItemCommand,
  type TransactWriteItem,
  TransactWriteItemsCommand,
  UpdateItemCommand,
} from "@aws-sdk/client-dynamodb";
import { type ControlRequest, positionTaskId } from "@sayiir/persistence-core";
import {
  controlRefusal,
  fromStoredParts,
  RETRY,
  retryOnRace,
  type Transition,
  transitionHeader,
} from "@sayiir/persistence-core/adapter";
import { chunkSetOf, MissingChunkError, type ValueRef } from "./chunks.js";
import { MAX_TRANSACTION_ITEMS } from "./completion-plan.js";
import { type Context, quietly, quote, RACE_ATTEMPTS } from "./context.js";
import {
  B,
  cancellationReasons,
  expressions,
  type Item,
  isConditionFailed,
  isConflictOnly,
  type Key,
  N,
  S,
} from "./dynamo.js";
import { dropEvents, oldestEvents } from "./events.js";
import {
  type ClaimRef,
  claimItems,
  eventCountCondition,
  getHead,
  type Head,
  kindCondition,
  parseHead,
  statusOf,
} from "./items.js";
import { ATTR, freshId, HEAD_VALUE, names, STATUS, VALUE } from "./layout.js";
import {
  entryAttributes,
  entryOf,
  positionAttributes,
  replaceAttributes,
  updateExpression,
} from "./readiness.js";

const NO_REQUEST: Required<ControlRequest> = { reason: null, requestedBy: null };

export function cancelWorkflow(ctx: Context, instanceId: string, request: Required<ControlRequest>) {
  return transition(ctx, "cancel", instanceId, request);
}

export function pauseWorkflow(ctx: Context, instanceId: string, request: Required<ControlRequest>) {
  return transition(ctx, "pause", instanceId, request);
}

export function resumeWorkflow(ctx: Context, instanceId: string) {
  return transition(ctx, "resume", instanceId, NO_REQUEST);
}

/** What a transition learned besides the head, read before its write (in parallel). */
interface Facts {
  header: Uint8Array;
  /**
   * The initial input inside the header of a head written before it was stored on its own: the
   * new header leaves it out, so the update stores it as a value of its own.
   */
  legacyInput: Uint8Array | undefined;
  /** The position's task (AtTask, or the task after a wait), if any. */
  task: string | undefined;
  /** That task has a result (the write checks it still has none when false). */
  taskDone: boolean;
  /** cancel: the claims to revoke. */
  claims: ClaimRef[];
  /** resume: an event of the awaited name is pending. */
  eventPending: boolean;
}

/**
 * The transition, until it does not lose a race: the stored status judged by controlRefusal, the
 * facts read, the new header written (chunked if large), and the head's conditional update.
 * Afterwards, the replaced header's chunks and (cancel) the instance's events are dropped.
 */
async function transition(
  ctx: Context,
  op: Transition,
  instanceId: string,
  request: Required<ControlRequest>,
): Promise<void> {
  let head = await getHead(ctx, instanceId);
  const before = await retryOnRace(
    `${op}Workflow of ${quote(instanceId)}`,
    async () => {
      const refusal = controlRefusal(
        op,
        instanceId,
        head === undefined ? undefined : await statusOf(ctx, head),
      );
      if (refusal !== null) throw refusal;
      const current = head as Head;
      const facts = await readFacts(ctx, op, current);
      if (facts === undefined) {
        head = await getHead(ctx, instanceId);
        return RETRY;
      }
      const now = ctx.now();
      const next = transitionHeader(
        op,
        {
          instanceId,
          header: facts.header,
          lastCompletedTaskId: current.lastCompletedTaskId ?? null,
          hasResult: (taskId) => taskId === facts.task && facts.taskDone,
        },
        request,
        now,
      );
      const header = await ctx.chunks.write(next.header, current.pk);
      const input =
        facts.legacyInput === undefined ? undefined : await ctx.chunks.write(facts.legacyInput, current.pk);
      const lost = await commit(
        ctx,
        op,
        current,
        { ...next, headerRef: header, inputRef: input, now },
        facts,
      );
      if (lost === null) return current;
      const sets = [chunkSetOf(header), chunkSetOf(input)].filter((set) => set !== undefined);
      if (sets.length > 0) await quietly(() => ctx.chunks.delete(sets));
      head = lost.head;
      return RETRY;
    },
    { attempts: RACE_ATTEMPTS },
  );
  const replaced = chunkSetOf(before.header);
  if (replaced !== undefined) await quietly(() => ctx.chunks.delete([replaced]));
  if (op === "cancel") await dropEvents(ctx, before);
}

/**
 * The header, the position's task and whether it has a result, and what the operation needs
 * (cancel: the claims; resume: whether the awaited event is pending). undefined: the header's
 * chunks were replaced under the reader (read the head again).
 */
async function readFacts(ctx: Context, op: Transition, head: Head): Promise<Facts | undefined> {
  let header: Uint8Array;
  try {
    header = head.header === undefined ? new Uint8Array(0) : await ctx.chunks.read(head.header);
  } catch (error) {
    if (error instanceof MissingChunkError) return undefined;
    throw error;
  }
  const probe = fromStoredParts({
    instanceId: head.instanceId,
    header,
    initialInput: null,
    results: [],
    lastCompletedTaskId: null,
  });
  const state = probe.state;
  const position = state.kind === "InProgress" || state.kind === "Paused" ? state.position : undefined;
  const task = position === undefined ? undefined : (positionTaskId(position) ?? undefined);
  const awaited = position?.kind === "AwaitingEvent" ? position.eventName : undefined;
  const [taskDone, claims, events] = await Promise.all([
    op === "pause" || task === undefined ? false : hasResult(ctx, head, task),
    op === "cancel" ? claimItems(ctx, head.pk) : [],
    op === "resume" && awaited !== undefined ? oldestEvents(ctx, head, awaited) : [],
  ]);
  const legacyInput = head.input === undefined ? probe.initialInput : undefined;
  return { header, legacyInput, task, taskDone, claims, eventPending: events.length > 0 };
}

/** Does the head's generation hold a result for `taskId`? (The last completed task surely does.) */
async function hasResult(ctx: Context, head: Head, taskId: string): Promise<boolean> {
  if (taskId === head.lastCompletedTaskId) return true;
  const out = await ctx.send<{ Item?: Item }>(
    new GetItemCommand({
      TableName: ctx.tableName,
      Key: ctx.layout.resultKey(head.pk, head.generation, taskId),
      ConsistentRead: true,
      ...expressions({ ProjectionExpression: names(ATTR.pk) }),
    }),
  );
  return out.Item !== undefined;
}

/** The new state of the head, as transitionHeader gives it, with its header stored. */
type NextState = ReturnType<typeof transitionHeader> & {
  headerRef: ValueRef;
  /** The initial input taken out of a legacy header (see Facts.legacyInput). */
  inputRef: ValueRef | undefined;
  now: number;
};

/**
 * The head's update: status, header, updatedAt, position, wait and index entry (resume: the ready
 * partition, the timer index or none; pause and cancel: none). Conditioned on the head as read:
 * same generation and status (resume also: same event count, since it decided on the events).
 */
function transitionUpdate(ctx: Context, op: Transition, head: Head, next: NextState, facts: Facts) {
  const entry = entryOf(ctx.layout, head.instanceId, next, facts.eventPending);
  const moved = replaceAttributes({ ...positionAttributes(next), ...entryAttributes(entry) });
  const set = [
    `#${ATTR.kind} = :kind_new`,
    `#${ATTR.status} = :st`,
    `#${ATTR.updatedAt} = :upd`,
    ...moved.set,
  ];
  const remove = [...moved.remove];
  const values: Record<string, AttributeValue> = {
    ...moved.values,
    ":kind_new": S(next.status),
    ":st": S(next.finished ? STATUS.finished : STATUS.inProgress),
    ":upd": N(next.updatedAt),
    ":gen": S(head.generation),
    ":kind": S(head.kind ?? ""),
    ":P": S(STATUS.inProgress),
    ":evn": N(head.eventCount),
  };
  valueClauses(HEAD_VALUE.header, next.headerRef, set, remove, values);
  if (next.inputRef !== undefined) valueClauses(HEAD_VALUE.input, next.inputRef, set, remove, values);
  if (op === "cancel") remove.push(`#${ATTR.lastCompleted}`);
  const condition = [
    `attribute_exists(#${ATTR.pk}) AND #${ATTR.generation} = :gen AND #${ATTR.status} = :P`,
    kindCondition(head.kind),
    ...(op === "resume" ? [eventCountCondition(head.eventCount)] : []),
  ].join(" AND ");
  return {
    TableName: ctx.tableName,
    Key: ctx.layout.headKey(head.pk),
    ...expressions(
      { UpdateExpression: updateExpression(set, remove), ConditionExpression: condition },
      values,
    ),
    ReturnValuesOnConditionCheckFailure: "ALL_OLD" as const,
  };
}

/** SET a head value (the header, the initial input: inline or chunk pointer) and REMOVE the other form. */
function valueClauses(
  h: string,
  ref: ValueRef,
  set: string[],
  remove: string[],
  values: Record<string, AttributeValue>,
): void {
  const forms = [VALUE.inline, VALUE.chunkSet, VALUE.count, VALUE.length].map((v) => `${h}${v}`);
  const given =
    "inline" in ref
      ? { [`${h}${VALUE.inline}`]: B(ref.inline) }
      : {
          [`${h}${VALUE.chunkSet}`]: S(ref.chunkSetId),
          [`${h}${VALUE.count}`]: N(ref.count),
          [`${h}${VALUE.length}`]: N(ref.length),
        };
  for (const name of forms) {
    const value = given[name];
    if (value === undefined) remove.push(`#${name}`);
    else {
      set.push(`#${name} = :${name}`);
      values[`:${name}`] = value;
    }
  }
}

/** The claims cancel revokes: held, and not yet expired beyond the skew budget at `revokedAt`. */
function toRevoke(claims: ClaimRef[], revokedAt: number): ClaimRef[] {
  return claims.filter((c) => c.held && (c.expiresAt === undefined || c.expiresAt > revokedAt));
}

/** A held claim's revocation: its expiry set to `revokedAt`, on the token read. */
function revokeItem(ctx: Context, claim: ClaimRef, revokedAt: number) {
  return {
    TableName: ctx.tableName,
    Key: claim.key,
    ...expressions(
      {
        UpdateExpression: `SET #${ATTR.expiresAt} = :past`,
        ConditionExpression: `#${ATTR.token} = :tok AND attribute_exists(#${ATTR.worker})`,
      },
      { ":past": N(revokedAt), ":tok": N(claim.token) },
    ),
  };
}

/** The check that a task still has no result (what the new state was decided on). */
function noResultCheck(ctx: Context, head: Head, taskId: string): TransactWriteItem {
  const key: Key = ctx.layout.resultKey(head.pk, head.generation, taskId);
  return {
    ConditionCheck: {
      TableName: ctx.tableName,
      Key: key,
      ...expressions({ ConditionExpression: `attribute_not_exists(#${ATTR.pk})` }),
    },
  };
}

/**
 * Sends the transition. null: it landed; else the head as it now is (read again after a claim or
 * result race). Cancel revokes the claims in the same transaction; with more than fit one (98),
 * it revokes them first, one by one, then commits the head: a failure in between leaves claims
 * revoked and the workflow not cancelled, never the reverse.
 */
async function commit(
  ctx: Context,
  op: Transition,
  head: Head,
  next: NextState,
  facts: Facts,
): Promise<{ head: Head | undefined } | null> {
  const revokedAt = next.now - ctx.options.skewMs - 1;
  let claims = op === "cancel" ? toRevoke(facts.claims, revokedAt) : [];
  const extra: TransactWriteItem[] = [];
  if (op !== "pause" && facts.task !== undefined && !facts.taskDone)
    extra.push(noResultCheck(ctx, head, facts.task));
  if (claims.length > MAX_TRANSACTION_ITEMS - 2) {
    await revokeEach(ctx, claims, revokedAt);
    claims = [];
  }
  extra.push(...claims.map((c) => ({ Update: revokeItem(ctx, c, revokedAt) })));
  const update = transitionUpdate(ctx, op, head, next, facts);
  try {
    if (extra.length === 0) await ctx.send(new UpdateItemCommand(update));
    else {
      const items = [{ Update: update }, ...extra];
      await ctx.send(
        () => new TransactWriteItemsCommand({ ClientRequestToken: freshId(), TransactItems: items }),
      );
    }
    return null;
  } catch (error) {
    if (isConditionFailed(error)) return { head: parseHead(ctx.layout, error.Item, head.instanceId) };
    const reasons = cancellationReasons(error);
    if (reasons === undefined || isConflictOnly(error)) throw error;
    if (reasons[0]?.Code === "ConditionalCheckFailed")
      return { head: parseHead(ctx.layout, reasons[0].Item, head.instanceId) };
    // A claim was taken or released, or the task got its result, meanwhile: read again.
    if (reasons.some((r) => r.Code === "ConditionalCheckFailed" || r.Code === "TransactionConflict"))
      return { head: await getHead(ctx, head.instanceId) };
    throw error;
  }
}

/** Revokes claims one by one (more than a transaction holds); one released or taken meanwhile is skipped. */
async function revokeEach(ctx: Context, claims: ClaimRef[], revokedAt: number): Promise<void> {
  await Promise.all(
    claims.map((c) =>
      ctx.send(new UpdateItemCommand(revokeItem(ctx, c, revokedAt))).catch((error: unknown) => {
        if (!isConditionFailed(error)) throw error;
      }),
    ),
  );
}
