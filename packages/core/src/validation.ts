import type { EventRef, Fence } from "./claims.js";
import { PayloadTooLargeError, ValidationError } from "./errors.js";
import {
  type ControlRequest,
  DEFAULT_QUEUE,
  type ExecutionPosition,
  type NextStep,
  setCompletedTask,
  type TaskAttempts,
  type TaskResult,
  type TaskSchedule,
  type WorkflowSnapshot,
  type WorkflowState,
} from "./snapshot.js";

/** Longest accepted id, in UTF-16 code units (JavaScript string length). */
export const MAX_ID_LENGTH = 512;
/** Largest `limit` accepted by discovery and claim-next. */
export const MAX_LIMIT = 10_000;
/** Longest accepted ttl or extension: one year, so that now + duration stays a safe integer everywhere. */
export const MAX_DURATION_MS = 365 * 24 * 60 * 60 * 1000;
/** Default largest single byte value (task output, initial input, final output, error text, event payload). */
export const DEFAULT_MAX_PAYLOAD_BYTES = 32 * 1024 * 1024;
/** Longest accepted cancel/pause reason or requester, in UTF-16 code units. */
export const MAX_CONTROL_TEXT_LENGTH = 4096;

function describe(value: unknown): string {
  if (typeof value === "string") return `a string of length ${value.length}`;
  if (value === null) return "null";
  return typeof value;
}

/**
 * Ids are non-empty, at most 512 UTF-16 code units, well-formed Unicode (no lone surrogate,
 * which no UTF-8 database can store) and free of U+0000 (which C-string based servers truncate at).
 */
export function validateId(
  kind: "instanceId" | "taskId" | "workerId" | "definitionHash" | "eventName" | "queue",
  value: unknown,
): string {
  if (typeof value !== "string")
    throw new ValidationError(`${kind} must be a string, got ${describe(value)}`);
  if (value.length === 0) throw new ValidationError(`${kind} must not be empty`);
  if (value.length > MAX_ID_LENGTH) {
    throw new ValidationError(`${kind} must be at most ${MAX_ID_LENGTH} characters, got ${value.length}`);
  }
  if (value.includes("\u0000")) throw new ValidationError(`${kind} must not contain U+0000`);
  if (!value.isWellFormed())
    throw new ValidationError(`${kind} must be well-formed Unicode (no lone surrogates)`);
  return value;
}

export function validateLimit(value: unknown): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < 1 || value > MAX_LIMIT) {
    throw new ValidationError(`limit must be an integer from 1 to ${MAX_LIMIT}, got ${String(value)}`);
  }
  return value;
}

/** purgeFinished's options: an epoch-ms cut-off and a limit, checked before any I/O. */
export function validatePurgeOptions(value: unknown): { finishedBefore: number; limit: number } {
  if (typeof value !== "object" || value === null) {
    throw new ValidationError("purgeFinished needs { finishedBefore, limit }");
  }
  const options = value as Record<string, unknown>;
  const finishedBefore = validateTimestamp("finishedBefore", options.finishedBefore);
  const limit = validateLimit(options.limit);
  return { finishedBefore, limit };
}

export function validateDuration(name: string, value: unknown): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < 1 || value > MAX_DURATION_MS) {
    throw new ValidationError(
      `${name} must be an integer number of milliseconds from 1 to ${MAX_DURATION_MS}`,
    );
  }
  return value;
}

/** A ttl is optional: undefined or null mean "never expires". */
export function validateTtl(value: unknown): number | null {
  if (value === undefined || value === null) return null;
  return validateDuration("ttlMs", value);
}

export function validateBytes(name: string, value: unknown, maxPayloadBytes: number): Uint8Array {
  if (!(value instanceof Uint8Array))
    throw new ValidationError(`${name} must be a Uint8Array, got ${describe(value)}`);
  if (value.byteLength > maxPayloadBytes) {
    throw new PayloadTooLargeError(`${name} is ${value.byteLength} bytes; the maximum is ${maxPayloadBytes}`);
  }
  return value;
}

