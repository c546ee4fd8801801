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
 *   clients' wall clocks say.
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

export class ServerClock implements Clock {
  readonly mode = "server" as const;
  readonly #sample: () => Promise<ServerTimeSample>;
  readonly #refreshMs: number;
  readonly #monotonic: () => number;
  /** serverMs - local monotonic ms, from the latest sample. */
  #offset: number | undefined;
  #sampledAt = Number.NEGATIVE_INFINITY;
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

  /** The round trip of the latest sample: the estimate is within half of it of the server. */
  get uncertaintyMs(): number {
    return this.#roundTripMs / 2;
  }

  #apply(sample: ServerTimeSample): void {
    this.#offset = sample.serverMs - (sample.sentAt + sample.receivedAt) / 2;
    this.#roundTripMs = Math.max(0, sample.receivedAt - sample.sentAt);
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
    if (this.#offset === undefined) await this.#resample();
    else if (this.#monotonic() - this.#sampledAt > this.#refreshMs) {
      // Keep using the current estimate; a failed resample is retried on a later call.
      this.#resample().catch(() => undefined);
    }
    return Math.round(this.#monotonic() + (this.#offset as number));
  }
}
