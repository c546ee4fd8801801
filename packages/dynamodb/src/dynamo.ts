import {
  type AttributeValue,
  BatchGetItemCommand,
  BatchWriteItemCommand,
  type DynamoDBClient,
  QueryCommand,
  type QueryCommandInput,
  type QueryCommandOutput,
  type WriteRequest,
} from "@aws-sdk/client-dynamodb";
import { toBytes } from "@sayiir/persistence-core";
import { backoffDelay, sleep } from "@sayiir/persistence-core/adapter";

export type Item = Record<string, AttributeValue>;
export type Key = Record<string, AttributeValue>;

export const S = (value: string): AttributeValue => ({ S: value });
export const N = (value: number): AttributeValue => ({ N: String(value) });
export const B = (value: Uint8Array): AttributeValue => ({ B: value });

export function str(item: Item | undefined, name: string): string | undefined {
  const v = item?.[name];
  return v !== undefined && "S" in v && typeof v.S === "string" ? v.S : undefined;
}

export function num(item: Item | undefined, name: string): number | undefined {
  const v = item?.[name];
  return v !== undefined && "N" in v && typeof v.N === "string" ? Number(v.N) : undefined;
}

export function bin(item: Item | undefined, name: string): Uint8Array | undefined {
  const v = item?.[name];
  if (v === undefined || !("B" in v) || !(v.B instanceof Uint8Array)) return undefined;
  return toBytes(v.B);
}

type ExpressionKind =
  | "ConditionExpression"
  | "UpdateExpression"
  | "KeyConditionExpression"
  | "ProjectionExpression"
  | "FilterExpression";

/** Any command of the DynamoDB client (typed loosely: the client's own overloads are too narrow). */
export type AnyCommand = object;

/**
 * ExpressionAttributeNames and Values for a set of expressions: every `#name` used maps to the
 * attribute `name` (so reserved words never bite), and only the values the expressions use are sent.
 */
export function expressions<E extends Partial<Record<ExpressionKind, string>>>(
  exprs: E,
  values: Record<string, AttributeValue> = {},
): E & {
  ExpressionAttributeNames?: Record<string, string>;
  ExpressionAttributeValues?: Record<string, AttributeValue>;
} {
  const text = Object.values(exprs).join(" ");
  const names: Record<string, string> = {};
  for (const match of text.matchAll(/#([A-Za-z0-9_]+)/g)) names[`#${match[1]}`] = match[1] as string;
  const used: Record<string, AttributeValue> = {};
  for (const match of text.matchAll(/:([A-Za-z0-9_]+)/g)) {
    const key = `:${match[1]}`;
    const value = values[key];
    if (value === undefined) throw new Error(`expression value ${key} is missing`);
    used[key] = value;
  }
  const out: E & {
    ExpressionAttributeNames?: Record<string, string>;
    ExpressionAttributeValues?: Record<string, AttributeValue>;
  } = { ...exprs };
  if (Object.keys(names).length > 0) out.ExpressionAttributeNames = names;
  if (Object.keys(used).length > 0) out.ExpressionAttributeValues = used;
  return out;
}

/** Full-jitter exponential backoff (the kit's backoffDelay) before re-sending a request. */
export function backoff(attempt: number, baseMs = 10, capMs = 400): Promise<void> {
  return sleep(backoffDelay(attempt, baseMs, capMs));
}

interface CancellationReason {
  Code?: string;
  Item?: Item;
}

export function cancellationReasons(error: unknown): CancellationReason[] | undefined {
  if (
    error === null ||
    typeof error !== "object" ||
    (error as { name?: unknown }).name !== "TransactionCanceledException"
  ) {
    return undefined;
  }
  return ((error as { CancellationReasons?: CancellationReason[] }).CancellationReasons ??
    []) as CancellationReason[];
}

/** A write refused only because it raced another transaction: safe to send again. */
export function isConflictOnly(error: unknown): boolean {
  if (
    error !== null &&
    typeof error === "object" &&
    (error as { name?: unknown }).name === "TransactionConflictException"
  ) {
    return true;
  }
  const reasons = cancellationReasons(error);
  if (reasons === undefined) return false;
  const codes = reasons.map((r) => r.Code ?? "None");
  return (
    codes.includes("TransactionConflict") && codes.every((c) => c === "None" || c === "TransactionConflict")
  );
}

export function isConditionFailed(error: unknown): error is { Item?: Item } {
  return (
    error !== null &&
    typeof error === "object" &&
    (error as { name?: unknown }).name === "ConditionalCheckFailedException"
  );
}

/** Sends a command (or builds a fresh one per attempt), re-sending it (bounded, with backoff) while it only lost a transaction conflict. */
export async function sendRetrying<T>(
  client: DynamoDBClient,
  command: AnyCommand | (() => AnyCommand),
  conflictRetries: number,
): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      const built = typeof command === "function" ? command() : command;
      return (await client.send(built as never)) as T;
    } catch (error) {
      if (attempt < conflictRetries && isConflictOnly(error)) {
        await backoff(attempt);
        continue;
      }
      throw error;
    }
  }
}