export function validateMaxPayloadBytes(value: unknown): number {
  if (value === undefined) return DEFAULT_MAX_PAYLOAD_BYTES;
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 1) {
    throw new ValidationError("maxPayloadBytes must be a positive integer");
  }
  return value;
}

function validateTimestamp(name: string, value: unknown): number {
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 0) {
    throw new ValidationError(`${name} must be a non-negative integer (epoch milliseconds)`);
  }
  return value;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return (
    typeof value === "object" && value !== null && !Array.isArray(value) && !(value instanceof Uint8Array)
  );
}

function validateBranches(name: string, value: unknown): string[] {
  if (!Array.isArray(value)) throw new ValidationError(`${name} must be an array of ids`);
  return value.map((id) => validateId("taskId", id));
}

/** A priority: an integer from 1 (first) to 5 (last). */
export function validatePriority(value: unknown): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < 1 || value > 5) {
    throw new ValidationError(`priority must be an integer from 1 (first) to 5 (last), got ${String(value)}`);
  }
  return value;
}

/** The optional schedule fields of a position; only those given are kept (exact round trips). */
function validateSchedule(value: Record<string, unknown>, withRunAt: boolean): TaskSchedule {
  const schedule: TaskSchedule = {};
  if (withRunAt && value.runAt !== undefined)
    schedule.runAt = validateTimestamp("position.runAt", value.runAt);
  if (!withRunAt && value.runAt !== undefined) {
    throw new ValidationError("an AwaitingEvent position has timeoutAt, not runAt");
  }
  if (value.priority !== undefined) schedule.priority = validatePriority(value.priority);
  if (value.queue !== undefined) schedule.queue = validateId("queue", value.queue);
  return schedule;
}

/** The queues a discovery call serves: 1 to 100 queue names, default ["default"]. */
export function validateQueues(options: unknown): string[] {
  if (options === undefined || options === null) return [DEFAULT_QUEUE];
  if (!isPlainObject(options)) throw new ValidationError("options must be { queues? }");
  const queues = options.queues;
  if (queues === undefined) return [DEFAULT_QUEUE];
  if (!Array.isArray(queues) || queues.length === 0 || queues.length > 100) {
    throw new ValidationError("queues must be an array of 1 to 100 queue names");
  }
  return [...new Set(queues.map((q) => validateId("queue", q)))];
}

/** The longest a single waitForTasks may wait (an hour); a worker loops for longer. */
export const MAX_WAIT_MS = 3_600_000;

export interface ValidWait {
  queues: string[];
  timeoutMs: number;
  signal: AbortSignal | undefined;
}

/** waitForTasks' options: `timeoutMs` 0 to MAX_WAIT_MS, queues as for discovery, an optional AbortSignal. */
export function validateWaitOptions(options: unknown): ValidWait {
  if (!isPlainObject(options)) {
    throw new ValidationError(`waitForTasks needs { timeoutMs, queues?, signal? }, got ${describe(options)}`);
  }
  const { timeoutMs, signal } = options;
  if (
    typeof timeoutMs !== "number" ||
    !Number.isInteger(timeoutMs) ||
    timeoutMs < 0 ||
    timeoutMs > MAX_WAIT_MS
  ) {
    throw new ValidationError(`timeoutMs must be an integer number of milliseconds from 0 to ${MAX_WAIT_MS}`);
  }
  if (signal !== undefined && !(signal instanceof AbortSignal)) {
    throw new ValidationError(`signal must be an AbortSignal, got ${describe(signal)}`);
  }
  return { queues: validateQueues({ queues: options.queues }), timeoutMs, signal };
}

