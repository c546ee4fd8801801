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

  it("client clock: Date.now() of this process", async () => {
    const clock = clientClock(() => 42);
    expect(clock.mode).toBe("client");
    expect(await clock.now()).toBe(42);
  });
});
