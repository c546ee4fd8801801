// The shapes of the clock's filters and updates (no server needed). The server-clock side can
// only run against MongoDB (CI); here we pin what it sends.
import { describe, expect, it } from "vitest";
import { clientClock, serverClock } from "../src/clock.js";

describe("claim clock", () => {
  it("server clock: $$NOW in $expr filters and pipeline updates; caller strings are $literal", () => {
    expect(serverClock.expired()).toEqual({
      $expr: { $and: [{ $eq: [{ $type: "$e" }, "date"] }, { $lte: ["$e", "$$NOW"] }] },
    });
    expect(serverClock.liveTtl()).toEqual({
      $expr: { $and: [{ $eq: [{ $type: "$e" }, "date"] }, { $gt: ["$e", "$$NOW"] }] },
    });
    // An id that looks like a field path or an operator stays a literal string.
    expect(serverClock.claim("$instance.x", "$worker", 1500, 7)).toEqual([
      {
        $set: {
          i: { $literal: "$instance.x" },
          w: { $literal: "$worker" },
          c: "$$NOW",
          e: { $add: ["$$NOW", 1500] },
          k: { $literal: 7 },
        },
      },
    ]);
    expect(serverClock.claim("i", "w", null, 8)).toMatchObject([{ $set: { e: { $literal: null } } }]);
    expect(serverClock.renew(250)).toEqual([{ $set: { e: { $add: ["$$NOW", 250] } } }]);
  });

  it("client clock: Date.now() of this process, in classic filters and $set updates", () => {
    const now = 1_700_000_000_000;
    const clock = clientClock(() => now);
    expect(clock.expired()).toEqual({ e: { $type: "date", $lte: new Date(now) } });
    expect(clock.liveTtl()).toEqual({ e: { $type: "date", $gt: new Date(now) } });
    expect(clock.claim("$i", "$w", 100, 3)).toEqual({
      $set: { i: "$i", w: "$w", c: new Date(now), e: new Date(now + 100), k: 3 },
    });
    expect(clock.claim("i", "w", null, 4)).toMatchObject({ $set: { e: null } });
    expect(clock.renew(50)).toEqual({ $set: { e: new Date(now + 50) } });
  });
});