function validatePosition(value: unknown): ExecutionPosition {
  if (!isPlainObject(value)) throw new ValidationError("state.position must be an object");
  switch (value.kind) {
    case "NotStarted":
      return { kind: "NotStarted" };
    case "AtTask":
      return {
        kind: "AtTask",
        taskId: validateId("taskId", value.taskId),
        ...validateSchedule(value, true),
      };
    case "AtFork":
      return {
        kind: "AtFork",
        branchId: validateId("taskId", value.branchId),
        completedBranches: validateBranches("completedBranches", value.completedBranches),
      };
    case "AtJoin":
      return {
        kind: "AtJoin",
        joinId: validateId("taskId", value.joinId),
        completedBranches: validateBranches("completedBranches", value.completedBranches),
      };
    case "AwaitingEvent":
      return {
        kind: "AwaitingEvent",
        eventName: validateId("eventName", value.eventName),
        nextTaskId: validateId("taskId", value.nextTaskId),
        timeoutAt:
          value.timeoutAt === undefined || value.timeoutAt === null
            ? null
            : validateTimestamp("position.timeoutAt", value.timeoutAt),
        ...validateSchedule(value, false),
      };
    default:
      throw new ValidationError(`unknown position kind ${JSON.stringify(String(value.kind))}`);
  }
}

/**
 * Checks a snapshot from a possibly untyped caller and returns a normalised copy (plain
 * Uint8Arrays, no extra fields). Throws ValidationError or PayloadTooLargeError; never does I/O.
 */
export function validateSnapshot(value: unknown, maxPayloadBytes: number): WorkflowSnapshot {
  if (!isPlainObject(value)) throw new ValidationError("snapshot must be an object");
  const instanceId = validateId("instanceId", value.instanceId);
  if (typeof value.definitionHash !== "string") throw new ValidationError("definitionHash must be a string");
  if (
    value.definitionHash.length > 4096 ||
    !value.definitionHash.isWellFormed() ||
    value.definitionHash.includes("\u0000")
  ) {
    // U+0000 is refused for the same reason as in ids: text columns of several databases can't hold it.
    throw new ValidationError(
      "definitionHash must be well-formed, without U+0000, and at most 4096 characters",
    );
  }
  const createdAt = validateTimestamp("createdAt", value.createdAt);
  const updatedAt = validateTimestamp("updatedAt", value.updatedAt);
  const snapshot: WorkflowSnapshot = {
    instanceId,
    definitionHash: value.definitionHash,
    createdAt,
    updatedAt,
    state: { kind: "Failed", error: "" }, // replaced below, once the state is checked
  };
  if (value.initialInput !== undefined) {
    snapshot.initialInput = toPlain(validateBytes("initialInput", value.initialInput, maxPayloadBytes));
  }
  snapshot.state = validateState(value.state, maxPayloadBytes);
  if (value.attempts !== undefined) snapshot.attempts = validateAttempts(value.attempts, maxPayloadBytes);
  return snapshot;
}

function validateErrorText(name: string, value: unknown, maxPayloadBytes: number): string {
  if (typeof value !== "string") throw new ValidationError(`${name} must be a string`);
  if (!value.isWellFormed()) throw new ValidationError(`${name} must be well-formed Unicode`);
  if (Buffer.byteLength(value) > maxPayloadBytes) {
    throw new PayloadTooLargeError(`${name} is longer than ${maxPayloadBytes} bytes`);
  }
  return value;
}

/** The attempts of a snapshot: per task id, { count >= 0, lastError, lastFailedAt, retryAt? }. */
function validateAttempts(value: unknown, maxPayloadBytes: number): Record<string, TaskAttempts> {
  if (!isPlainObject(value)) throw new ValidationError("attempts must be an object of task ids");
  const out: Record<string, TaskAttempts> = {};
  for (const [taskId, a] of Object.entries(value)) {
    validateId("taskId", taskId);
    if (!isPlainObject(a)) throw new ValidationError(`attempts[${JSON.stringify(taskId)}] must be an object`);
    if (typeof a.count !== "number" || !Number.isSafeInteger(a.count) || a.count < 0) {
      throw new ValidationError(`attempts[${JSON.stringify(taskId)}].count must be a non-negative integer`);
    }
    const entry: TaskAttempts = {
      count: a.count,
      lastError:
        a.lastError === null || a.lastError === undefined
          ? null
          : validateErrorText("lastError", a.lastError, maxPayloadBytes),
      lastFailedAt:
        a.lastFailedAt === null || a.lastFailedAt === undefined
          ? null
          : validateTimestamp("lastFailedAt", a.lastFailedAt),
    };
    if (a.retryAt !== undefined)
      entry.retryAt = a.retryAt === null ? null : validateTimestamp("retryAt", a.retryAt);
    Object.defineProperty(out, taskId, {
      value: entry,
      enumerable: true,
      writable: true,
      configurable: true,
    });
  }
  return out;
}

