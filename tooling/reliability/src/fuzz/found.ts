// Minimal sequences the fuzzer found diverging on a real backend, kept as fixed regression cases:
// differential.test.ts replays each on every backend at every run. `knownBug`: the backends on
// which it still diverges (run as it.fails: green while the bug stands, red once it is fixed, to
// be taken out of the list then).
import type { BackendName } from "@sayiir/backends";
import type { Inst, Op, Schedule, Shape } from "./ops.ts";

export interface FoundSequence {
  what: string;
  ops: Op[];
  knownBug: BackendName[];
}

const unscheduled: Schedule = { runAt: "none", priority: 0, queue: null };
const atTask0: Shape = {
  kind: "atTask",
  task: 0,
  done: [],
  spent: false,
  input: false,
  schedule: unscheduled,
  attempts: 0,
};

/** A wait for event 0 before task 0, with its timeout in the past (timed out) or soon. */
const waitShape = (timeout: "past" | "soon"): Shape => ({
  kind: "awaiting",
  event: 0,
  next: 0,
  timeout,
  done: [],
  spent: false,
  input: false,
  schedule: unscheduled,
});

/** An unfenced save of a fresh state of instance `inst`. */
const save = (inst: Inst, shape: Shape): Op => ({
  op: "save",
  inst,
  shape,
  age: 0,
  fence: "none",
  fenceTask: 0,
  consume: "none",
  event: 0,
});

export const FOUND: FoundSequence[] = [
  {
    // 2026-12-05 (issue 20), seed -762178127: a step back to the same task leaves its position's
    // task with a result, so the task is in no index; failTasks on it (retryAt in the past) must
    // keep it there, while DynamoDB put it into the due index and served it again (attempt 2).
    what: "failTasks on a task whose position already has its result",
    ops: [
      save(2, atTask0),
      {
        op: "work",
        worker: 0,
        ttl: "none",
        queues: "omit",
        fails: "no",
        next: atTask0,
        step: { to: "task", task: 0, schedule: unscheduled },
        age: 0,
        consume: "carried",
        event: 0,
      },
      { op: "find", worker: 0, limit: 1, queues: "omit" },
      { op: "claim", inst: 2, task: 0, worker: 0, ttl: "none" },
      { op: "fail", items: [{ inst: 2, task: 0, fence: "latest", worker: 0, retry: "past", error: 0 }] },
      { op: "load", inst: 2 },
      { op: "find", worker: 0, limit: 1, queues: "omit" },
    ],
    knownBug: [],
  },
  {
    // 2026-12-05 (issue 20), SAYIIR_FUZZ_RUNS=200, seed 1737464267: a claim-next's short lease
    // lapses; findAvailableTasks must show the task with attempt 1 (no takeover has happened:
    // only the claim-next that takes it over counts one), while SQLite already showed attempt 2;
    // replayed on every backend, PostgreSQL does the same (redis, mongo, dynamodb agree with the
    // reference). Both add their `taken_over` flag to the attempt in find as in claim-next.
    what: "find over a lapsed claim that nobody took over yet",
    ops: [
      {
        op: "save",
        inst: 1,
        shape: {
          kind: "awaiting",
          event: 0,
          next: 0,
          timeout: "none",
          done: [],
          spent: false,
          input: false,
          schedule: unscheduled,
        },
        age: 0,
        fence: "none",
        fenceTask: 0,
        consume: "none",
        event: 0,
      },
      { op: "send", inst: 1, event: 0, payload: 0 },
      { op: "claimNext", worker: 0, limit: 1, ttl: "short", queues: "omit" },
      { op: "elapse" },
      { op: "find", worker: 0, limit: 1, queues: "omit" },
      { op: "claimNext", worker: 1, limit: 1, ttl: "long", queues: "omit" },
      { op: "load", inst: 1 },
    ],
    knownBug: [],
  },
  {
    // 2026-12-05 (issue 20, 5,000-sequence run), seed -1436271816: a claim-next claim that lapsed
    // before a cancel was not revoked by the cancel on MongoDB, so loadTaskClaims still listed it.
    what: "a cancel revokes a lapsed claim too",
    ops: [
      save(0, atTask0),
      { op: "claimNext", worker: 0, limit: 1, ttl: "short", queues: "omit" },
      { op: "elapse" },
      { op: "cancel", inst: 0, reason: false },
      { op: "claims", inst: 0 },
    ],
    knownBug: [],
  },
  {
    // 2026-12-05 (issue 20, 5,000-sequence run), seed 1511610800: DynamoDB served the ended lease
    // of a fresh task before the ended lease of a wait that had timed out decades ago (it ordered
    // ended leases by their updatedAt, not by the key their task had before it was leased).
    what: "ended leases are served in the order their tasks had",
    ops: [
      save(0, atTask0),
      save(2, waitShape("past")),
      { op: "claimNext", worker: 0, limit: 2, ttl: "short", queues: "omit" },
      { op: "elapse" },
      { op: "claimNext", worker: 1, limit: 1, ttl: "none", queues: "omit" },
    ],
    knownBug: [],
  },
  {
    // 2026-12-05 (issue 20, 5,000-sequence rerun), seed 1626231429: a claim-next lease of an hour,
    // renewed for 400 ms, then lapsed: DynamoDB kept the head keyed at the hour in the leased
    // partition, so nobody could take the task over until then.
    what: "a lease shortened by a renewal ends at the renewal's end",
    ops: [
      save(0, atTask0),
      { op: "claimNext", worker: 0, limit: 1, ttl: "long", queues: "omit" },
      { op: "heartbeat", inst: 0, renew: "short" },
      { op: "elapse" },
      { op: "claimNext", worker: 1, limit: 1, ttl: "none", queues: "omit" },
    ],
    knownBug: [],
  },
  {
    // 2026-12-05 (issue 20, 5,000-sequence run after the fixes above), seed 1424880925: a result
    // written unfenced for another task of a workflow whose timed-out wait was leased by claim-next
    // re-keyed that lease on DynamoDB as if its task had come due at the write, so once the lease
    // lapsed a wait that timed out later was found first.
    what: "a result written beside a leased timed-out wait keeps the wait's order",
    ops: [
      save(0, waitShape("past")),
      save(2, waitShape("soon")),
      { op: "claimNext", worker: 0, limit: 1, ttl: "short", queues: "omit" },
      { op: "result", inst: 0, task: 2, out: 0, fence: "none" },
      { op: "elapse" },
      { op: "find", worker: 0, limit: 1, queues: "omit" },
    ],
    knownBug: [],
  },
];
