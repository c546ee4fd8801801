/*
 * The clock that judges claim expiry (and stamps claimedAt, expiresAt and task-result
 * updatedAt). Every decision about a claim is taken in JavaScript between reading an instance
 * document and committing it with a compare-and-set, so the clock is a number, not a `$$NOW`.
 *
 * - "server": the server's own clock, read from the `localTime` of a `hello` (or legacy
 *   `isMaster`) reply, and interpolated in between with this process's monotonic clock:
 *   now = localTime + (performance.now() - midpoint of the round trip). Resampled every
 *   `refreshMs` in the background. Each estimate is off by at most half the sample's round trip
 *   (plus the drift of the local oscillator since the sample, parts per million), whatever the
 *   clients' wall clocks say. So a new sample replaces the one in use only when its bound is no
 *   worse: on a loaded host a reply can sit for hundreds of ms in a busy event loop, and taking
 *   that sample would move the estimate by as much (the 30-minute soak saw claims stamped 280 ms
 *   after their reply had arrived). The bound of the sample in use grows by AGEING_PER_MS with its
 *   age (far more than any oscillator drifts), so a precise old sample gives way within minutes,
 *   and a step of the server's clock (a failover) is taken up by the next sample that is as
 *   precise. While the bound is over PRECISE_MS it resamples every second instead of every
 *   `refreshMs`.
 * - "client": Date.now() of the calling process (clients must agree within the skew budget).
 */

/** One reading of the server's clock. */
export interface ServerTimeSample {
  /** The server's localTime, epoch ms. */
  serverMs: number;
  /** performance.now() when the request was sent and the reply received. */
  sentAt: number;
  receivedAt: number;
}

export interface Clock {
  readonly mode: "server" | "client";
  /** Epoch milliseconds. */
  now(): Promise<number>;
}

export const clientClock = (now: () => number = Date.now): Clock => ({
  mode: "client",
  now: async () => now(),
});

/** How much the error bound of the sample in use grows per ms of its age (1 ms a second). */
export const AGEING_PER_MS = 0.001;
/** A bound over this resamples soon (every IMPRECISE_REFRESH_MS) rather than every refreshMs. */
export const PRECISE_MS = 10;
const IMPRECISE_REFRESH_MS = 1_000;

export class ServerClock implements Clock {
  readonly mode = "server" as const;
  readonly #sample: () => Promise<ServerTimeSample>;
  readonly #refreshMs: number;
  readonly #monotonic: () => number;
  /** serverMs - local monotonic ms, from the sample in use. */
  #offset: number | undefined;
  /** When the sample in use was received, and when the latest sample was turned down. */
  #sampledAt = Number.NEGATIVE_INFINITY;
  #rejectedAt = Number.NEGATIVE_INFINITY;
  #roundTripMs = 0;
  #pending: Promise<void> | undefined;

  constructor(
    sample: () => Promise<ServerTimeSample>,
    options: { refreshMs?: number; monotonic?: () => number; initial?: ServerTimeSample } = {},
  ) {
    this.#sample = sample;
    this.#refreshMs = options.refreshMs ?? 10_000;
    this.#monotonic = options.monotonic ?? (() => performance.now());
    if (options.initial !== undefined) this.#apply(options.initial);
  }

  /** Half the round trip of the sample in use: the estimate is within it of the server's clock. */
  get uncertaintyMs(): number {
    return this.#roundTripMs / 2;
  }

  /** The error bound of the sample in use at monotonic time `at`. */
  #boundAt(at: number): number {
    return this.#roundTripMs / 2 + AGEING_PER_MS * Math.max(0, at - this.#sampledAt);
  }

  #apply(sample: ServerTimeSample): void {
    const roundTrip = Math.max(0, sample.receivedAt - sample.sentAt);
    // A sample less precise than the one in use (aged) would only make the estimate worse.
    if (this.#offset !== undefined && roundTrip / 2 > this.#boundAt(sample.receivedAt)) {
      this.#rejectedAt = sample.receivedAt;
      return;
    }
    this.#offset = sample.serverMs - (sample.sentAt + sample.receivedAt) / 2;
    this.#roundTripMs = roundTrip;
    this.#sampledAt = sample.receivedAt;
  }

  #resample(): Promise<void> {
    this.#pending ??= this.#sample()
      .then((sample) => this.#apply(sample))
      .finally(() => {
        this.#pending = undefined;
      });
    return this.#pending;
  }

  async now(): Promise<number> {
    const refreshMs =
      this.uncertaintyMs > PRECISE_MS ? Math.min(this.#refreshMs, IMPRECISE_REFRESH_MS) : this.#refreshMs;
    if (this.#offset === undefined) await this.#resample();
    else if (this.#monotonic() - Math.max(this.#sampledAt, this.#rejectedAt) > refreshMs) {
      // Keep using the current estimate; a failed resample is retried on a later call.
      this.#resample().catch(() => undefined);
    }
    return Math.round(this.#monotonic() + (this.#offset as number));
  }
}
