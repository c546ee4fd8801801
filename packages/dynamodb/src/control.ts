/*
 * cancelWorkflow, pauseWorkflow and resumeWorkflow: one conditional update of the head each (the
 * kit's transitionHeader gives the new header and index fields without reading any output), in a
 * transaction when more items must change with it: cancel revokes every claim of the instance
 * (each claim's expiry set to the epoch, its token kept) and checks that no claim was taken since
 * it read them, and a state decided on a task having no result checks that it still has none.
 * Each attempt writes a fresh nonce on the head and is conditioned on the nonce read: the head's
 * version (a save changes its generation), and how a resent request recognises its own write.
 */
import {
  type AttributeValue,
  GetItemCommand,
  type TransactWriteItem,
  TransactWriteItemsCommand,
  UpdateItemCommand,
} from "@aws-sdk/client-dynamodb";
import {
  type ControlRequest,
  DEFAULT_PRIORITY,
  DEFAULT_QUEUE,
  positionTaskId,
  scheduleOf,
} from "@sayiir/persistence-core";
import {
  controlRefusal,
  fromStoredParts,
  RETRY,
  REVOKED_EXPIRY,
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
  str,
} from "./dynamo.js";
import { dropEvents, oldestEvents } from "./events.js";
import {
  type ClaimRef,
  claimItems,
  eventCountCondition,
  getHead,
  type Head,
  kindCondition,
  nonceCondition,
  parseHead,
  statusOf,
} from "./items.js";
import { ATTR, freshId, HEAD_VALUE, keyString, names, STATUS, VALUE } from "./layout.js";
import {
  entryAttributes,
  entryOf,
  positionAttributes,
  replaceAttributes,
  type Schedule,
  scheduleOfTask,
  updateExpression,
} from "./readiness.js";
import { finishClauses } from "./retention.js";

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
  /**
   * The schedule of the position's task, from the header and the head's attempts (a paused head
   * carries none of its own: resume places the task by this).
   */
  schedule: Schedule;
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
        { ...next, headerRef: header, inputRef: input, now, nonce: freshId() },
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
  const schedule = scheduleOfTask(
    position === undefined
      ? { runAt: null, priority: DEFAULT_PRIORITY, queue: DEFAULT_QUEUE }
      : scheduleOf(position),
    head.attempts,
    task ?? null,
  );
  return { header, legacyInput, task, taskDone, claims, eventPending: events.length > 0, schedule };
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
  /** Fresh per attempt: written on the head, it tells a resent request that the write landed. */
  nonce: string;
};

/**
 * The head's update: status, header, updatedAt, position, wait, index entry (resume: the ready
 * partition, the timer index or none; pause and cancel: none) and the attempt's nonce.
 * Conditioned on the head as read: same generation, nonce and status (resume also: same event
 * count, since it decided on the events; cancel also: same index keys, which claim-next moves).
 */
