import { describe, expect, it } from "vitest";
import {
  BackendError,
  ErrorCode,
  NotFoundError,
  PersistenceError,
  redactSecrets,
  toBackendError,
} from "../src/index.js";

describe("errors", () => {
  it("subclasses carry their code and name", () => {
    const error = new NotFoundError("missing");
    expect(error).toBeInstanceOf(PersistenceError);
    expect(error.code).toBe(ErrorCode.NotFound);
    expect(error.name).toBe("NotFoundError");
  });

  it("wraps driver errors as BackendError with the cause, passing PersistenceErrors through", () => {
    const cause = new Error("connect ECONNREFUSED");
    const wrapped = toBackendError("loadSnapshot", cause);
    expect(wrapped).toBeInstanceOf(BackendError);
    expect(wrapped.cause).toBe(cause);
    const notFound = new NotFoundError("x");
    expect(toBackendError("op", notFound)).toBe(notFound);
  });

  it("never repeats a password from a connection string", () => {
    const message =
      "failed for postgres://app:s3cr%21t@db:5432/x and redis://:hunter2@cache:6379 password=abc123";
    const clean = redactSecrets(message);
    expect(clean).not.toContain("s3cr%21t");
    expect(clean).not.toContain("hunter2");
    expect(clean).not.toContain("abc123");
    expect(new BackendError(message).message).toBe(clean);
    expect(redactSecrets("auth failed for pw-value-9", ["pw-value-9"])).toBe("auth failed for ***");
  });
});