function validateCompletedTasks(value: unknown, maxPayloadBytes: number): Record<string, TaskResult> {
  if (!isPlainObject(value)) throw new ValidationError("state.completedTasks must be an object");
  const completedTasks: Record<string, TaskResult> = {};
  for (const [key, result] of Object.entries(value)) {
    validateId("taskId", key);
    if (!isPlainObject(result))
      throw new ValidationError(`completedTasks[${JSON.stringify(key)}] must be an object`);
    if (result.taskId !== key) {
      throw new ValidationError(`completedTasks[${JSON.stringify(key)}].taskId must equal its key`);
    }
    setCompletedTask(completedTasks, {
      taskId: key,
      output: toPlain(validateBytes(`output of task ${key}`, result.output, maxPayloadBytes)),
    });
  }
  return completedTasks;
}

function validateLast(value: unknown, completedTasks: Record<string, TaskResult>): string | null {
  if (value === undefined || value === null) return null;
  const last = validateId("taskId", value);
  if (!Object.hasOwn(completedTasks, last)) {
    throw new ValidationError("lastCompletedTaskId must name a task in completedTasks");
  }
  return last;
}

/** A cancel/pause reason or requester: absent (null) or well-formed text without U+0000, at most 4,096 characters. */
export function validateControlText(name: string, value: unknown): string | null {
  if (value === undefined || value === null) return null;
  if (typeof value !== "string")
    throw new ValidationError(`${name} must be a string or null, got ${describe(value)}`);
  if (value.length > MAX_CONTROL_TEXT_LENGTH || !value.isWellFormed() || value.includes("\u0000")) {
    throw new ValidationError(
      `${name} must be well-formed, without U+0000, and at most ${MAX_CONTROL_TEXT_LENGTH} characters`,
    );
  }
  return value;
}

/** The `{ reason, requestedBy }` of cancelWorkflow and pauseWorkflow. */
export function validateControlRequest(value: unknown): {
  reason: string | null;
  requestedBy: string | null;
} {
  if (value === undefined || value === null) return { reason: null, requestedBy: null };
  if (!isPlainObject(value)) throw new ValidationError("the request must be { reason?, requestedBy? }");
  const request = value as ControlRequest;
  return {
    reason: validateControlText("reason", request.reason),
    requestedBy: validateControlText("requestedBy", request.requestedBy),
  };
}

/** The `consumeEvent` of a write: an event name and a positive sequence. */
export function validateEventRef(value: unknown): EventRef {
  if (!isPlainObject(value)) throw new ValidationError("consumeEvent must be { eventName, sequence }");
  const eventName = validateId("eventName", value.eventName);
  if (typeof value.sequence !== "number" || !Number.isSafeInteger(value.sequence) || value.sequence < 1) {
    throw new ValidationError("consumeEvent.sequence must be a positive safe integer");
  }
  return { eventName, sequence: value.sequence };
}

