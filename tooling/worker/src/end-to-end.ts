import {
  bytesEqual,
  createSnapshot,
  type PersistentBackend,
  updatePosition,
  type WorkflowSnapshot,
} from "@sayiir/persistence-core";
import { entryPosition, evaluate, type WorkflowDefinition } from "./definition.ts";
import { bytes, demoWorkflows, text } from "./demo-workflows.ts";
import { runWorker, type WorkerEvent, type WorkerStats } from "./worker.ts";

export interface EndToEndOptions {
  /** A new client of the store under test; called once for the admin and once per worker. */
  connect: () => PersistentBackend | Promise<PersistentBackend>;
  /** Workflows to run (half pipelines, half fan-outs). Default 30. */
  workflows?: number;
  /** Worker count (one of them crashes). Default 3. */
  workers?: number;
  /** Lease of every claim (ms). Default 400. */
  leaseMs?: number;
  /** Give up after this long (ms). Default 60,000. */
  timeoutMs?: number;
  /** Prefix of the instance ids, so several runs can share a store. Default a random one. */
  idPrefix?: string;
}

export interface EndToEndReport {
  workflows: number;
  committed: number;
  /** Claims of a task that another worker had claimed before (the crashed worker's leases expired). */
  takeovers: number;
  /** Tasks the crashed worker held when it crashed. */
  orphaned: number;
  stats: WorkerStats[];
  ms: number;
}

/** Creates one workflow instance at its first task (or its first wait). */
export async function startWorkflow(
  backend: PersistentBackend,
  definition: WorkflowDefinition,
  instanceId: string,
  input: Uint8Array,
): Promise<void> {
  const fresh = createSnapshot(instanceId, definition.hash, { initialInput: input });
  const first = definition.stages[0];
  if (first === undefined) throw new TypeError(`workflow ${definition.hash} has no stage`);
  const position = entryPosition(first, fresh.createdAt, definition, 0);
  await backend.saveSnapshot(updatePosition(fresh, position, fresh.createdAt));
}

/**
 * The end-to-end check every adapter's suite runs: several workers, each on its own client,
 * run pipelines and fan-outs to completion while one of them crashes holding claims (no
 * commit, no release). Throws an Error listing every failed check; resolves with a report.
 */
