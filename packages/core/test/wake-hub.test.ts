import { describe, expect, it } from "vitest";
import { WakeHub, type WakeSource } from "../src/adapter/index.js";
import type { WakeProbe } from "../src/index.js";

/*
 * The hub's own rules, with scripted looks instead of a store (the conformance group `wake-ups`
 * runs the same waits against every real backend): a store that does not answer never holds a wait
 * past its abort or deadline, due times are read on the store's clock, a due time is looked at
 * before the wait ends, and a listener that cannot start is not retried by every wait.
 */

const never = <T>(): Promise<T> => new Promise<T>(() => {});
const idle: WakeProbe = { ready: false, nextDueAt: null };
/** A listener that starts and never says anything: the hub looks only on its own timers. */
const listening: WakeSource["listen"] = async () => async () => {};

function source(probe: WakeSource["probe"], listen?: WakeSource["listen"]): WakeSource {
  return listen === undefined ? { probe } : { probe, listen };
}

async function timed<T>(work: Promise<T>): Promise<{ value: T; ms: number }> {
  const started = Date.now();
  const value = await work;
  return { value, ms: Date.now() - started };
}

describe("WakeHub", () => {
  it("a look that never answers does not hold the wait past its abort or its deadline", async () => {
    const hub = new WakeHub(source(never), { mode: "poll", boundMs: 100 });
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 50);
    const aborted = await timed(hub.wait(["q"], 10_000, controller.signal));
    expect(aborted.value).toBe("aborted");
    expect(aborted.ms).toBeLessThan(1_000);
    const timedOut = await timed(hub.wait(["q"], 200, undefined));
    expect(timedOut.value).toBe("timeout");
    expect(timedOut.ms).toBeGreaterThanOrEqual(190);
    expect(timedOut.ms).toBeLessThan(1_000);
  });

  it("a listener that never starts does not hold the wait either; close ends it", async () => {
    const hub = new WakeHub(
      source(async () => idle, never),
      { mode: "push", boundMs: 10_000 },
    );
    const waiting = hub.wait(["q"], 10_000, undefined);
    setTimeout(() => void hub.close(), 50);
    const closed = await timed(waiting);
    expect(closed.value).toBe("closed");
    expect(closed.ms).toBeLessThan(1_000);
  });

  it("sleeps until a due time by the store's clock, whatever this process's clock says", async () => {
    // The store's clock is 5 s ahead: its due time is 300 ms after its own now.
    const skew = 5_000;
    let looks = 0;
    let dueAt = 0;
    const hub = new WakeHub(
      source(async () => {
        looks++;
        const now = Date.now() + skew;
        if (looks === 1) dueAt = now + 300;
        return now >= dueAt ? { ready: true, nextDueAt: null, now } : { ready: false, nextDueAt: dueAt, now };
      }, listening),
      { mode: "push", boundMs: 10_000 },
    );
    const woken = await timed(hub.wait(["q"], 10_000, undefined));
    expect(woken.value).toBe("due");
    expect(woken.ms).toBeGreaterThanOrEqual(290);
    expect(woken.ms).toBeLessThan(1_500);
    expect(looks).toBe(2);
  });

  it("a due time that finds nothing claimable (a lease renewed meanwhile) does not end the wait", async () => {
    let looks = 0;
    const hub = new WakeHub(
      source(async () => {
        looks++;
        return { ready: false, nextDueAt: Date.now() + 50 };
      }, listening),
      { mode: "push", boundMs: 10_000 },
    );
    const ended = await timed(hub.wait(["q"], 400, undefined));
    expect(ended.value).toBe("timeout");
    expect(ended.ms).toBeGreaterThanOrEqual(390);
    // One look, then one per due time (every ~50 ms): not a poll at 10 ms.
    expect(looks).toBeGreaterThanOrEqual(4);
    expect(looks).toBeLessThanOrEqual(12);
  });

  it("a notification ends the wait after a look confirms it; a look before any news says 'ready'", async () => {
    let ready = false;
    const hub = new WakeHub(
      source(async () => ({ ready, nextDueAt: null }), listening),
      { mode: "push", boundMs: 10_000 },
    );
    const waiting = hub.wait(["q"], 5_000, undefined);
    const other = hub.wait(["other"], 300, undefined);
    await new Promise((resolve) => setTimeout(resolve, 50));
    hub.notify("q"); // nothing claimable yet: the wait goes on
    await new Promise((resolve) => setTimeout(resolve, 50));
    ready = true;
    hub.notify("q");
    expect(await waiting).toBe("notified");
    expect(await other).toBe("timeout");
    expect(await hub.wait(["q"], 5_000, undefined)).toBe("ready");
  });

  it("a notification that says a task is claimable now ends the wait without a look", async () => {
    let looks = 0;
    const hub = new WakeHub(
      source(async () => {
        looks++;
        return idle;
      }, listening),
      { mode: "push", boundMs: 10_000 },
    );
    const waiting = hub.wait(["q"], 5_000, undefined);
    await new Promise((resolve) => setTimeout(resolve, 50));
    hub.notify("other", true);
    hub.notify("q", true);
    expect(await waiting).toBe("notified");
    expect(looks).toBe(1); // the entry look only
  });

  it("a listener that failed to start is tried again only after the bound; meanwhile waits poll", async () => {
    let starts = 0;
    let looks = 0;
    const hub = new WakeHub(
      source(
        async () => {
          looks++;
          return idle;
        },
        async () => {
          starts++;
          throw new Error("NOPERM this user has no permissions to access the channel");
        },
      ),
      { mode: "push", boundMs: 10_000 },
    );
    for (let i = 0; i < 3; i++) expect(await hub.wait(["q"], 100, undefined)).toBe("timeout");
    expect(starts).toBe(1);
    expect(looks).toBeGreaterThan(3); // polled, not one look per wait
  });
});