function validateState(state: unknown, maxPayloadBytes: number): WorkflowState {
  if (!isPlainObject(state)) throw new ValidationError("state must be an object");
  switch (state.kind) {
    case "Completed":
      return {
        kind: "Completed",
        finalOutput: toPlain(validateBytes("finalOutput", state.finalOutput, maxPayloadBytes)),
      };
    case "Failed":
      return { kind: "Failed", error: validateErrorText("state.error", state.error, maxPayloadBytes) };
    case "InProgress": {
      const position = validatePosition(state.position);
      const completedTasks = validateCompletedTasks(state.completedTasks, maxPayloadBytes);
      const lastCompletedTaskId = validateLast(state.lastCompletedTaskId, completedTasks);
      return { kind: "InProgress", position, completedTasks, lastCompletedTaskId };
    }
    case "Paused": {
      const position = validatePosition(state.position);
      const completedTasks = validateCompletedTasks(state.completedTasks, maxPayloadBytes);
      return {
        kind: "Paused",
        reason: validateControlText("state.reason", state.reason),
        requestedBy: validateControlText("state.requestedBy", state.requestedBy),
        pausedAt: validateTimestamp("state.pausedAt", state.pausedAt),
        position,
        completedTasks,
        lastCompletedTaskId: validateLast(state.lastCompletedTaskId, completedTasks),
      };
    }
    case "Cancelled":
      return {
        kind: "Cancelled",
        reason: validateControlText("state.reason", state.reason),
        requestedBy: validateControlText("state.requestedBy", state.requestedBy),
        cancelledAt: validateTimestamp("state.cancelledAt", state.cancelledAt),
        completedTasks: validateCompletedTasks(state.completedTasks, maxPayloadBytes),
        interruptedAtTaskId:
          state.interruptedAtTaskId === undefined || state.interruptedAtTaskId === null
            ? null
            : validateId("taskId", state.interruptedAtTaskId),
      };
    default:
      throw new ValidationError(`unknown state kind ${JSON.stringify(String(state.kind))}`);
  }
}

function toPlain(bytes: Uint8Array): Uint8Array {
  return Object.getPrototypeOf(bytes) === Uint8Array.prototype
    ? bytes
    : new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Normalises the `claim` write option: a TaskClaim or a { taskId, token } fence. */
export function validateFence(value: unknown, instanceId: string, defaultTaskId?: string): Fence | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value === "number") {
    if (defaultTaskId === undefined) {
      throw new ValidationError(
        "a bare token needs a task id: pass { claim } with its taskId for saveSnapshot",
      );
    }
    return { taskId: defaultTaskId, token: validateToken(value) };
  }
  if (!isPlainObject(value)) throw new ValidationError("claim must be a TaskClaim or { taskId, token }");
  const taskId = validateId("taskId", value.taskId ?? defaultTaskId);
  if (value.instanceId !== undefined && value.instanceId !== instanceId) {
    throw new ValidationError("the claim belongs to another instance than the one being written");
  }
  if (defaultTaskId !== undefined && taskId !== defaultTaskId) {
    throw new ValidationError("the claim is for another task than the result being saved");
  }
  return { taskId, token: validateToken(value.token), instanceId };
}

function validateToken(value: unknown): number {
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 1) {
    throw new ValidationError("claim token must be a positive safe integer");
  }
  return value;
}

/**
 * Orders ids by Unicode code point, which is also UTF-8 byte order: the order Postgres ("C"),
 * SQLite (BINARY), MongoDB and Redis (ZRANGE BYLEX) give. JavaScript's `<` compares UTF-16 code
 * units instead, which puts U+E000–U+FFFF after characters beyond U+FFFF, so a backend that
 * merges shards in JavaScript must use this.
 */
export function compareIds(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x !== y) return codePointRank(x) - codePointRank(y);
  }
  return a.length - b.length;
}

// Surrogates (U+D800–U+DFFF) start characters above U+FFFF, so they rank after U+E000–U+FFFF.
function codePointRank(unit: number): number {
  if (unit >= 0xd800 && unit <= 0xdfff) return unit + 0x2000;
  if (unit >= 0xe000) return unit - 0x800;
  return unit;
}

/** A completion after validation: plain ids, a checked token and a plain Uint8Array output. */
export interface ValidCompletion {
  instanceId: string;
  taskId: string;
  workerId: string;
  token: number;
  output: Uint8Array;
  /** Where the workflow goes in the same step (absent: the result only). */
  next?: NextStep;
  /** Only with `next`: the event the task ran on, consumed in the same step. */
  consumeEvent?: EventRef;
}

