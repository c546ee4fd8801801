/**
 * Waiting for work: what `waitForTasks` shares across every adapter. An adapter gives two
 * primitives, a probe (is a task of these queues ready, and when does the next one come due?) and,
 * where its database can push, a listener that calls `notify(queue)` when a write may have made a
 * task of that queue ready. The hub turns them into waits: every waiter of a backend instance
 * shares one listener and one probe per set of queues, a push backend re-probes only at its safety
 * bound, a poll backend probes adaptively (fast right after work was seen, slower while idle, never
 * slower than its declared bound), and a wait always ends by its timeout, its signal or close().
 */

/** Why a wait ended. */
export type WakeReason =
  /** A task of the waited queues was ready when the wait looked (on entry or at a poll). */
  | "ready"
  /** The database (or this process) said a task of the waited queues may have become ready. */
  | "notified"
  /** The earliest known runAt, retry, event timeout or claim expiry of those queues came due. */
  | "due"
  /** `timeoutMs` passed with none of the above. */
  | "timeout"
  /** The caller's AbortSignal fired. */
  | "aborted"
  /** The backend was closed. */
  | "closed";

export interface WaitOptions {
  /** The queues whose work should end the wait (default: ["default"]), as for claim-next. */
  queues?: readonly string[];
  /** The longest the wait lasts, 0 to 3,600,000 ms (0: look once and return). */
  timeoutMs: number;
  /** Ends the wait early with "aborted". */
  signal?: AbortSignal;
}

/** What one look at the store says about a set of queues. */
export interface WakeProbe {
  /** A task of those queues can be claimed now. */
  ready: boolean;
  /**
   * The earliest future moment (epoch ms, by the store's clock) a task of those queues comes due
   * by time alone: a runAt, a retry, an event wait's timeout, a claim's expiry. null: none known
   * (a poll backend may answer null and let its polls find it).
   */
  nextDueAt: number | null;
  /**
   * The store's clock when it looked (epoch ms), when that clock is not this process's (a server
   * clock): the hub then sleeps `nextDueAt - now` from the look, whatever the skew between the two
   * clocks. Omitted: the due time is on this process's clock.
   */
  now?: number;
}

/** Stops a listener; resolves once its connection is closed. */
export type StopListening = () => Promise<void>;

/** What an adapter gives the hub. */
export interface WakeSource {
  probe(queues: readonly string[]): Promise<WakeProbe>;
  /**
   * Push backends: starts the one listener of this backend instance; `notify(queue)` says a task
   * of `queue` may have become ready (null: of any queue, as after a reconnect, when notifications
   * may have been missed). Resolves once listening. Absent on poll backends.
   */
  listen?: (notify: (queue: string | null, readyNow?: boolean) => void) => Promise<StopListening>;
}

/** How often the hub looks by itself. */
export interface WakeTiming {
  /** "push": the listener says when to look; "poll": the hub looks on a timer. */
  mode: "push" | "poll";
  /**
   * Poll: the longest gap between two looks at an idle store. Push: how often a waiter looks all
   * the same, so that a lost notification delays a task by at most this long.
   */
  boundMs: number;
}

/** The first gap of an adaptive poll, doubled after every empty look up to the bound. */
const FIRST_POLL_MS = 10;
/** A due time is on the store's clock; look just after it rather than just before. */
const DUE_SLACK_MS = 2;
/** Looks by waiters of the same queues within this long share one probe. */
const SHARED_PROBE_MS = 5;

interface Waiter {
  queues: ReadonlySet<string>;
  /** The hub's tick when the waiter last had news: a look must start at or after it to count. */
  since: number;
  /** A notification said a task of its queues is claimable now: the wait ends without a look. */
  readyNews: boolean;
  /** Set by an abort or close: the wait ends with it. */
  ended: "aborted" | "closed" | undefined;
  /** Interrupts the current sleep, if any (news, an abort, close). */
  rouse: (() => void) | undefined;
  /** Interrupts the current look or listener start, if any (an abort, close). */
  interrupt: (() => void) | undefined;
}

/** What a raced look or listener start came to: its value, or why the wait ended first. */
type Raced<T> = { value: T } | { ended: "aborted" | "closed" | "timeout" };

interface SharedProbe {
  /** The hub's tick when it started: only waiters whose news is not newer may share it. */
  tick: number;
  result: Promise<WakeProbe>;
}

