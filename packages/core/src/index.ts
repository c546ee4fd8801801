export { assertClaimHolder } from "./adapter/refusals.js";
export type {
  BackendCapabilities,
  CompletionOutcome,
  DiscoveryOptions,
  ListPageOptions,
  PendingEvent,
  PersistentBackend,
  PurgeOptions,
  SnapshotPage,
  TaskCompletion,
  TaskFailure,
  TaskResultWriteOptions,
  WriteOptions,
} from "./backend.js";
export { iterateSnapshots } from "./backend.js";
export type { BaseBackendOptions } from "./base-backend.js";
export { BaseBackend } from "./base-backend.js";
export { bytesEqual, copyBytes, EMPTY_BYTES, isBytes, toBytes } from "./bytes.js";
export type { AvailableTask, ClaimedTask, EventRef, Fence, RenewedClaim, TaskClaim } from "./claims.js";
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
  CancelledState,
  ControlRequest,
  ExecutionPosition,
  InProgressState,
  NextStep,
  PausedState,
  TaskAttempts,
  TaskResult,
  TaskSchedule,
  WorkflowSnapshot,
  WorkflowState,
} from "./snapshot.js";
export {
  applyStep,
  awaitedTaskId,
  completedTasksOf,
  createSnapshot,
  DEFAULT_AGING_MS,
  DEFAULT_PRIORITY,
  DEFAULT_QUEUE,
  effectiveTime,
  getLastTaskOutput,
  getTaskResult,
  isFinished,
  markCancelled,
  markCompleted,
  markFailed,
  markPaused,
  markResumed,
  markTaskCompleted,
  nextTaskInput,
  positionTaskId,
  readyTaskId,
  scheduleOf,
  setCompletedTask,
  updatePosition,
} from "./snapshot.js";
export type { ValidCompletion, ValidFailure } from "./validation.js";
export {
  compareIds,
  DEFAULT_MAX_PAYLOAD_BYTES,
  MAX_CONTROL_TEXT_LENGTH,
  MAX_DURATION_MS,
  MAX_ID_LENGTH,
  MAX_LIMIT,
  MAX_WAIT_MS,
  validateBytes,
  validateCompletions,
  validateControlRequest,
  validateControlText,
  validateDuration,
  validateEventRef,
  validateFailures,
  validateFence,
  validateId,
  validateLimit,
  validateMaxPayloadBytes,
  validatePriority,
  validatePurgeOptions,
  validateQueues,
  validateSnapshot,
  validateTtl,
  validateWaitOptions,
} from "./validation.js";
export type { WaitOptions, WakeProbe, WakeReason } from "./wake-ups.js";
