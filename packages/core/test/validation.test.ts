import { describe, expect, it } from "vitest";
import {
  compareIds,
  ErrorCode,
  MAX_ID_LENGTH,
  validateBytes,
  validateDuration,
  validateFence,
  validateId,
  validateLimit,
  validateSnapshot,
  validateTtl,
} from "../src/index.js";

const codeOf = (fn: () => unknown): string | undefined => {
  try {
    fn();
  } catch (error) {
    return (error as { code?: string }).code;
  }
  return undefined;
};

describe("compareIds", () => {
  it("orders by code point, like UTF-8 bytes", () => {
    const ids = ["\u{1F600}", "b", "\uFF21", "a", "", "ab", "\uD7FF"];
    const byBytes = [...ids].sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y)));
    expect([...ids].sort(compareIds)).toEqual(byBytes);
  });
});

describe("validation", () => {
  it("accepts ids up to 512 UTF-16 units of any well-formed text but U+0000", () => {
    expect(validateId("taskId", "x".repeat(MAX_ID_LENGTH))).toHaveLength(512);
    expect(validateId("taskId", "🚀".repeat(256))).toHaveLength(512);
    expect(validateId("taskId", "$gt")).toBe("$gt");
    for (const bad of ["", "x".repeat(513), "a\u0000", "\uD800x", 1, null, { $gt: "" }]) {
      expect(codeOf(() => validateId("taskId", bad))).toBe(ErrorCode.Validation);
    }
  });

  it("checks limits, durations and ttls", () => {
    expect(validateLimit(1)).toBe(1);
    expect(validateTtl(undefined)).toBeNull();
    expect(validateTtl(null)).toBeNull();
    expect(validateDuration("d", 200)).toBe(200);
    for (const bad of [0, -1, 0.5, Number.NaN, "3", 10_001])
      expect(codeOf(() => validateLimit(bad))).toBe(ErrorCode.Validation);
    for (const bad of [0, -1, 0.5, Number.POSITIVE_INFINITY])
      expect(codeOf(() => validateTtl(bad))).toBe(ErrorCode.Validation);
  });

  it("gives PayloadTooLarge over the maximum and Validation for non-bytes", () => {
    expect(codeOf(() => validateBytes("o", new Uint8Array(11), 10))).toBe(ErrorCode.PayloadTooLarge);
    expect(validateBytes("o", new Uint8Array(10), 10)).toHaveLength(10);
    expect(codeOf(() => validateBytes("o", "text", 10))).toBe(ErrorCode.Validation);
  });

  it("normalises snapshots: Buffers become plain Uint8Arrays, extra fields are dropped", () => {
    const snapshot = validateSnapshot(
      {
        instanceId: "i",
        definitionHash: "h",
        createdAt: 1,
        updatedAt: 2,
        extra: "dropped",
        initialInput: Buffer.from([1]),
        state: { kind: "Completed", finalOutput: Buffer.from([2]) },
      },
      100,
    );
    expect(Object.keys(snapshot).sort()).toEqual([
      "createdAt",
      "definitionHash",
      "initialInput",
      "instanceId",
      "state",
      "updatedAt",
    ]);
    expect(Object.getPrototypeOf(snapshot.initialInput)).toBe(Uint8Array.prototype);
  });

  it("normalises fences and refuses one for another instance or task", () => {
    expect(validateFence(7, "i", "t")).toEqual({ taskId: "t", token: 7 });
    expect(validateFence({ instanceId: "i", taskId: "t", token: 3 }, "i")).toEqual({
      instanceId: "i",
      taskId: "t",
      token: 3,
    });
    expect(codeOf(() => validateFence({ instanceId: "other", taskId: "t", token: 3 }, "i"))).toBe(
      ErrorCode.Validation,
    );
    expect(codeOf(() => validateFence({ taskId: "t2", token: 3 }, "i", "t"))).toBe(ErrorCode.Validation);
    expect(codeOf(() => validateFence(7, "i"))).toBe(ErrorCode.Validation);
    expect(codeOf(() => validateFence({ taskId: "t", token: 0 }, "i"))).toBe(ErrorCode.Validation);
  });
});
