// A backend wrapper that records every claim, extension, release and write with its fencing token,
// one JSON line per event, written with writeSync so that a SIGKILL loses nothing that returned.
import { closeSync, openSync, writeSync } from "node:fs";
import type {
  ListPageOptions,
  PersistentBackend,
  PurgeOptions,
  RenewedClaim,
  TaskClaim,
  TaskResultWriteOptions,
  WorkflowSnapshot,
  WriteOptions,
} from "@sayiir/persistence-core";

/** One recorded event. Times: q/r = local Date.now() before the request / after the response. */
export type RecordedEvent =
  | {
      k: "claim";
      w: string;
      i: string;
      t: string;
      tok: number;
      ca: number;
      ea: number | null;
      q: number;
      r: number;
    }
  | {
      k: "extend";
      w: string;
      i: string;
      t: string;
      tok: number;
      ea: number | null;
      d: number;
      q: number;
      r: number;
    }
  | { k: "extend-fail"; w: string; i: string; t: string; code: string; q: number; r: number }
  | { k: "release-req"; w: string; i: string; t: string; q: number }
  | { k: "release"; w: string; i: string; t: string; q: number; r: number }
  | {
      k: "write";
      op: "result" | "snapshot";
      w: string;
      i: string;
      t: string | null;
      tok: number | null;
      ok: boolean;
      code: string | null;
      q: number;
      r: number;
    };

function fenceOf(
  claim: TaskResultWriteOptions["claim"],
  taskId: string | null,
): { t: string | null; tok: number | null } {
  if (claim === undefined || claim === null) return { t: taskId, tok: null };
  if (typeof claim === "number") return { t: taskId, tok: claim };
  return { t: claim.taskId ?? taskId, tok: claim.token };
}