export async function runEndToEnd(options: EndToEndOptions): Promise<EndToEndReport> {
  const count = options.workflows ?? 30;
  const workerCount = options.workers ?? 3;
  const leaseMs = options.leaseMs ?? 400;
  const timeoutMs = options.timeoutMs ?? 60_000;
  const prefix =
    options.idPrefix ?? `e2e-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
  const { pipeline, fanout } = demoWorkflows({ workMs: [1, 8] });
  const admin = await options.connect();
  const started = Date.now();
  const expected = new Map<string, Uint8Array>();
  for (let i = 0; i < count; i++) {
    const definition = i % 2 === 0 ? pipeline : fanout;
    const id = `${prefix}/wf-${i}`;
    const input = bytes(`order-${i}`);
    await startWorkflow(admin, definition, id, input);
    expected.set(id, await evaluate(definition, input));
  }

  const events: WorkerEvent[] = [];
  const stop = new AbortController();
  const crash = new AbortController();
  const crashAfterClaims = Math.max(4, Math.floor(count / 3));
  let crashedWorkerClaims = 0;
  const held = new Map<string, number>(); // crashed worker's open claims at crash time
  const backends: PersistentBackend[] = [];
  const runs: Promise<WorkerStats>[] = [];
  for (let w = 0; w < workerCount; w++) {
    const backend = await options.connect();
    backends.push(backend);
    const workerId = `e2e-worker-${w}`;
    const crashes = w === 0;
    runs.push(
      runWorker({
        backend,
        workerId,
        workflows: [pipeline, fanout],
        leaseMs,
        heartbeatMs: Math.floor(leaseMs / 4),
        batch: 3,
        signal: stop.signal,
        ...(crashes ? { crash: crash.signal } : {}),
        onEvent: (event) => {
          events.push(event);
          if (!crashes) return;
          const key =
            "instanceId" in event && "taskId" in event ? `${event.instanceId}\u0000${event.taskId}` : "";
          if (event.type === "claimed") held.set(key, event.token);
          if (event.type === "released" || event.type === "lost" || event.type === "committed")
            held.delete(key);
          // Crash while holding claims, once the fleet is well under way.
          if (
            event.type === "claimed" &&
            ++crashedWorkerClaims >= crashAfterClaims &&
            !crash.signal.aborted
          ) {
            crash.abort();
          }
        },
      }),
    );
  }

  const failures: string[] = [];
  const snapshots = new Map<string, WorkflowSnapshot>();
  try {
    const deadline = started + timeoutMs;
    for (;;) {
      let pending = 0;
      for (const id of expected.keys()) {
        if (snapshots.get(id)?.state.kind === "Completed") continue;
        const snapshot = await admin.loadSnapshot(id);
        snapshots.set(id, snapshot);
        if (snapshot.state.kind === "InProgress") pending++;
      }
      if (pending === 0) break;
      if (Date.now() > deadline) {
        failures.push(`timed out after ${timeoutMs} ms with ${pending} workflows in progress`);
        break;
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  } finally {
    stop.abort();
  }
  const stats = await Promise.all(runs);
  for (const backend of backends) await backend.close();

  // Every workflow completed with the expected output.
  for (const [id, want] of expected) {
    const state = snapshots.get(id)?.state;
    if (state?.kind !== "Completed") failures.push(`${id} is ${state?.kind ?? "missing"}`);
    else if (!bytesEqual(state.finalOutput, want)) {
      failures.push(
        `${id} output ${JSON.stringify(text(state.finalOutput))} != ${JSON.stringify(text(want))}`,
      );
    }
  }
  // No task committed twice; no branch recorded twice in its parent.
  const commits = new Map<string, number>();
  const records = new Map<string, number>();
  let committed = 0;
  for (const event of events) {
    if (event.type === "committed") {
      committed++;
      const key = `${event.instanceId}\u0000${event.taskId}`;
      commits.set(key, (commits.get(key) ?? 0) + 1);
    } else if (event.type === "branch-recorded") {
      const key = `${event.parentId}\u0000${event.branchTaskId}`;
      records.set(key, (records.get(key) ?? 0) + 1);
    } else if (event.type === "error") {
      failures.push(`worker error: ${event.error}`);
    } else if (event.type === "input-mismatch") {
      failures.push(
        `claimAvailableTasks gave ${event.instanceId} / ${event.taskId} the input ${JSON.stringify(event.got)}, ` +
          `but its snapshot says ${JSON.stringify(event.expected)}`,
      );
    }
  }
  for (const [key, n] of commits)
    if (n > 1) failures.push(`task ${key.replace("\u0000", " / ")} committed ${n} times`);
  for (const [key, n] of records)
    if (n > 1) failures.push(`branch ${key.replace("\u0000", " / ")} recorded ${n} times`);
  // The crash happened and its orphaned claims were taken over.
  const takeovers = countTakeovers(events);
  if (!crash.signal.aborted) failures.push("the crashing worker never crashed");
  for (const key of held.keys()) {
    const [instanceId, taskId] = key.split("\u0000");
    const taken = events.some(
      (e) =>
        e.type === "claimed" &&
        e.workerId !== "e2e-worker-0" &&
        e.instanceId === instanceId &&
        e.taskId === taskId,
    );
    const finished = snapshots.get(instanceId!)?.state.kind === "Completed";
    if (!taken && !finished) failures.push(`orphaned task ${instanceId} / ${taskId} was never taken over`);
  }
  if (held.size > 0 && takeovers === 0)
    failures.push("the crashed worker held claims but no takeover was seen");
  if (failures.length > 0) {
    throw new Error(
      `worker loop end-to-end failed (${failures.length}):\n  ${failures.slice(0, 20).join("\n  ")}`,
    );
  }
  return { workflows: count, committed, takeovers, orphaned: held.size, stats, ms: Date.now() - started };
}

/** Claims of an (instance, task) that a different worker had claimed before. */
export function countTakeovers(events: Iterable<WorkerEvent>): number {
  const lastHolder = new Map<string, string>();
  let takeovers = 0;
  for (const event of events) {
    if (event.type !== "claimed") continue;
    const key = `${event.instanceId}\u0000${event.taskId}`;
    const previous = lastHolder.get(key);
    if (previous !== undefined && previous !== event.workerId) takeovers++;
    lastHolder.set(key, event.workerId);
  }
  return takeovers;
}