function transitionUpdate(ctx: Context, op: Transition, head: Head, next: NextState, facts: Facts) {
  const state = { ...next, ...facts.schedule };
  const { set, remove, values } = stateRewrite(ctx, head, state, facts.eventPending, next);
  valueClauses(HEAD_VALUE.header, next.headerRef, set, remove, values);
  if (next.inputRef !== undefined) valueClauses(HEAD_VALUE.input, next.inputRef, set, remove, values);
  if (op === "cancel") remove.push(`#${ATTR.lastCompleted}`);
  const condition = [
    `attribute_exists(#${ATTR.pk}) AND #${ATTR.generation} = :gen AND #${ATTR.status} = :P`,
    kindCondition(head.kind),
    nonceCondition(head.nonce),
    ...(op === "resume" ? [eventCountCondition(head.eventCount)] : []),
    ...(op === "cancel" ? [indexCondition(head)] : []),
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

/** The condition that the head's index keys (GPK, GSK, TSK) are still as read. */
export function indexCondition(head: Head): string {
  const { readyPk, timerSk } = head.indexKeys;
  return [
    readyPk === undefined
      ? `attribute_not_exists(#${ATTR.readyPk})`
      : `#${ATTR.readyPk} = :gpk_read AND #${ATTR.readySk} = :gsk_read`,
    timerSk === undefined ? `attribute_not_exists(#${ATTR.timerSk})` : `#${ATTR.timerSk} = :tsk_read`,
  ].join(" AND ");
}

/**
 * The head's rewrite to a new state (a control transition, a step): its status, updatedAt and
 * version (nc), its position, wait and schedule attributes and its index entry, with the values
 * of the conditions every such write checks (generation, status, kind, version, event count, the
 * index keys as read). The caller adds its own clauses and builds the condition.
 */
export function stateRewrite(
  ctx: Context,
  head: Head,
  state: Parameters<typeof positionAttributes>[0] & Parameters<typeof entryOf>[2],
  eventPending: boolean,
  written: { status: string; finished: boolean; updatedAt: number; nonce: string; now: number },
): { set: string[]; remove: string[]; values: Record<string, AttributeValue> } {
  const entry = entryOf(ctx.layout, head.instanceId, state, eventPending, written.now);
  const moved = replaceAttributes({ ...positionAttributes(state), ...entryAttributes(entry) });
  // Every caller conditions on an in-progress head: a finishing rewrite is the first finish.
  const finish = written.finished
    ? finishClauses(ctx.layout, head.instanceId, written.now)
    : { set: [], values: {} };
  return {
    set: [
      `#${ATTR.kind} = :kind_new`,
      `#${ATTR.status} = :st`,
      `#${ATTR.updatedAt} = :upd_new`,
      `#${ATTR.nonce} = :nc`,
      ...moved.set,
      ...finish.set,
    ],
    remove: [...moved.remove],
    values: {
      ...moved.values,
      ...finish.values,
      ...indexValues(head),
      ":kind_new": S(written.status),
      ":st": S(written.finished ? STATUS.finished : STATUS.inProgress),
      ":upd_new": N(written.updatedAt),
      ":nc": S(written.nonce),
      ":gen": S(head.generation),
      ":nc_read": S(head.nonce ?? ""),
      ":kind": S(head.kind ?? ""),
      ":P": S(STATUS.inProgress),
      ":evn": N(head.eventCount),
    },
  };
}

export function indexValues(head: Head): Record<string, AttributeValue> {
  const { readyPk, readySk, timerSk } = head.indexKeys;
  return {
    ":gpk_read": S(readyPk ?? ""),
    ":gsk_read": S(readySk ?? ""),
    ":tsk_read": S(timerSk ?? ""),
  };
}

/** SET a head value (the header, the initial input: inline or chunk pointer) and REMOVE the other form. */
export function valueClauses(
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

/** The claims cancel revokes: held, and not revoked yet. */
function toRevoke(claims: ClaimRef[]): ClaimRef[] {
  return claims.filter((c) => c.held && (c.expiresAt === undefined || c.expiresAt > REVOKED_EXPIRY));
}

/** A held claim's revocation: its expiry set to the epoch (REVOKED_EXPIRY), on the token read. */
function revokeItem(ctx: Context, claim: ClaimRef) {
  return {
    TableName: ctx.tableName,
    Key: claim.key,
    ...expressions(
      {
        UpdateExpression: `SET #${ATTR.expiresAt} = :revoked`,
        ConditionExpression: `#${ATTR.token} = :tok AND attribute_exists(#${ATTR.worker})`,
      },
      { ":revoked": N(REVOKED_EXPIRY), ":tok": N(claim.token) },
    ),
  };
}

/** The check that a claim item read still holds the token read (no claim was taken over it). */
function tokenCheck(ctx: Context, claim: ClaimRef): TransactWriteItem {
  return {
    ConditionCheck: {
      TableName: ctx.tableName,
      Key: claim.key,
      ...expressions({ ConditionExpression: `#${ATTR.token} = :tok` }, { ":tok": N(claim.token) }),
    },
  };
}

/** The check that an item (a task's result, a claim) read as absent is still absent. */
export function absentCheck(ctx: Context, key: Key): TransactWriteItem {
  return {
    ConditionCheck: {
      TableName: ctx.tableName,
      Key: key,
      ...expressions({ ConditionExpression: `attribute_not_exists(#${ATTR.pk})` }),
    },
  };
}

/**
 * The claim items of a cancel's transaction, at most `room`: each held claim's revocation (on the
 * token read) and checks that no claim was taken since the read: the position task's claim item
 * first (absent, or the token read: claim-next and claimTask of that task), then the other items
 * read (tombstones: the token read) while there is room. Revocations that do not fit are done
 * first, one by one (a failure in between leaves claims revoked and the workflow not cancelled,
 * never the reverse), and their items are then checked like the others. What no check covers: a
 * claim item created since the read for another task than the position's (see the README).
 */
async function claimWrites(ctx: Context, head: Head, facts: Facts, room: number) {
  const position = facts.task === undefined ? undefined : ctx.layout.claimKey(head.pk, facts.task);
  const isPosition = (c: ClaimRef) => position !== undefined && keyString(c.key) === keyString(position);
  let revoke = toRevoke(facts.claims);
  const positionNeedsCheck = position !== undefined && !revoke.some(isPosition);
  if (revoke.length + (positionNeedsCheck ? 1 : 0) > room) {
    await revokeEach(ctx, revoke);
    revoke = [];
  }
  const items: TransactWriteItem[] = revoke.map((c) => ({ Update: revokeItem(ctx, c) }));
  if (position !== undefined && !facts.claims.some(isPosition)) items.push(absentCheck(ctx, position));
  const rest = facts.claims.filter((c) => !revoke.includes(c));
  for (const c of [...rest.filter(isPosition), ...rest.filter((c) => !isPosition(c))]) {
    if (items.length >= room) break;
    items.push(tokenCheck(ctx, c));
  }
  return items;
}

/**
 * Sends the transition. null: it landed (or an earlier send of this attempt did: the head carries
 * its nonce); else the head as it now is (read again after a claim or result race).
 */
async function commit(
  ctx: Context,
  op: Transition,
  head: Head,
  next: NextState,
  facts: Facts,
): Promise<{ head: Head | undefined } | null> {
  const extra: TransactWriteItem[] = [];
  if (op !== "pause" && facts.task !== undefined && !facts.taskDone)
    extra.push(absentCheck(ctx, ctx.layout.resultKey(head.pk, head.generation, facts.task)));
  if (op === "cancel") extra.push(...(await claimWrites(ctx, head, facts, MAX_TRANSACTION_ITEMS - 2)));
  const update = transitionUpdate(ctx, op, head, next, facts);
  const found = (item: Item | undefined) =>
    str(item, ATTR.nonce) === next.nonce ? null : { head: parseHead(ctx.layout, item, head.instanceId) };
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
    if (isConditionFailed(error)) return found(error.Item);
    const reasons = cancellationReasons(error);
    if (reasons === undefined || isConflictOnly(error)) throw error;
    if (reasons[0]?.Code === "ConditionalCheckFailed") return found(reasons[0].Item);
    // A claim was taken or released, or the task got its result, meanwhile: read again.
    if (reasons.some((r) => r.Code === "ConditionalCheckFailed" || r.Code === "TransactionConflict"))
      return { head: await getHead(ctx, head.instanceId) };
    throw error;
  }
}

/** Revokes claims one by one (more than a transaction holds); one released or taken meanwhile is skipped. */
async function revokeEach(ctx: Context, claims: ClaimRef[]): Promise<void> {
  await Promise.all(
    claims.map((c) =>
      ctx.send(new UpdateItemCommand(revokeItem(ctx, c))).catch((error: unknown) => {
        if (!isConditionFailed(error)) throw error;
      }),
    ),
  );
}