export class WakeHub {
  readonly #source: WakeSource;
  readonly #timing: WakeTiming;
  readonly #waiters = new Set<Waiter>();
  /** Per set of queues: the probe in flight or just answered, shared by its waiters. */
  readonly #probes = new Map<string, SharedProbe>();
  /** Per set of queues: the current gap of the adaptive poll. */
  readonly #gaps = new Map<string, number>();
  /** Counts registrations and notifications: orders news against looks at the store. */
  #tick = 0;
  #listening: Promise<StopListening> | undefined;
  /** When the listener last failed to start: waits poll, and no wait tries again for boundMs. */
  #listenFailedAt = Number.NEGATIVE_INFINITY;
  #closed = false;

  constructor(source: WakeSource, timing: WakeTiming) {
    this.#source = source;
    this.#timing = timing;
  }

  /**
   * Says a task of `queue` (null: of any queue) may have become ready, or due at another time: its
   * waiters look again at once and wake if a task is claimable. `readyNow`: the write that sent it
   * left a task of `queue` claimable at once (not only due later), so its waiters end without that
   * look ("notified"), saving the caller a round trip; a task another worker takes first only
   * costs the caller an empty claim. Cheap with no waiter.
   */
  notify(queue: string | null, readyNow = false): void {
    const tick = ++this.#tick;
    for (const waiter of this.#waiters) {
      if (queue !== null && !waiter.queues.has(queue)) continue;
      waiter.since = tick;
      if (readyNow && queue !== null) waiter.readyNews = true;
      waiter.rouse?.();
    }
    if (queue === null) this.#gaps.clear();
    else for (const key of this.#gaps.keys()) if (key.split("\u0000").includes(queue)) this.#gaps.delete(key);
  }

  /**
   * Waits as `waitForTasks` says; `queues` and `timeoutMs` are already validated. A notification
   * is checked with a look before the wait ends, so a write that made nothing of these queues
   * ready (a task scheduled for later, a task another worker already took) only moves the next
   * due time; the wait goes on.
   */
  async wait(
    queues: readonly string[],
    timeoutMs: number,
    signal: AbortSignal | undefined,
  ): Promise<WakeReason> {
    if (this.#closed) return "closed";
    if (signal?.aborted) return "aborted";
    const deadline = Date.now() + timeoutMs;
    // A look is cut short at the deadline, except the one look of a 0 ms wait.
    const cutAt = timeoutMs === 0 ? Number.POSITIVE_INFINITY : deadline;
    const key = [...queues].sort().join("\u0000");
    const waiter: Waiter = {
      queues: new Set(queues),
      since: 0,
      readyNews: false,
      ended: undefined,
      rouse: undefined,
      interrupt: undefined,
    };
    const onAbort = (): void => {
      waiter.ended ??= "aborted";
      waiter.rouse?.();
      waiter.interrupt?.();
    };
    // Registered before the first look: a notification that comes while it runs is not lost.
    waiter.since = ++this.#tick;
    this.#waiters.add(waiter);
    signal?.addEventListener("abort", onAbort, { once: true });
    try {
      let listening = false;
      if (this.#timing.mode === "push" && timeoutMs > 0) {
        const started = await this.#race(waiter, cutAt, this.#listen());
        if ("value" in started) listening = started.value;
        else if (started.ended !== "timeout") return started.ended;
      }
      // What made this look happen. A look that finds a task says so: "ready" from the entry look
      // or a poll (a notification of a write made before the wait began may arrive during the
      // entry look, and is not why it found it), "notified" after news, "due" at a due time.
      let trigger: "entry" | "notified" | "timer" | "due" = "entry";
      for (;;) {
        if (waiter.ended !== undefined) return waiter.ended;
        const since = waiter.since;
        const looked = await this.#race(waiter, cutAt, this.#probe(key, queues, since));
        if ("ended" in looked) return looked.ended;
        const probe = looked.value;
        const lookedAt = Date.now();
        if (probe.ready) {
          this.#gaps.delete(key);
          return trigger === "entry" || trigger === "timer" ? "ready" : trigger;
        }
        if (waiter.since !== since) {
          if (waiter.readyNews) return "notified";
          trigger = "notified"; // news during the look: look again
          continue;
        }
        if (lookedAt >= deadline) return "timeout";
        const dueIn =
          probe.nextDueAt === null
            ? Number.POSITIVE_INFINITY
            : Math.max(0, probe.nextDueAt - (probe.now ?? lookedAt)) + DUE_SLACK_MS;
        const lookIn = listening ? this.#timing.boundMs : this.#nextGap(key);
        const limits = { timeout: deadline - lookedAt, due: dueIn, timer: lookIn };
        const cause = (Object.keys(limits) as Array<keyof typeof limits>).reduce((a, b) =>
          limits[b] < limits[a] ? b : a,
        );
        const woken = await new Promise<boolean>((resolve) => {
          const timer = setTimeout(() => resolve(false), Math.max(0, limits[cause]));
          waiter.rouse = () => {
            clearTimeout(timer);
            resolve(true);
          };
        });
        waiter.rouse = undefined;
        if (waiter.ended !== undefined) return waiter.ended;
        if (waiter.since !== since) {
          if (waiter.readyNews) return "notified";
          trigger = "notified";
          continue;
        }
        if (woken) continue;
        // The sleep ran to its end: which limit ended it says what to do (never the clock, which
        // may read a ms early). A due time is looked at first: a lease renewed meanwhile is not due.
        if (cause === "timeout") return "timeout";
        trigger = cause;
      }
    } finally {
      this.#waiters.delete(waiter);
      signal?.removeEventListener("abort", onAbort);
    }
  }

  /**
   * Races a look or a listener start against the wait's end (an abort, close, the deadline), so a
   * store that does not answer never holds a wait past its bound. A look left behind runs on with
   * its failure handled; a failed look that was not left behind rejects.
   */
  async #race<T>(waiter: Waiter, cutAt: number, work: Promise<T>): Promise<Raced<T>> {
    work.catch(() => {});
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      return await Promise.race([
        work.then((value) => ({ value })),
        new Promise<Raced<T>>((resolve) => {
          const end = (): void => resolve({ ended: waiter.ended ?? "timeout" });
          waiter.interrupt = end;
          if (waiter.ended !== undefined) end();
          if (Number.isFinite(cutAt)) timer = setTimeout(end, Math.max(0, cutAt - Date.now()));
        }),
      ]);
    } catch (error) {
      // A look failed because close() or an abort destroyed its connection: the wait ended so.
      if (waiter.ended !== undefined) return { ended: waiter.ended };
      throw error;
    } finally {
      clearTimeout(timer);
      waiter.interrupt = undefined;
    }
  }

