export { assertClaimHolder } from "./adapter/refusals.js";
export type {
  BackendCapabilities,
  CompletionOutcome,
  ListPageOptions,
  PersistentBackend,
  SnapshotPage,
  TaskCompletion,
  TaskResultWriteOptions,
  WriteOptions,
} from "./backend.js";
export { iterateSnapshots } from "./backend.js";
export type { BaseBackendOptions } from "./base-backend.js";
export { BaseBackend } from "./base-backend.js";
export { bytesEqual, copyBytes, EMPTY_BYTES, isBytes, toBytes } from "./bytes.js";
export type { AvailableTask, ClaimedTask, Fence, TaskClaim } from "./claims.js";
export { isClaimLive } from "./claims.js";
export {
  decodeSnapshot,
  decodeSnapshotHeader,
  encodeSnapshot,
  encodeSnapshotHeader,
  FORMAT_VERSION,
} from "./codec.js";
export {
  BackendError,
  ClaimLostError,
  ConflictError,
  ErrorCode,
  failures,
  isPersistenceError,
  NotFoundError,
  PayloadTooLargeError,
  PersistenceError,
  redactSecrets,
  SerializationError,
  toBackendError,
  ValidationError,
} from "./errors.js";
export type {
  ExecutionPosition,
  InProgressState,
  TaskResult,
  WorkflowSnapshot,
  WorkflowState,
} from "./snapshot.js";
export {
  createSnapshot,
  getLastTaskOutput,
  getTaskResult,
  isFinished,
  markCompleted,
  markFailed,
  markTaskCompleted,
  nextTaskInput,
  readyTaskId,
  setCompletedTask,
  updatePosition,
} from "./snapshot.js";
export type { ValidCompletion } from "./validation.js";
export {
  compareIds,
  DEFAULT_MAX_PAYLOAD_BYTES,
  MAX_DURATION_MS,
  MAX_ID_LENGTH,
  MAX_LIMIT,
  validateBytes,
  validateCompletions,
  validateDuration,
  validateFence,
  validateId,
  validateLimit,
  validateMaxPayloadBytes,
  validateSnapshot,
  validateTtl,
} from "./validation.js";
