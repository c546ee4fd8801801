// The pure decisions every compare-and-set commits (no server needed).
import { compareIds, ErrorCode } from "@sayiir/persistence-core";
import { REVOKED_EXPIRY } from "@sayiir/persistence-core/adapter";
import { describe, expect, it } from "vitest";
import {
  completionPlan,
  consumption,
  fenceHolds,
  isLive,
  nextUpdate,
  readyFields,
  revokedClaims,
  statusOf,
  timerFields,
  withClaim,
  writeView,
} from "../src/instance.js";
import { type InstanceDoc, orderKey } from "../src/layout.js";
import { PRUNE_EXPIRED_AFTER_MS, prunedClaims } from "../src/maintenance.js";

const doc: InstanceDoc = {
  _id: "i",
  v: "v1",
  d: "hash",
  f: false,
  p: "t1",
  r: [{ t: "t0", g: "g0" }],
  u: 100,
  c: [{ t: "t1", w: "w", k: 7, c: 1_000, e: 2_000 }],
};

describe("instance document decisions", () => {
  it("a fence holds only for the live claim's token", () => {
    expect(fenceHolds(doc, { taskId: "t1", token: 7 }, 1_999)).toBe(true);
    expect(fenceHolds(doc, { taskId: "t1", token: 7 }, 2_000)).toBe(false); // expired
    expect(fenceHolds(doc, { taskId: "t1", token: 6 }, 1_500)).toBe(false);
    expect(fenceHolds(doc, { taskId: "t0", token: 7 }, 1_500)).toBe(false);
    expect(fenceHolds(null, { taskId: "t1", token: 7 }, 1_500)).toBe(false);
  });

  it("ready fields: only a stored, unfinished snapshot at a task without result or ttl-less claim", () => {
    expect(readyFields("i", doc, 1_000)).toEqual({ qn: "default", qa: 2_100, qi: "69", qe: 2_000 });
    expect(readyFields("i", { ...doc, c: [] }, 1_000)).toEqual({
      qn: "default",
      qa: 2_100,
      qi: "69",
      qe: null,
    });
    expect(readyFields("i", { ...doc, c: [{ t: "t1", w: "w", k: 7, c: 1, e: null }] })).toBeNull();
    expect(readyFields("i", { ...doc, r: [{ t: "t1", g: "g" }] })).toBeNull();
    expect(readyFields("i", { ...doc, f: true })).toBeNull();
    expect(readyFields("i", { ...doc, p: null })).toBeNull();
    expect(readyFields("i", { c: doc.c })).toBeNull(); // a claims-only placeholder
  });

  it("the update sets only what changed, a new version and the ready fields; never $set and $unset of one field", () => {
    expect(nextUpdate("i", doc, { c: [] }, [], "v2", undefined, 1_000)).toEqual({
      $set: { c: [], v: "v2", qn: "default", qa: 2_100, qi: "69", qe: null },
    });
    expect(nextUpdate("i", doc, { r: [{ t: "t1", g: "g1" }], l: "t1", u: 150 }, ["hg"], "v3")).toEqual({
      $set: { r: [{ t: "t1", g: "g1" }], l: "t1", u: 150, v: "v3" },
      $unset: { hg: "", qn: "", qa: "", qi: "", qe: "" },
    });
    expect(
      nextUpdate("i", null, { c: [], d: "h", p: "t", u: 5, r: [] }, ["h"], "v4", undefined, 1_000).$set,
    ).toMatchObject({
      qn: "default",
      qa: 2_005,
      qi: "69",
      qe: null,
    });
  });

  it("the ready index's tie-break key sorts (as plain ASCII) in code point order, like compareIds", () => {
    const ids = [
      "tie-\u{1F600}",
      "tie-b",
      "tie-\uFF21",
      "tie-a",
      "tie-\u00E9",
      "tie-\u{10FFFD}",
      "tie-",
      "tie-a\u0001",
      "a:b",
      "a",
      "\uE000",
      "\uD7FF",
      "\u{10000}",
    ];
    const ascii = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
    const byKey = [...ids].sort((a, b) => ascii(orderKey(a), orderKey(b)));
    expect(byKey).toEqual([...ids].sort(compareIds));
    expect(readyFields("\uFF21", doc)?.qi).toBe("efbca1");
  });

  it("a write that rewrites the claims drops other tasks' claims expired for an hour or more", () => {
    const hour = PRUNE_EXPIRED_AFTER_MS;
    const claims = [
      { t: "stale", w: "w", k: 1, c: 0, e: 1_000 },
      { t: "recent", w: "w", k: 2, c: 0, e: 1_000 + hour },
      { t: "forever", w: "w", k: 3, c: 0, e: null },
    ];
    const at = 1_000 + hour;
    expect(withClaim({ ...doc, c: claims }, "new", undefined, at).map((c) => c.t)).toEqual([
      "recent",
      "forever",
    ]);
    expect(withClaim({ ...doc, c: claims }, "recent", undefined, at - 1).map((c) => c.t)).toEqual([
      "stale",
      "forever",
    ]);
    expect(prunedClaims({ ...doc, c: claims }, at)?.map((c) => c.t)).toEqual(["recent", "forever"]);
    expect(prunedClaims({ ...doc, c: claims }, at - 1)).toBeUndefined();
  });
  it("a completion batch: judged one by one in saveTaskResult's order, the accepted folded into one change", () => {
    const busy: InstanceDoc = {
      ...doc,
      r: [
        { t: "t0", g: "g0" },
        { t: "t2", g: "old" },
      ],
      c: [
        { t: "t1", w: "w", k: 7, c: 1_000, e: 2_000 },
        { t: "t2", w: "w", k: 8, c: 1_000, e: null },
        { t: "t3", w: "w", k: 9, c: 1_000, e: 1_200 }, // expired
        { t: "t4", w: "w", k: 10, c: 1_000, e: 2_000 },
      ],
    };
    const items = [
      { taskId: "t1", token: 7, blobId: "b1" },
      { taskId: "t3", token: 9, blobId: "b3" },
      { taskId: "t2", token: 8, blobId: "b2" },
      { taskId: "t4", token: 11, blobId: "b4" }, // not the live token
    ];
    const plan = completionPlan("i", busy, items, 1_500);
    expect(plan.outcomes.map((o) => o?.code ?? null)).toEqual([
      null,
      ErrorCode.ClaimLost,
      null,
      ErrorCode.ClaimLost,
    ]);
    expect(plan.changes).toEqual({
      r: [
        { t: "t0", g: "g0" },
        { t: "t1", g: "b1" },
        { t: "t2", g: "b2" },
      ],
      l: "t2",
      u: 1_500,
      // The refused completions' claims stay as they were.
      c: [
        { t: "t3", w: "w", k: 9, c: 1_000, e: 1_200 },
        { t: "t4", w: "w", k: 10, c: 1_000, e: 2_000 },
      ],
    });
    expect(plan.replaced).toEqual(["old"]);
    // updatedAt never goes back.
    expect(completionPlan("i", { ...busy, u: 9_999 }, items, 1_500).changes?.u).toBe(9_999);
    // Nothing accepted: nothing to write.
    expect(completionPlan("i", null, items, 1_500)).toMatchObject({ changes: undefined, replaced: [] });
    expect(completionPlan("i", null, items, 1_500).outcomes.map((o) => o?.code)).toEqual(
      items.map(() => ErrorCode.NotFound),
    );
    const finished = completionPlan("i", { ...busy, f: true }, items, 1_500);
    expect(finished.changes).toBeUndefined();
    // A stale claim on a finished instance is ClaimLost (checked first), a live one Conflict.
    expect(finished.outcomes.map((o) => o?.code)).toEqual([
      ErrorCode.Conflict,
      ErrorCode.ClaimLost,
      ErrorCode.Conflict,
      ErrorCode.ClaimLost,
    ]);
  });

  it("a wait: ready with an event of its name pending, else in the timer index with a timeout, else in neither", () => {
    const wait: InstanceDoc = { ...doc, p: null, w: { n: "go", t: "t1", o: 5_000 }, c: [] };
    const event = { q: 3, n: "go", a: 1, z: 0 };
    expect(readyFields("i", wait)).toBeNull();
    const timer = { tn: "default", tp: 3, ta: 5_000, ti: "69" };
    expect(timerFields("i", wait)).toEqual({ ...timer, te: null });
    expect(timerFields("i", { ...wait, c: doc.c })).toEqual({ ...timer, te: 2_000 });
    expect(timerFields("i", { ...wait, e: [{ ...event, n: "other" }] })).not.toBeNull();
    expect(readyFields("i", { ...wait, e: [event] }, 1_000)).toEqual({
      qn: "default",
      qa: 2_100,
      qi: "69",
      qe: null,
    });
    expect(timerFields("i", { ...wait, e: [event] })).toBeNull();
    expect(timerFields("i", { ...wait, w: { n: "go", t: "t1", o: null } })).toBeNull();
    // Paused, cancelled, finished, or the next task has a result: in neither index.
    for (const state of [
      { s: "Paused" as const },
      { s: "Cancelled" as const, f: true },
      { r: [{ t: "t1", g: "g" }] },
    ]) {
      expect(readyFields("i", { ...wait, e: [event], ...state })).toBeNull();
      expect(timerFields("i", { ...wait, ...state })).toBeNull();
    }
    expect(readyFields("i", { ...doc, s: "Paused" })).toBeNull();
  });

  it("events change by $push, $pull and $unset (never a rewritten array), and the index fields follow", () => {
    const wait: InstanceDoc = { ...doc, p: null, w: { n: "go", t: "t1", o: 5_000 }, c: [], ta: 5_000 };
    const event = { q: 1, n: "go", a: 1, z: 2, b: new Uint8Array(2) };
    expect(nextUpdate("i", wait, { es: 1 }, [], "v2", { push: event }, 1_000)).toEqual({
      $set: { es: 1, v: "v2", qn: "default", qa: 2_100, qi: "69", qe: null },
      $unset: { tn: "", tp: "", ta: "", ti: "", te: "" },
      $push: { e: event },
    });
    const ready: InstanceDoc = { ...wait, ta: undefined, e: [event], qa: 100 };
    expect(nextUpdate("i", ready, {}, [], "v3", { pull: [1] })).toEqual({
      $set: { v: "v3", tn: "default", tp: 3, ta: 5_000, ti: "69", te: null },
      $unset: { qn: "", qa: "", qi: "", qe: "" },
      $pull: { e: { q: { $in: [1] } } },
    });
    expect(nextUpdate("i", ready, { f: true }, [], "v4", { clear: true })).toEqual({
      $set: { f: true, v: "v4" },
      $unset: { qn: "", qa: "", qi: "", qe: "", e: "" },
    });
  });

  it("consuming: only the oldest pending event of its name, removed with the write; a terminal write removes all", () => {
    const events = [
      { q: 1, n: "a", a: 1, z: 1, g: "blob-1" },
      { q: 2, n: "b", a: 1, z: 1 },
      { q: 3, n: "a", a: 1, z: 1 },
    ];
    const d: InstanceDoc = { ...doc, e: events };
    expect(consumption("i", d, { eventName: "a", sequence: 1 }, false)).toEqual({
      change: { pull: [1] },
      garbage: ["blob-1"],
    });
    expect(consumption("i", d, { eventName: "b", sequence: 2 }, false)).toEqual({
      change: { pull: [2] },
      garbage: [],
    });
    expect(() => consumption("i", d, { eventName: "a", sequence: 3 }, false)).toThrow(/not the oldest/);
    expect(() => consumption("i", d, { eventName: "c", sequence: 4 }, false)).toThrow(/not the oldest/);
    expect(() => consumption("i", null, { eventName: "a", sequence: 1 }, false)).toThrow(/not the oldest/);
    expect(consumption("i", d, undefined, true)).toEqual({ change: { clear: true }, garbage: ["blob-1"] });
    expect(consumption("i", d, undefined, false)).toEqual({ change: undefined, garbage: [] });
  });

  it("a revoked claim is expired on every clock: its expiry is the epoch, not live, no fence holds; pruned an hour after its revocation", () => {
    const live = { t: "t1", w: "w", k: 7, c: 1_000, e: 9_000 };
    const forever = { t: "t2", w: "w", k: 8, c: 1_000, e: null };
    const expired = { t: "t3", w: "w", k: 9, c: 1_000, e: 1_100 };
    const revoked = revokedClaims({ ...doc, c: [live, forever, expired] }, 2_000);
    expect(REVOKED_EXPIRY).toBe(0);
    expect(revoked).toEqual([
      { ...live, e: REVOKED_EXPIRY, x: 2_000 },
      { ...forever, e: REVOKED_EXPIRY, x: 2_000 },
      // A lapsed claim is revoked too: after a cancel no claim is listed (loadTaskClaims).
      { ...expired, e: REVOKED_EXPIRY, x: 2_000 },
    ]);
    // A process whose clock is behind the one that revoked (even at the epoch) still sees them expired.
    for (const claim of revoked.slice(0, 2)) {
      expect(isLive(claim, 0)).toBe(false);
      expect(isLive(claim, -1)).toBe(false);
    }
    expect(fenceHolds({ ...doc, c: revoked }, { taskId: "t1", token: 7 }, 0)).toBe(false);
    expect(writeView({ ...doc, c: revoked }, { taskId: "t1", token: 7 }, 0).claim).toEqual({
      token: 7,
      expiresAt: REVOKED_EXPIRY,
    });
    // Pruning counts from the revocation, not from the epoch: the record stays for the hour.
    const hour = 2_000 + PRUNE_EXPIRED_AFTER_MS;
    const onlyRevoked = revoked.slice(0, 2);
    expect(prunedClaims({ ...doc, c: onlyRevoked }, hour - 1)).toBeUndefined();
    expect(prunedClaims({ ...doc, c: onlyRevoked }, hour)).toEqual([]);
  });

  it("a cancel is final and the heartbeat reads it: the write view and the status come from the version read", () => {
    const cancelled: InstanceDoc = { ...doc, f: true, s: "Cancelled", p: null };
    const view = writeView(cancelled, undefined, 0);
    expect(view).toMatchObject({ found: true, finished: true, cancelled: true, paused: false });
    expect(writeView({ ...doc, s: "Paused" }, undefined, 0)).toMatchObject({
      cancelled: false,
      paused: true,
    });
    expect(statusOf(cancelled)).toBe("Cancelled");
    // A document of an older release has no status; it can never be Cancelled.
    const { s: _, ...legacy } = { ...doc, s: "InProgress" as const };
    expect(statusOf(legacy)).toBeUndefined();
    expect(writeView(legacy, undefined, 0).cancelled).toBe(false);
    expect(statusOf({ _id: "i", v: "v", c: [] })).toBeUndefined(); // a claims-only placeholder
    expect(statusOf(null)).toBeUndefined();
  });
});
