/** Stable error codes: assert on these, never on messages. */
export const ErrorCode = {
  NotFound: "NOT_FOUND",
  Serialization: "SERIALIZATION",
  Backend: "BACKEND",
  Validation: "VALIDATION",
  ClaimLost: "CLAIM_LOST",
  Conflict: "CONFLICT",
  PayloadTooLarge: "PAYLOAD_TOO_LARGE",
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/** Base class of every error a backend raises on purpose. */
export class PersistenceError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(redactSecrets(message), options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** The instance, claim or record asked for does not exist. */
export class NotFoundError extends PersistenceError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(ErrorCode.NotFound, message, options);
  }
}

/** Stored data could not be decoded (unknown format version or corrupt bytes). */
export class SerializationError extends PersistenceError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(ErrorCode.Serialization, message, options);
  }
}

/** The database or its driver failed; the driver's error is the `cause`. */
export class BackendError extends PersistenceError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(ErrorCode.Backend, message, options);
  }
}

/** An argument is invalid; raised before any I/O. */
export class ValidationError extends PersistenceError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(ErrorCode.Validation, message, options);
  }
}

/** The caller's claim is no longer the live one (expired, released, taken over, or someone else's). */
export class ClaimLostError extends PersistenceError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(ErrorCode.ClaimLost, message, options);
  }
}

/** The write contradicts the stored state (for example it would reopen a finished workflow). */
export class ConflictError extends PersistenceError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(ErrorCode.Conflict, message, options);
  }
}

/** A byte payload is larger than the backend's configured maximum; nothing was written. */
export class PayloadTooLargeError extends PersistenceError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(ErrorCode.PayloadTooLarge, message, options);
  }
}

export function isPersistenceError(error: unknown): error is PersistenceError {
  return error instanceof PersistenceError;
}

// Connection strings end up in driver messages (for example "connect ECONNREFUSED" with the
// URL, or an auth failure echoing the DSN). Strip userinfo passwords and password=... pairs.
const URL_PASSWORD = /([a-z][a-z0-9+.-]*:\/\/[^:/?#@\s]*):([^@/\s]*)@/gi;
const KEY_PASSWORD = /\b(password|pass|pwd)=([^&\s;]+)/gi;

/** Removes passwords that appear in connection strings inside a text. */
export function redactSecrets(text: string, extraSecrets: readonly string[] = []): string {
  let out = text.replace(URL_PASSWORD, "$1:***@").replace(KEY_PASSWORD, "$1=***");
  for (const secret of extraSecrets) {
    if (secret.length >= 3) out = out.split(secret).join("***");
  }
  return out;
}

/**
 * Wraps a driver failure as a BackendError, keeping the original as `cause`.
 * PersistenceErrors pass through unchanged so adapters can call this in a catch-all.
 */
export function toBackendError(
  operation: string,
  error: unknown,
  secrets: readonly string[] = [],
): PersistenceError {
  if (error instanceof PersistenceError) return error;
  const detail = error instanceof Error ? error.message : String(error);
  return new BackendError(redactSecrets(`${operation} failed: ${detail}`, secrets), { cause: error });
}

const q = (id: string): string => JSON.stringify(id);

/**
 * The failures every backend reports, worded once so that all adapters say the same thing.
 * Each returns the error; the caller throws it.
 */
export const failures = {
  snapshotNotFound: (instanceId: string) => new NotFoundError(`no snapshot for instance ${q(instanceId)}`),
  claimNotFound: (instanceId: string, taskId: string) =>
    new NotFoundError(`no claim on task ${q(taskId)} of ${q(instanceId)}`),
  claimedByOther: (instanceId: string, taskId: string) =>
    new ClaimLostError(`task ${q(taskId)} of ${q(instanceId)} is claimed by another worker`),
  claimExpired: (instanceId: string, taskId: string) =>
    new ClaimLostError(`the claim on task ${q(taskId)} of ${q(instanceId)} has expired`),
  fenceRejected: (instanceId: string, fence: { taskId: string; token: number }) =>
    new ClaimLostError(
      `claim token ${fence.token} on task ${q(fence.taskId)} of ${q(instanceId)} is no longer live`,
    ),
  cannotReopen: (instanceId: string) =>
    new ConflictError(`workflow ${q(instanceId)} is finished; it cannot go back to InProgress`),
  resultsFinal: (instanceId: string) =>
    new ConflictError(`workflow ${q(instanceId)} is finished; its task results are final`),
  claimRevoked: (instanceId: string, taskId: string) =>
    new ClaimLostError(`workflow ${q(instanceId)} is cancelled; the claim on task ${q(taskId)} is revoked`),
  cancelledIsFinal: (instanceId: string) =>
    new ConflictError(
      `workflow ${q(instanceId)} is cancelled; only a Cancelled snapshot may be written over it`,
    ),
  notCancellable: (instanceId: string, state: string) =>
    new ConflictError(
      `workflow ${q(instanceId)} is ${state}; only an InProgress or Paused workflow can be cancelled`,
    ),
  notPausable: (instanceId: string, state: string) =>
    new ConflictError(`workflow ${q(instanceId)} is ${state}; only an InProgress workflow can be paused`),
  notPaused: (instanceId: string, state: string) =>
    new ConflictError(`workflow ${q(instanceId)} is ${state}, not Paused; there is nothing to resume`),
  notAtTask: (instanceId: string, taskId: string) =>
    new ConflictError(
      `workflow ${q(instanceId)} is not at task ${q(taskId)}; only the task its position runs can move it on`,
    ),
  pausedCannotMove: (instanceId: string) =>
    new ConflictError(`workflow ${q(instanceId)} is paused; resume it before moving it on`),
  eventsClosed: (instanceId: string, state: string) =>
    new ConflictError(`workflow ${q(instanceId)} is ${state}; it accepts no more events`),
  eventNotPending: (instanceId: string, event: { eventName: string; sequence: number }) =>
    new ConflictError(
      `event ${event.sequence} ${q(event.eventName)} of ${q(instanceId)} is not the oldest pending event of its name (consumed already?)`,
    ),
} as const;