/** Wraps `backend` so that every claim-related call of `workerId` is appended to `logPath`. */
export function recordingBackend(
  backend: PersistentBackend,
  workerId: string,
  logPath: string,
): PersistentBackend {
  const fd = openSync(logPath, "a");
  const log = (event: RecordedEvent) => writeSync(fd, `${JSON.stringify(event)}\n`);
  const claimEvent = (c: TaskClaim, q: number, r: number): RecordedEvent => ({
    k: "claim",
    w: c.workerId,
    i: c.instanceId,
    t: c.taskId,
    tok: c.token,
    ca: c.claimedAt,
    ea: c.expiresAt,
    q,
    r,
  });
  async function write(
    op: "result" | "snapshot",
    i: string,
    fence: { t: string | null; tok: number | null },
    call: () => Promise<void>,
  ): Promise<void> {
    const q = Date.now();
    try {
      await call();
      log({ k: "write", op, w: workerId, i, ...fence, ok: true, code: null, q, r: Date.now() });
    } catch (error) {
      const code = (error as { code?: string }).code ?? "UNTYPED";
      log({ k: "write", op, w: workerId, i, ...fence, ok: false, code, q, r: Date.now() });
      throw error;
    }
  }
  return {
    capabilities: backend.capabilities,
    saveSnapshot: (snapshot: WorkflowSnapshot, options?: WriteOptions) =>
      write("snapshot", snapshot.instanceId, fenceOf(options?.claim, null), () =>
        backend.saveSnapshot(snapshot, options),
      ),
    saveTaskResult: (i: string, t: string, output: Uint8Array, options?: TaskResultWriteOptions) =>
      write("result", i, fenceOf(options?.claim, t), () => backend.saveTaskResult(i, t, output, options)),
    loadSnapshot: (i: string) => backend.loadSnapshot(i),
    loadTaskResult: (i: string, t: string) => backend.loadTaskResult(i, t),
    purgeFinished: (o: PurgeOptions) => backend.purgeFinished(o),
    loadTaskClaims: (i: string) => backend.loadTaskClaims(i),
    deleteSnapshot: (i: string) => backend.deleteSnapshot(i),
    listSnapshots: () => backend.listSnapshots(),
    listSnapshotsPage: (o: ListPageOptions) => backend.listSnapshotsPage(o),
    claimTask: async (i, t, w, ttl) => {
      const q = Date.now();
      const claim = await backend.claimTask(i, t, w, ttl);
      if (claim !== null) log(claimEvent(claim, q, Date.now()));
      return claim;
    },
    releaseTaskClaim: async (i, t, w) => {
      const q = Date.now();
      log({ k: "release-req", w, i, t, q });
      await backend.releaseTaskClaim(i, t, w);
      log({ k: "release", w, i, t, q, r: Date.now() });
    },
    extendTaskClaim: async (i, t, w, d) => {
      const q = Date.now();
      let claim: RenewedClaim;
      try {
        claim = await backend.extendTaskClaim(i, t, w, d);
      } catch (error) {
        log({
          k: "extend-fail",
          w,
          i,
          t,
          code: (error as { code?: string }).code ?? "UNTYPED",
          q,
          r: Date.now(),
        });
        throw error;
      }
      log({ k: "extend", w, i, t, tok: claim.token, ea: claim.expiresAt, d, q, r: Date.now() });
      return claim;
    },
    completeTasks: recordedCompletions(backend, workerId, log),
    // The soak's workflows have no retries: failed runs are passed through unrecorded.
    failTasks: (failures) => backend.failTasks(failures),
    findAvailableTasks: (w, limit, options) => backend.findAvailableTasks(w, limit, options),
    claimAvailableTasks: async (w, limit, ttl, options) => {
      const q = Date.now();
      const tasks = await backend.claimAvailableTasks(w, limit, ttl, options);
      const r = Date.now();
      for (const task of tasks) log(claimEvent(task.claim, q, r));
      return tasks;
    },
    // Control and events are passed through (the soak's workers neither cancel nor wait).
    cancelWorkflow: (i, request) => backend.cancelWorkflow(i, request),
    pauseWorkflow: (i, request) => backend.pauseWorkflow(i, request),
    resumeWorkflow: (i) => backend.resumeWorkflow(i),
    sendEvent: (i, name, payload) => backend.sendEvent(i, name, payload),
    loadPendingEvents: (i) => backend.loadPendingEvents(i),
    waitForTasks: (options) => backend.waitForTasks(options),
    close: async () => {
      await backend.close();
      closeSync(fd);
    },
    [Symbol.asyncDispose]: async () => {
      await backend.close();
    },
  };
}

/** completeTasks, recorded: a release request per task, then its fenced write and release. */
function recordedCompletions(
  backend: PersistentBackend,
  workerId: string,
  log: (event: RecordedEvent) => void,
): PersistentBackend["completeTasks"] {
  return async (completions) => {
    const q = Date.now();
    for (const { claim } of completions) {
      log({ k: "release-req", w: claim.workerId, i: claim.instanceId, t: claim.taskId, q });
    }
    let outcomes: Awaited<ReturnType<PersistentBackend["completeTasks"]>>;
    try {
      outcomes = await backend.completeTasks(completions);
    } catch (error) {
      const code = (error as { code?: string }).code ?? "UNTYPED";
      for (const { claim } of completions) {
        const fence = { t: claim.taskId, tok: claim.token };
        log({
          k: "write",
          op: "result",
          w: workerId,
          i: claim.instanceId,
          ...fence,
          ok: false,
          code,
          q,
          r: Date.now(),
        });
      }
      throw error;
    }
    const r = Date.now();
    outcomes.forEach((outcome, n) => {
      const claim = completions[n]?.claim;
      if (claim === undefined) return;
      const fence = { t: claim.taskId, tok: claim.token };
      const ok = outcome === null;
      log({
        k: "write",
        op: "result",
        w: workerId,
        i: claim.instanceId,
        ...fence,
        ok,
        code: outcome?.code ?? null,
        q,
        r,
      });
      if (ok) log({ k: "release", w: claim.workerId, i: claim.instanceId, t: claim.taskId, q, r });
    });
    return outcomes;
  };
}
