// Time in the differential fuzzer: how a sequence tests expiry (short leases, soon runAt, retryAt
// and wait timeouts) on every backend, server clocks included, without ever comparing an outcome
// whose truth depends on exactly when a step ran.
//
// Both lanes run on real time: the memory reference on Date.now, the subject on its store's clock,
// which here is this machine's clock too (the servers are local; client-clock adapters read this
// process's clock). A sequence is cut into epochs by `elapse` steps, and every deadline a step sets
// (a short lease: the time of the step plus shortMs on the store's clock; a soon time: an absolute
// value, the same on both lanes) is kept clearly ahead of every step of its epoch and clearly
// behind every step of the later ones:
// - before each step, when a pending deadline could be reached during it (now + guard, the guard
//   twice the slowest recent step), the runner elapses first: an automatic elapse, which both
//   lanes live through, so they stay in step;
// - an elapse sleeps until the latest pending deadline + skew + margin has passed on this clock.
// The declared skew (capabilities.clockSkewMs) is added after a deadline only: a store judges
// time on this machine's clock, and what the skew budget changes is how long an adapter waits
// past a deadline (DynamoDB lets others take a claim over only at expiresAt + its budget).
// So a short lease of the current epoch is live on both sides and one of an earlier epoch has
// expired on both (takeovers, CLAIM_LOST on extend, fenced writes refused, claim-next serving the
// task again), and a soon runAt/retryAt/timeout is due on neither side before its elapse and on
// both after. Skipping the comparison of an uncertain step instead would not do: the lanes could
// go on from different states (one took the task over, the other did not). A step that overran the
// guard anyway (a stall longer than twice the slowest recent step) is "ambiguous": a divergence
// in it is inconclusive, counted, and ends the sequence without failing it.
import { setTimeout as sleep } from "node:timers/promises";
import type { Op } from "./ops.ts";
import { SOON_SPREAD_MS } from "./snapshots.ts";

/** What the runner reads the time from and sleeps on. */
export interface TimeSource {
  now(): number;
  sleep(ms: number): Promise<void>;
}

/** This machine's clock: what the memory reference and the local servers judge expiry by. */
export const REAL_TIME: TimeSource = { now: () => Date.now(), sleep: (ms) => sleep(ms) };

/**
 * A clock that moves only when slept on, for fuzzing memory backends against the reference on one
 * shared clock (InMemoryBackend's `clock` option): steps take no time, so no step is ever
 * ambiguous and an elapse costs nothing. It starts at this machine's time, so timestamps it sets
 * look like clock times to the lanes' normalisation.
 */
export class VirtualTime implements TimeSource {
  #now = Date.now();
  readonly now = (): number => this.#now;
  async sleep(ms: number): Promise<void> {
    this.#now += Math.max(0, Math.ceil(ms));
  }
}

export interface Timing {
  /** A short lease's ttl, and how far after a step its soon times are, in ms. */
  shortMs: number;
  /** How long past a deadline the subject may still judge it ahead (capabilities.clockSkewMs). */
  skewMs: number;
}

/** What a backend's run of the fuzzer spent on time, for its report line. */
export interface TimeStats {
  /** Elapses that had a deadline to pass, explicit or automatic. */
  elapses: number;
  /** Of these, the ones the runner inserted before a step that could have reached a deadline. */
  automatic: number;
  sleptMs: number;
  /** Steps that ran past a pending deadline's guard (a stall). */
  ambiguous: number;
  /** Of these, the ones whose outcomes differed: sequences ended without a verdict. */
  inconclusive: number;
  /** Steps compared after an elapse of their sequence had passed a deadline. */
  afterElapse: number;
  /** Of these, the ones that refused a claim as lost (the reference's outcome has CLAIM_LOST). */
  claimLost: number;
  /** Of these, the claim-next, work and find steps that served a task. */
  served: number;
}

/** Rounding of the stores' clocks (ms vs µs) and timer jitter, on top of the declared skew. */
const MARGIN_MS = 10;
/** The smallest guard: a step of a fast backend still needs a few ms. */
const MIN_GUARD_MS = 30;
/** How many recent step durations the guard looks at. */
const RECENT_STEPS = 16;

