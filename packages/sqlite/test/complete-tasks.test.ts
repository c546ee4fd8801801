import { DatabaseSync } from "node:sqlite";
import { BackendError, ErrorCode, type TaskClaim } from "@sayiir/persistence-core";
import { atTask, claimOrFail, expectCode, rejection, text } from "@sayiir/persistence-core/conformance";
import { afterEach, describe, expect, it } from "vitest";
import type { SqliteBackend, SqliteBackendOptions } from "../src/index.js";
import { createSubject, failInserts } from "./subject.js";

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function fileBackend(options: Partial<SqliteBackendOptions> = {}) {
  const subject = await createSubject({}, options);
  cleanups.push(subject.cleanup, () => subject.backend.close());
  return { backend: subject.backend, path: subject.path };
}

function rawConnection(path: string): DatabaseSync {
  const raw = new DatabaseSync(path);
  cleanups.push(() => raw.close());
  return raw;
}

/** Three instances at t1, each claimed by worker-1. */
async function claimedBatch(backend: SqliteBackend): Promise<TaskClaim[]> {
  const claims: TaskClaim[] = [];
  for (const id of ["wf-1", "wf-2", "wf-3"]) {
    await backend.saveSnapshot(atTask(id, "t1"));
    claims.push(await claimOrFail(backend, id, "t1", "worker-1", 60_000));
  }
  return claims;
}

async function untouched(backend: SqliteBackend, claims: readonly TaskClaim[]): Promise<void> {
  for (const claim of claims) {
    const loaded = await backend.loadSnapshot(claim.instanceId);
    expect(loaded.state.kind === "InProgress" && loaded.state.completedTasks).toEqual({});
    // Still held by worker-1: another worker cannot take it.
    expect(await backend.claimTask(claim.instanceId, "t1", "probe", 60_000)).toBeNull();
  }
}

describe("completeTasks: one transaction per call", () => {
  it("another connection holding the write lock makes the whole call fail as one; nothing lands, then it all does", async () => {
    const { backend, path } = await fileBackend({ busyTimeoutMs: 200 });
    const claims = await claimedBatch(backend);
    const raw = rawConnection(path);
    raw.exec("BEGIN IMMEDIATE");
    const started = Date.now();
    const error = await rejection(
      backend.completeTasks(claims.map((claim) => ({ claim, output: text(claim.instanceId) }))),
    );
    const waited = Date.now() - started;
    expect(error).toBeInstanceOf(BackendError);
    expect(waited).toBeGreaterThanOrEqual(150);
    expect(waited).toBeLessThan(5000);
    raw.exec("ROLLBACK");
    await untouched(backend, claims);
    expect(
      await backend.completeTasks(claims.map((claim) => ({ claim, output: text(claim.instanceId) }))),
    ).toEqual([null, null, null]);
    for (const claim of claims) {
      const loaded = await backend.loadSnapshot(claim.instanceId);
      expect(loaded.state.kind === "InProgress" && loaded.state.completedTasks.t1?.output).toEqual(
        text(claim.instanceId),
      );
    }
  });

  it("a driver failure on the third completion rolls back the first two: results and claim releases", async () => {
    const { backend, path } = await fileBackend();
    const claims = await claimedBatch(backend);
    failInserts(path, "results", "NEW.instance_id = 'wf-3'");
    const error = await expectCode(
      backend.completeTasks(claims.map((claim) => ({ claim, output: text(claim.instanceId) }))),
      ErrorCode.Backend,
    );
    expect(error.message).toContain("boom");
    await untouched(backend, claims);
    // The connection is usable again (no transaction left open).
    expect(await backend.completeTasks([{ claim: claims[0] as TaskClaim, output: text("x") }])).toEqual([
      null,
    ]);
  });

  it("a refused completion between two good ones writes nothing of its own; the others commit with it", async () => {
    const { backend } = await fileBackend();
    const claims = await claimedBatch(backend);
    const [a, b, c] = claims as [TaskClaim, TaskClaim, TaskClaim];
    const stale = { ...b, token: b.token + 1_000 };
    const outcomes = await backend.completeTasks([
      { claim: a, output: text("a") },
      { claim: stale, output: text("b") },
      { claim: c, output: text("c") },
    ]);
    expect(outcomes.map((o) => o?.code ?? null)).toEqual([null, ErrorCode.ClaimLost, null]);
    const raw = backend.database;
    expect(
      raw
        .prepare(`SELECT instance_id FROM "sayiir_results" ORDER BY instance_id`)
        .all()
        .map((r) => r.instance_id),
    ).toEqual(["wf-1", "wf-3"]);
    expect(raw.prepare(`SELECT instance_id, token FROM "sayiir_claims" ORDER BY instance_id`).all()).toEqual([
      { instance_id: "wf-2", token: b.token },
    ]);
  });
});
