// The clock that judges claim expiry (no server needed): server time sampled from a reply's
// localTime and interpolated with a monotonic clock, or the client's Date.now().
import { describe, expect, it } from "vitest";
import { clientClock, ServerClock, type ServerTimeSample } from "../src/clock.js";

describe("claim clock", () => {
  it("server clock: localTime at the midpoint of the round trip, then interpolated monotonically", async () => {
    let mono = 1_000;
    const samples: ServerTimeSample[] = [{ serverMs: 1_700_000_000_000, sentAt: 1_000, receivedAt: 1_010 }];
    const clock = new ServerClock(async () => samples.shift() as ServerTimeSample, {
      refreshMs: 10_000,
      monotonic: () => mono,
    });
    mono = 1_010;
    // The server stamped localTime somewhere in the round trip: assume the middle (±5 ms).
    expect(await clock.now()).toBe(1_700_000_000_005);
    expect(clock.uncertaintyMs).toBe(5);
    mono = 2_010;
    expect(await clock.now()).toBe(1_700_000_001_005);
  });

  it("server clock: resamples in the background after refreshMs; a failed resample keeps the estimate", async () => {
    let mono = 0;
    let calls = 0;
    const clock = new ServerClock(
      async () => {
        calls++;
        if (calls === 2) throw new Error("network");
        // The server's clock moved 500 ms ahead of the first estimate (e.g. a failover).
        return { serverMs: calls === 1 ? 5_000 : 5_000 + mono + 500, sentAt: mono, receivedAt: mono };
      },
      { refreshMs: 100, monotonic: () => mono },
    );
    expect(await clock.now()).toBe(5_000);
    mono = 50;
    expect(await clock.now()).toBe(5_050);
    expect(calls).toBe(1);
    mono = 200; // stale: the failed resample is ignored, the old estimate is kept
    expect(await clock.now()).toBe(5_200);
    await new Promise((r) => setTimeout(r, 0));
    mono = 300; // stale again: this resample succeeds and is used from the next call on
    await clock.now();
    await new Promise((r) => setTimeout(r, 0));
    expect(calls).toBe(3);
    expect(await clock.now()).toBe(5_800);
  });

  it("server clock: a sample less precise than the one in use is turned down (a reply that sat in a busy event loop)", async () => {
    // The server's clock is monotonic time + 10,000 exactly; each sample says when it was asked and
    // when its reply was handled, and the server stamped localTime 5 ms after it was asked.
    let mono = 0;
    const replies: Array<{ sentAt: number; receivedAt: number }> = [
      { sentAt: 0, receivedAt: 10 }, // precise: bound 5 ms
      { sentAt: 20_000, receivedAt: 20_600 }, // the reply waited 595 ms: bound 300 ms, taken it is 295 ms off
      { sentAt: 40_000, receivedAt: 40_006 }, // precise again: bound 3 ms
    ];
    const clock = new ServerClock(
      async () => {
        const r = replies.shift() as { sentAt: number; receivedAt: number };
        return { serverMs: 10_000 + r.sentAt + 5, ...r };
      },
      { refreshMs: 10_000, monotonic: () => mono },
    );
    mono = 10;
    expect(await clock.now()).toBe(10_010);
    mono = 20_600; // stale: resamples in the background; the imprecise sample must not be taken
    expect(await clock.now()).toBe(30_600);
    await new Promise((r) => setTimeout(r, 0));
    expect(await clock.now()).toBe(30_600);
    expect(clock.uncertaintyMs).toBe(5);
    // Aged 40 s, the first sample's bound is 5 + 40 ms: the precise third sample replaces it.
    mono = 40_006;
    await clock.now();
    await new Promise((r) => setTimeout(r, 0));
    expect(clock.uncertaintyMs).toBe(3);
    expect(await clock.now()).toBe(50_008); // the server's 50,006, within the bound
  });

  it("server clock: an imprecise estimate resamples every second (not every refreshMs) and takes a precise reply", async () => {
    let mono = 0;
    let calls = 0;
    const clock = new ServerClock(
      async () => {
        calls++;
        // The first reply waited 100 ms (bound 50 ms); later ones are precise.
        const sentAt = mono;
        const receivedAt = calls === 1 ? mono + 100 : mono + 2;
        return { serverMs: 7_000 + sentAt + 1, sentAt, receivedAt };
      },
      { refreshMs: 60_000, monotonic: () => mono },
    );
    await clock.now();
    expect(clock.uncertaintyMs).toBe(50);
    mono = 900; // within a second: no resample yet although refreshMs is a minute
    await clock.now();
    expect(calls).toBe(1);
    mono = 1_200; // past a second with a bound over PRECISE_MS: resample, and take the precise reply
    await clock.now();
    await new Promise((r) => setTimeout(r, 0));
    expect(calls).toBe(2);
    expect(clock.uncertaintyMs).toBe(1);
    expect(await clock.now()).toBe(7_000 + 1_200);
  });

  it("client clock: Date.now() of this process", async () => {
    const clock = clientClock(() => 42);
    expect(clock.mode).toBe("client");
    expect(await clock.now()).toBe(42);
  });
});
