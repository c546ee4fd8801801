// What a span may say about an operation: identifiers, counts, tokens, names and times. Never
// bytes: outputs, inputs, event payloads and snapshot contents are not even looked at here, and
// error messages are left out (a driver's message may echo a value or a connection string).
import type { Attributes, AttributeValue } from "@opentelemetry/api";
import type { CompletionOutcome } from "../backend.js";

/** Attribute keys: OpenTelemetry's database conventions first, then Sayiir's own. */
export const ATTR = {
  dbSystem: "db.system.name",
  dbOperation: "db.operation.name",
  dbNamespace: "db.namespace",
  /** Set from 2 items on, as the conventions say (a batch of one is not a batch); sayiir.batch.size always. */
  dbBatchSize: "db.operation.batch.size",
  batchSize: "sayiir.batch.size",
  errorType: "error.type",
  instanceId: "sayiir.instance.id",
  taskId: "sayiir.task.id",
  workerId: "sayiir.worker.id",
  claimToken: "sayiir.claim.token",
  instanceIds: "sayiir.instance.ids",
  taskIds: "sayiir.task.ids",
  claimTokens: "sayiir.claim.tokens",
  claimTtlMs: "sayiir.claim.ttl_ms",
  claimAcquired: "sayiir.claim.acquired",
  workflowState: "sayiir.workflow.state",
  workflowPaused: "sayiir.workflow.paused",
  nextStep: "sayiir.next.kind",
  eventName: "sayiir.event.name",
  eventSequence: "sayiir.event.sequence",
  queues: "sayiir.queues",
  limit: "sayiir.limit",
  durationMs: "sayiir.duration_ms",
  timeoutMs: "sayiir.timeout_ms",
  finishedBefore: "sayiir.purge.finished_before",
  resultCount: "sayiir.result.count",
  resultFound: "sayiir.result.found",
  hasMore: "sayiir.page.has_more",
  batchAccepted: "sayiir.batch.accepted",
  batchRefused: "sayiir.batch.refused",
  wakeReason: "sayiir.wake.reason",
} as const;

/** Per refusal code, the count of refused items of a batch: `sayiir.batch.refused.claim_lost`. */
export function refusedKey(code: string): string {
  return `${ATTR.batchRefused}.${code.toLowerCase()}`;
}

/** Lists on a batch span stop here: the batch size says how many there were. */
export const MAX_LISTED = 64;
/** Ids are short by contract; a wrong argument must not put a large string on a span. */
const MAX_TEXT = 256;

/**
 * Attributes from raw arguments, which may be invalid (a validation error is traced too): only
 * strings, finite numbers and booleans are kept, strings cut short; anything else is dropped.
 */
export function attrs(entries: Record<string, unknown>): Attributes {
  const out: Attributes = {};
  for (const [key, value] of Object.entries(entries)) {
    const kept = keep(value);
    if (kept !== undefined) out[key] = kept;
  }
  return out;
}

function keep(value: unknown): AttributeValue | undefined {
  if (typeof value === "string") return value.slice(0, MAX_TEXT);
  if (typeof value === "number") return Number.isFinite(value) ? value : undefined;
  if (typeof value === "boolean") return value;
  if (Array.isArray(value)) {
    const strings = value.filter((v): v is string => typeof v === "string");
    const numbers = value.filter((v): v is number => typeof v === "number" && Number.isFinite(v));
    // Homogeneous arrays only, as OpenTelemetry asks; a mixed or empty list says nothing useful.
    if (strings.length > 0 && strings.length === value.length)
      return strings.slice(0, MAX_LISTED).map((s) => s.slice(0, MAX_TEXT));
    if (numbers.length > 0 && numbers.length === value.length) return numbers.slice(0, MAX_LISTED);
  }
  return undefined;
}

/** A property of an argument that may not be an object at all. */
export function field(value: unknown, key: string): unknown {
  return typeof value === "object" && value !== null ? (value as Record<string, unknown>)[key] : undefined;
}

/** The token of a fence argument: a TaskClaim, a Fence, or (saveTaskResult) a bare token. */
export function fenceToken(claim: unknown): unknown {
  return typeof claim === "number" ? claim : field(claim, "token");
}

/**
 * The identifiers of a batch's claims (completeTasks, failTasks, claimAvailableTasks' result):
 * one instance/task/worker id when the whole batch shares it (the common case of one worker),
 * else the lists; and every token, each list cut at MAX_LISTED.
 */
export function claimList(claims: readonly unknown[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  // Tokens are numbers: a list with anything else in it is not a list of tokens.
  const tokens = claims.map((c) => field(c, "token"));
  if (tokens.every((t) => typeof t === "number")) out[ATTR.claimTokens] = tokens;
  for (const [key, one, many] of [
    ["instanceId", ATTR.instanceId, ATTR.instanceIds],
    ["taskId", ATTR.taskId, ATTR.taskIds],
    ["workerId", ATTR.workerId, undefined],
  ] as const) {
    const values = claims.map((c) => field(c, key));
    const distinct = new Set(values);
    const [first] = distinct;
    if (distinct.size === 1) out[one] = first;
    else if (many !== undefined) out[many] = values;
  }
  return out;
}

/** Accepted and refused items of a batch, and the refused ones by error code. */
export function outcomeCounts(outcomes: readonly CompletionOutcome[]): Attributes {
  const out: Attributes = { [ATTR.batchAccepted]: 0, [ATTR.batchRefused]: 0 };
  for (const outcome of outcomes) {
    const key = outcome === null ? ATTR.batchAccepted : ATTR.batchRefused;
    out[key] = (out[key] as number) + 1;
    if (outcome !== null) {
      const byCode = refusedKey(outcome.code);
      out[byCode] = ((out[byCode] as number | undefined) ?? 0) + 1;
    }
  }
  return out;
}
