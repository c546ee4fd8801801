// The pure plan of one instance's completions when some carry `next` (no server needed): the
// fold in batch order, what the commit sets, removes and frees, and what is refused.
import { ErrorCode, encodeSnapshotHeader, SerializationError } from "@sayiir/persistence-core";
import { atTask, text } from "@sayiir/persistence-core/conformance";
import { describe, expect, it } from "vitest";
import type { InstanceDoc } from "../src/layout.js";
import { type Stepping, stepPlan } from "../src/step.js";

/** The header of a workflow at `taskId` (what saveSnapshot stores: no results, no initial input). */
const headerAt = (taskId: string) => encodeSnapshotHeader(atTask("i", taskId, { last: "t1" }));

const doc: InstanceDoc = {
  _id: "i",
  v: "v1",
  d: "hash",
  f: false,
  s: "InProgress",
  p: "t2",
  r: [
    { t: "t0", g: "g0" },
    { t: "t1", g: "g1" },
  ],
  l: "t1",
  u: 100,
  c: [
    { t: "t2", w: "w", k: 7, c: 50, e: 2_000 },
    { t: "side", w: "w", k: 8, c: 50, e: 2_000 },
  ],
  e: [
    { q: 1, n: "go", a: 60, z: 10, g: "ev1" },
    { q: 2, n: "other", a: 61, z: 1 },
  ],
};
const stored = { header: headerAt("t2"), legacyInput: undefined };
const item = (taskId: string, token: number, blobId: string, extra: Partial<Stepping> = {}): Stepping => ({
  taskId,
  token,
  blobId,
  ...extra,
});

describe("stepPlan", () => {
  it("a step: its result in (the others untouched), the claim out, header and position moved, updatedAt never back", () => {
    const plan = stepPlan(
      "i",
      doc,
      stored,
      [item("t2", 7, "b2", { next: { kind: "AtTask", taskId: "t3" } })],
      1_000,
    );
    expect(plan.outcomes).toEqual([null]);
    const fields = plan.commit?.fields;
    expect(fields?.r).toEqual([...(doc.r ?? []), { t: "t2", g: "b2" }]);
    expect([fields?.l, fields?.u, fields?.s, fields?.f, fields?.p]).toEqual([
      "t2",
      1_000,
      "InProgress",
      false,
      "t3",
    ]);
    expect(fields?.c?.map((c) => c.t)).toEqual(["side"]);
    expect(fields?.h).toBeInstanceOf(Uint8Array);
    expect(plan.commit?.remove.sort()).toEqual(["hg", "sc", "w"]);
    expect(plan.commit?.events).toBeUndefined();
    expect([plan.kept, plan.garbage, plan.blobs]).toEqual([["b2"], [], []]);
    expect(
      stepPlan(
        "i",
        { ...doc, u: 5_000 },
        stored,
        [item("t2", 7, "b2", { next: { kind: "AtTask", taskId: "t3" } })],
        1_000,
      ).commit?.fields.u,
    ).toBe(5_000);
  });

  it("folds in batch order: a plain completion and a step of one instance are one commit; after a terminal step, Conflict", () => {
    const plan = stepPlan(
      "i",
      doc,
      stored,
      [
        item("side", 8, "bs"),
        item("t2", 7, "b2", {
          next: { kind: "Completed", finalOutput: text("end") },
          consumeEvent: { eventName: "go", sequence: 1 },
        }),
      ],
      1_000,
    );
    expect(plan.outcomes).toEqual([null, null]);
    // Completed keeps no results (the side task's new one included: not kept), drops every event.
    expect(plan.commit?.fields.r).toEqual([]);
    expect(plan.commit?.fields.c).toEqual([]);
    expect(plan.commit?.events).toEqual({ clear: true });
    expect(plan.kept).toEqual([]);
    expect(plan.garbage.sort()).toEqual(["ev1", "g0", "g1"]);
    const after = stepPlan(
      "i",
      doc,
      stored,
      [item("t2", 7, "b2", { next: { kind: "Failed", error: "x" } }), item("side", 8, "bs")],
      1_000,
    );
    expect(after.outcomes.map((o) => o?.code ?? null)).toEqual([null, ErrorCode.Conflict]);
    expect(after.commit?.fields.c?.map((c) => c.t)).toEqual(["side"]);
  });

  it("refusals in the kit's order write nothing: a stale token, a paused or moved workflow, an event not the oldest, no snapshot", () => {
    const next = { kind: "AtTask", taskId: "t3" } as const;
    const codes = (plan: ReturnType<typeof stepPlan>) => plan.outcomes.map((o) => o?.code ?? null);
    const stale = stepPlan("i", doc, stored, [item("t2", 6, "b", { next })], 1_000);
    expect([codes(stale), stale.commit]).toEqual([[ErrorCode.ClaimLost], undefined]);
    const paused = stepPlan("i", { ...doc, s: "Paused" }, stored, [item("t2", 7, "b", { next })], 1_000);
    expect(codes(paused)).toEqual([ErrorCode.Conflict]);
    const moved = stepPlan(
      "i",
      doc,
      { header: headerAt("t9"), legacyInput: undefined },
      [item("t2", 7, "b", { next })],
      1_000,
    );
    expect(codes(moved)).toEqual([ErrorCode.Conflict]);
    const event = stepPlan(
      "i",
      doc,
      stored,
      [item("t2", 7, "b", { next, consumeEvent: { eventName: "go", sequence: 9 } })],
      1_000,
    );
    expect([codes(event), event.commit]).toEqual([[ErrorCode.Conflict], undefined]);
    const missing = stepPlan("i", null, undefined, [item("t2", 7, "b", { next })], 1_000);
    expect(codes(missing)).toEqual([ErrorCode.NotFound]);
    // Consuming the oldest one: pulled, its blob freed once the commit lands.
    const consumed = stepPlan(
      "i",
      doc,
      stored,
      [item("t2", 7, "b", { next, consumeEvent: { eventName: "go", sequence: 1 } })],
      1_000,
    );
    expect([consumed.commit?.events, consumed.garbage]).toEqual([{ pull: [1] }, ["ev1"]]);
  });

  it("an unreadable header refuses the steps with its error; plain completions of the instance go on", () => {
    const damage = new SerializationError("bad header");
    const plan = stepPlan(
      "i",
      doc,
      damage,
      [item("t2", 7, "b2", { next: { kind: "AtTask", taskId: "t3" } }), item("side", 8, "bs")],
      1_000,
    );
    expect(plan.outcomes).toEqual([damage, null]);
    expect(plan.commit?.fields.h).toBeUndefined();
    expect(plan.commit?.fields.r?.map((e) => e.t)).toEqual(["t0", "t1", "side"]);
  });
});
