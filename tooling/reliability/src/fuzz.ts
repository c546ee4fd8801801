// Differential fuzzing: random operation sequences run on a backend under test and on the memory
// reference, comparing every result and error code step by step. The parts:
// - fuzz/ops.ts: the operation model and its generators;
// - fuzz/snapshots.ts: the snapshots a save writes (timestamps far from the clock);
// - fuzz/lane.ts: one side's bookkeeping and normalisation (tokens and event sequences by
//   identity, clock-set timestamps as "now"/"t");
// - fuzz/apply.ts: one operation on one lane, and the 3-client claim race;
// - fuzz/run.ts: a sequence on both lanes, and the cleanup between sequences.
//
// Only time-independent results are compared: updatedAt in 2100+ (so `max(old, now)` keeps it
// and discovery order is clock-free), ttls of none or one hour, wait timeouts decades ago or in
// 2100, and 2 ms between steps that stamp a workflow with the store's clock (pause, resume,
// cancel), so the order of such workflows is the order of the steps on every clock.
export { apply, normError, runRace } from "./fuzz/apply.ts";
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
export { cleanupRun, deepEqual, type Mismatch, runSequence } from "./fuzz/run.ts";
export { buildSnapshot, FUTURE } from "./fuzz/snapshots.ts";
