// Differential fuzzing: random operation sequences run on a backend under test and on the memory
// reference, comparing every result and error code step by step. The parts:
// - fuzz/ops.ts: the operation model and its generators;
// - fuzz/snapshots.ts: the snapshots a save writes (timestamps far from the clock, or soon);
// - fuzz/lane.ts: one side's bookkeeping and normalisation (tokens and event sequences by
//   identity, clock-set timestamps as "now"/"t");
// - fuzz/apply.ts: one operation on one lane, and the 3-client claim race;
// - fuzz/clock.ts: time: short leases and soon times, elapses, and when a step is unambiguous;
// - fuzz/run.ts: a sequence on both lanes, and the cleanup between sequences;
// - fuzz/found.ts: minimal sequences found diverging on a real backend, replayed every run.
//
// Results are compared exactly: updatedAt in 2100+ (so `max(old, now)` keeps it and discovery
// order is clock-free), ttls of none, one hour or short, runAt/retryAt/timeouts decades ago, in
// 2100 or soon (the same value on both lanes), every short lease and soon time clearly ahead
// until an elapse and clearly passed after it (clock.ts), and 2 ms between steps that stamp a
// workflow with the store's clock (pause, resume, cancel), so the order of such workflows is the
// order of the steps on every clock.
export { apply, normError, runRace, type StepTime } from "./fuzz/apply.ts";
export {
  FuzzClock,
  REAL_TIME,
  type TimeSource,
  type TimeStats,
  type Timing,
  VirtualTime,
} from "./fuzz/clock.ts";
export { FOUND, type FoundSequence } from "./fuzz/found.ts";
export { BOGUS_SEQUENCE, BOGUS_TOKEN, Lane, normTimes } from "./fuzz/lane.ts";
export {
  type ConsumeRef,
  describeOps,
  EVENTS,
  type FenceRef,
  INSTANCES,
  type Op,
  opArb,
  type Shape,
  sequenceArb,
  TASKS,
  type Timeout,
  WORKERS,
} from "./fuzz/ops.ts";
export {
  cleanupRun,
  deepEqual,
  type Inconclusive,
  isInconclusive,
  type Mismatch,
  runSequence,
  type SequenceResult,
} from "./fuzz/run.ts";
export { buildSnapshot, FUTURE } from "./fuzz/snapshots.ts";