/** How a module sends one command (see Context.send: transaction conflicts are re-sent). */
export type Send = <T>(command: AnyCommand | (() => AnyCommand)) => Promise<T>;

/** Every item a query matches, page after page. */
export async function queryAll(send: Send, input: QueryCommandInput): Promise<Item[]> {
  const items: Item[] = [];
  let startKey: Record<string, AttributeValue> | undefined;
  do {
    const out = await send<QueryCommandOutput>(new QueryCommand({ ...input, ExclusiveStartKey: startKey }));
    items.push(...(out.Items ?? []));
    startKey = out.LastEvaluatedKey;
  } while (startKey !== undefined);
  return items;
}

/** Writes (puts or deletes) in batches of at most `perBatch`, re-sending unprocessed items. */
export async function batchWrite(
  client: DynamoDBClient,
  tableName: string,
  requests: WriteRequest[],
  perBatch = 25,
  parallel = 4,
): Promise<void> {
  const batches: WriteRequest[][] = [];
  for (let i = 0; i < requests.length; i += perBatch) batches.push(requests.slice(i, i + perBatch));
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < batches.length) {
      let pending: WriteRequest[] = batches[next++] as WriteRequest[];
      for (let attempt = 0; pending.length > 0; attempt++) {
        if (attempt > 0) await backoff(attempt, 20, 1000);
        if (attempt > 20)
          throw new Error(
            `BatchWriteItem left ${pending.length} items unprocessed after ${attempt} attempts`,
          );
        const out = await client.send(new BatchWriteItemCommand({ RequestItems: { [tableName]: pending } }));
        pending = out.UnprocessedItems?.[tableName] ?? [];
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(parallel, batches.length) }, worker));
}

/** Strongly consistent reads of many keys, in batches, re-sending unprocessed keys. Order is not kept. */
export async function batchGet(
  client: DynamoDBClient,
  tableName: string,
  keys: Key[],
  perBatch = 100,
  parallel = 4,
  projection?: { ProjectionExpression: string; ExpressionAttributeNames: Record<string, string> },
): Promise<Item[]> {
  const batches: Key[][] = [];
  for (let i = 0; i < keys.length; i += perBatch) batches.push(keys.slice(i, i + perBatch));
  const found: Item[] = [];
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < batches.length) {
      let pending: Key[] = batches[next++] as Key[];
      for (let attempt = 0; pending.length > 0; attempt++) {
        if (attempt > 0) await backoff(attempt, 20, 1000);
        if (attempt > 20)
          throw new Error(`BatchGetItem left ${pending.length} keys unprocessed after ${attempt} attempts`);
        const out = await client.send(
          new BatchGetItemCommand({
            RequestItems: { [tableName]: { Keys: pending, ConsistentRead: true, ...projection } },
          }),
        );
        found.push(...(out.Responses?.[tableName] ?? []));
        pending = (out.UnprocessedKeys?.[tableName]?.Keys ?? []) as Key[];
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(parallel, batches.length) }, worker));
  return found;
}
