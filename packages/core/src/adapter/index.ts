/**
 * The adapter kit: what every storage adapter shares, so that each one stores the same fields,
 * refuses in the same order with the same words, retries races with the same backoff and keeps
 * secrets out of messages the same way. For adapter authors; applications need only the main entry.
 */

export { type StopListening, WakeHub, type WakeSource, type WakeTiming } from "../wake-ups.js";
export { type StoredHeaderView, type Transition, transitionHeader } from "./control.js";
export { isMigratable, type Migratable, type MigrationReport } from "./migration.js";
export {
  assertClaimHolder,
  type ControlOperation,
  consumeRefusal,
  controlRefusal,
  extendRefusal,
  fenceHolds,
  type HeldClaimView,
  REVOKED_EXPIRY,
  releaseRefusal,
  resultRefusal,
  type StoredClaimView,
  snapshotRefusal,
  type WriteView,
} from "./refusals.js";
export {
  backoffDelay,
  DEFAULT_RACE_ATTEMPTS,
  type RaceRetryOptions,
  RETRY,
  type Retry,
  retryOnRace,
  sleep,
} from "./retry.js";
export { connectionSecrets } from "./secrets.js";
export { advanceHeader, type StepView, type StepWrite, stepRefusal } from "./step.js";
export {
  fromStoredParts,
  type StoredParts,
  type StoredSnapshot,
  type StoredStatus,
  toStoredSnapshot,
} from "./stored.js";