  /** Ends every wait ("closed") and stops the listener. */
  async close(): Promise<void> {
    this.#closed = true;
    for (const waiter of this.#waiters) {
      waiter.ended ??= "closed";
      waiter.rouse?.();
      waiter.interrupt?.();
    }
    const listening = this.#listening;
    this.#listening = undefined;
    if (listening !== undefined) await (await listening.catch(() => async () => {}))();
  }

  /**
   * Starts the shared listener once; false (poll this wait) when it cannot listen now. After a
   * failed start, waits poll for boundMs before one tries again (a listener refused for good,
   * such as a user without the right to subscribe, costs one attempt per bound, not per wait).
   */
  async #listen(): Promise<boolean> {
    const listen = this.#source.listen;
    if (listen === undefined || Date.now() - this.#listenFailedAt < this.#timing.boundMs) return false;
    this.#listening ??= listen((queue, readyNow) => this.notify(queue, readyNow));
    const listening = this.#listening;
    try {
      await listening;
      return !this.#closed;
    } catch {
      if (this.#listening === listening) {
        this.#listening = undefined;
        this.#listenFailedAt = Date.now();
      }
      return false;
    }
  }

  /**
   * One look at the store for a waiter whose latest news is tick `since`. It shares a look in
   * flight or just answered for the same queues only if that look started at or after `since`:
   * an older look may predate the write the news is about.
   */
  #probe(key: string, queues: readonly string[], since: number): Promise<WakeProbe> {
    const shared = this.#probes.get(key);
    if (shared !== undefined && shared.tick >= since) return shared.result;
    const entry: SharedProbe = { tick: this.#tick, result: this.#source.probe(queues) };
    this.#probes.set(key, entry);
    const forget = (): void => {
      if (this.#probes.get(key) === entry) this.#probes.delete(key);
    };
    // Kept a few ms after its answer for the waiters that arrive together; a failed look is not.
    entry.result.then(() => setTimeout(forget, SHARED_PROBE_MS).unref?.(), forget);
    return entry.result;
  }

  #nextGap(key: string): number {
    const bound = this.#timing.boundMs;
    const gap = this.#gaps.get(key) ?? Math.min(FIRST_POLL_MS, bound);
    this.#gaps.set(key, Math.min(gap * 2, bound));
    return gap;
  }
}