/** A completion's `next`: a position (validated like a snapshot's), or Completed / Failed. */
function validateNext(index: number, value: unknown, maxPayloadBytes: number): NextStep {
  if (!isPlainObject(value)) {
    throw new ValidationError(`completions[${index}].next must be a position, Completed or Failed`);
  }
  if (value.kind === "Completed" || value.kind === "Failed") {
    return validateState(value, maxPayloadBytes) as NextStep;
  }
  return validatePosition(value);
}

/**
 * Validates a completeTasks batch as a whole, so that a bad item refuses the call before any I/O:
 * at most MAX_LIMIT items, each with a claim of valid ids and token, and no task twice (two
 * completions of one task in one call would make its outcome depend on their order).
 */
export function validateCompletions(value: unknown, maxPayloadBytes: number): ValidCompletion[] {
  if (!Array.isArray(value))
    throw new ValidationError(`completions must be an array, got ${describe(value)}`);
  if (value.length > MAX_LIMIT) {
    throw new ValidationError(`at most ${MAX_LIMIT} completions per call, got ${value.length}`);
  }
  const seen = new Set<string>();
  return value.map((item: unknown, index): ValidCompletion => {
    if (!isPlainObject(item)) throw new ValidationError(`completions[${index}] must be { claim, output }`);
    const claim = item.claim;
    if (!isPlainObject(claim)) {
      throw new ValidationError(`completions[${index}].claim must be the TaskClaim of the task`);
    }
    const instanceId = validateId("instanceId", claim.instanceId);
    const taskId = validateId("taskId", claim.taskId);
    const workerId = validateId("workerId", claim.workerId);
    const token = validateToken(claim.token);
    const output = toPlain(validateBytes(`completions[${index}].output`, item.output, maxPayloadBytes));
    // JSON of the pair cannot collide the way "a:b" + "c" and "a" + "b:c" would.
    const key = JSON.stringify([instanceId, taskId]);
    if (seen.has(key)) {
      throw new ValidationError(
        `completions[${index}] repeats task ${JSON.stringify(taskId)} of ${JSON.stringify(instanceId)}`,
      );
    }
    seen.add(key);
    const valid: ValidCompletion = { instanceId, taskId, workerId, token, output };
    if (item.next !== undefined) valid.next = validateNext(index, item.next, maxPayloadBytes);
    if (item.consumeEvent !== undefined) {
      if (valid.next === undefined) {
        throw new ValidationError(
          `completions[${index}].consumeEvent needs a next step (it moves the workflow on)`,
        );
      }
      valid.consumeEvent = validateEventRef(item.consumeEvent);
    }
    return valid;
  });
}

/** A failure after validation: plain ids, a checked token, the error text and the retry time. */
export interface ValidFailure {
  instanceId: string;
  taskId: string;
  workerId: string;
  token: number;
  error: string;
  retryAt: number | null;
}

/** Validates a failTasks batch as a whole (the rules of validateCompletions, with error and retryAt). */
export function validateFailures(value: unknown, maxPayloadBytes: number): ValidFailure[] {
  if (!Array.isArray(value)) throw new ValidationError(`failures must be an array, got ${describe(value)}`);
  const claims = validateCompletions(
    value.map((item: unknown) =>
      isPlainObject(item) ? { claim: item.claim, output: new Uint8Array(0) } : item,
    ),
    maxPayloadBytes,
  );
  return claims.map(({ output: _, ...claim }, index) => {
    const item = value[index] as Record<string, unknown>;
    const retryAt = item.retryAt;
    if (retryAt === undefined) throw new ValidationError(`failures[${index}].retryAt must be a time or null`);
    return {
      ...claim,
      error: validateErrorText(`failures[${index}].error`, item.error, maxPayloadBytes),
      retryAt: retryAt === null ? null : validateTimestamp(`failures[${index}].retryAt`, retryAt),
    };
  });
}