/**
 * A backend's fuzzing clock: its time source, the deadlines of the running sequence (begin()
 * clears them) and the pace of recent steps (kept across sequences).
 */
export class FuzzClock {
  readonly stats: TimeStats = {
    elapses: 0,
    automatic: 0,
    sleptMs: 0,
    ambiguous: 0,
    inconclusive: 0,
    afterElapse: 0,
    claimLost: 0,
    served: 0,
  };
  /** Whether an elapse of the running sequence has passed a deadline. */
  #elapsed = false;
  /** The earliest and the latest pending deadline of the current epoch (none: ±Infinity). */
  #lower = Number.POSITIVE_INFINITY;
  #upper = Number.NEGATIVE_INFINITY;
  readonly #recent: number[] = [];
  readonly time: TimeSource;
  readonly timing: Timing;

  constructor(time: TimeSource, timing: Timing) {
    this.time = time;
    this.timing = timing;
  }

  /** A new sequence: nothing it sets is pending yet. */
  begin(): void {
    this.#openEpoch();
    this.#elapsed = false;
  }

  #openEpoch(): void {
    this.#lower = Number.POSITIVE_INFINITY;
    this.#upper = Number.NEGATIVE_INFINITY;
  }

  /** Twice the slowest recent step, at least MIN_GUARD_MS, at most half a short lease. */
  guardMs(): number {
    const slowest = this.#recent.length === 0 ? 0 : Math.max(...this.#recent);
    return Math.min(this.timing.shortMs / 2, Math.max(MIN_GUARD_MS, 2 * slowest));
  }

  /** Could a pending deadline be reached during the next step? Then the runner elapses first. */
  mustElapse(): boolean {
    return this.time.now() + this.guardMs() >= this.#lower;
  }

  /** Sleeps until every pending deadline has passed on every clock, and opens a new epoch. */
  async elapse(automatic: boolean): Promise<void> {
    if (this.#upper === Number.NEGATIVE_INFINITY) return;
    const target = this.#upper + this.timing.skewMs + MARGIN_MS;
    const from = this.time.now();
    for (let now = from; now <= target; now = this.time.now()) await this.time.sleep(target - now + 1);
    this.stats.elapses++;
    if (automatic) this.stats.automatic++;
    this.stats.sleptMs += this.time.now() - from;
    this.#openEpoch();
    this.#elapsed = true;
  }

  /** Counts what a compared step showed of passed time (for the report line). */
  compared(op: Op, outcome: unknown): void {
    if (!this.#elapsed) return;
    this.stats.afterElapse++;
    const text = JSON.stringify(outcome);
    if (text.includes('"CLAIM_LOST"')) this.stats.claimLost++;
    const serves = op.op === "claimNext" || op.op === "work" || op.op === "find";
    if (serves && text !== "[]" && !text.includes('"claimed":null')) this.stats.served++;
  }

  /** The soon time of a step that starts at `start`: one short lease ahead. */
  soon(start: number): number {
    return start + this.timing.shortMs;
  }

  /**
   * A step ran from `start` to `end` (both lanes): notes the deadlines it may have set (a short
   * lease or renewal: start..end + shortMs; a soon time: soon..soon + spread) and its duration.
   * Returns whether it was ambiguous: whether a pending deadline, its own included, may have been
   * reached on some clock before it ended.
   */
  stepped(op: Op, start: number, end: number): boolean {
    // Every Lease, Renewal, When and Timeout field is a plain string in the op, wherever it
    // nests (a save's shape, a completion's step, a failure's retry): a scan finds them all.
    const text = JSON.stringify(op);
    if (text.includes('"short"')) this.#pending(start + this.timing.shortMs, end + this.timing.shortMs);
    if (text.includes('"soon"')) {
      const soon = this.soon(start);
      this.#pending(soon, soon + SOON_SPREAD_MS);
    }
    this.#recent.push(end - start);
    if (this.#recent.length > RECENT_STEPS) this.#recent.shift();
    const ambiguous = end + MARGIN_MS >= this.#lower;
    if (ambiguous) this.stats.ambiguous++;
    return ambiguous;
  }

  #pending(lower: number, upper: number): void {
    this.#lower = Math.min(this.#lower, lower);
    this.#upper = Math.max(this.#upper, upper);
  }
}
