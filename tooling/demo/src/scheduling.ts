/**
 * The scheduling part of the demo (issue 16): a step that fails twice and is retried with a
 * durable backoff, a durable sleep, a high-priority workflow started after the whole backlog, and
 * a step in a second queue that only a dedicated worker process serves. The workflows, how the
 * run starts them, and the checks that verify each from the store and the workers' logs.
 */
import { setTimeout as delay } from "node:timers/promises";
import { bytesEqual, isFinished, type PersistentBackend } from "@sayiir/persistence-core";
import {
  bytes,
  defineWorkflow,
  evaluate,
  sleep,
  startWorkflow,
  step,
  type TaskFn,
  taskCount,
  text,
  type WorkerEvent,
  type WorkflowDefinition,
} from "@sayiir/worker";
import type { Check, LoggedEvent } from "./checks.ts";

/** The second queue, served only by the dedicated worker process. */
export const GPU_QUEUE = "gpu";
/** The durable sleep of the nap workflow (ms). */
export const NAP_MS = 1500;
/** The retry policy of the flaky step: 5 runs at most, backoff 100 ms doubling. */
const RETRY = { attempts: 5, backoffMs: 100 };
/** Runs of the flaky step that fail before one succeeds. */
const FAILURES = 2;

export interface SchedulingWorkflows {
  /** charge (fails on its first two runs, retried with backoff) -> receipt */
  retry: WorkflowDefinition;
  /** before -> a durable sleep of NAP_MS -> after */
  nap: WorkflowDefinition;
  /** triage -> fix -> close, every task at priority 1 (the backlog runs at the default 3) */
  urgent: WorkflowDefinition;
  /** prepare -> render (queue "gpu") -> deliver */
  routed: WorkflowDefinition;
}

export function schedulingWorkflows(workMs: [number, number]): SchedulingWorkflows {
  const work =
    (tag: string): TaskFn =>
    async (input, context) => {
      const [min, max] = workMs;
      if (max > 0) await delay(min + Math.random() * (max - min), undefined, { signal: context.signal });
      return bytes(`${text(input)}>${tag}`);
    };
  const charge: TaskFn = async (input, context) => {
    // Fails on attempts 1 and 2 (a takeover after a crash counts as an attempt too).
    if (context.attempt <= FAILURES) throw new Error(`card declined (attempt ${context.attempt})`);
    return work("charged")(input, context);
  };
  return {
    retry: defineWorkflow("demo-retry-v1", [
      step("charge", charge, { retry: RETRY }),
      step("receipt", work("receipt")),
    ]),
    nap: defineWorkflow("demo-nap-v1", [
      step("before", work("before")),
      sleep("nap", NAP_MS),
      step("after", work("after")),
    ]),
    urgent: defineWorkflow(
      "demo-urgent-v1",
      [step("triage", work("triage")), step("fix", work("fix")), step("close", work("close"))],
      {
        priority: 1,
      },
    ),
    routed: defineWorkflow("demo-routed-v1", [
      step("prepare", work("prepare")),
      step("render", work("render"), { queue: GPU_QUEUE }),
      step("deliver", work("deliver")),
    ]),
  };
}

export interface SchedulingPlan {
  retry: string;
  nap: string;
  urgent: string;
  routed: string[];
  /** The backlog the urgent workflow must overtake: the workflows started before it. */
  backlog: string[];
  expected: Map<string, Uint8Array>;
  tasks: number;
}

/**
 * Starts the scheduling workflows: the retried one, the nap, `routedCount` routed ones, and last
 * the urgent one (after everything else, so it starts behind the whole backlog).
 */
export async function startScheduling(
  admin: PersistentBackend,
  runId: string,
  backlog: string[],
  routedCount: number,
): Promise<SchedulingPlan> {
  // Without the simulated work: the definitions to start (same hashes) and the expected outputs.
  const instant = schedulingWorkflows([0, 0]);
  const expected = new Map<string, Uint8Array>();
  let tasks = 0;
  const start = async (definition: WorkflowDefinition, name: string) => {
    const id = `${runId}/${name}`;
    const input = bytes(name);
    await startWorkflow(admin, definition, id, input);
    expected.set(id, await evaluate(definition, input));
    tasks += taskCount(definition);
    return id;
  };
  const retry = await start(instant.retry, "retry");
  const nap = await start(instant.nap, "nap");
  const routed: string[] = [];
  for (let i = 0; i < routedCount; i++) routed.push(await start(instant.routed, `routed-${i}`));
  const urgent = await start(instant.urgent, "urgent");
  return { retry, nap, urgent, routed, backlog: [...backlog, retry, nap, ...routed], expected, tasks };
}

type Logs = Map<string, LoggedEvent[]>;

function eventsOf<T extends WorkerEvent["type"]>(logs: Logs, type: T, instanceId: string) {
  const found: Array<Extract<WorkerEvent, { type: T }> & { t: number; worker: string }> = [];
  for (const [worker, list] of logs) {
    for (const event of list) {
      if (event.type === type && "instanceId" in event && event.instanceId === instanceId) {
        found.push({ ...(event as Extract<WorkerEvent, { type: T }> & { t: number }), worker });
      }
    }
  }
  return found.sort((a, b) => a.t - b.t);
}

const short = (id: string) => id.slice(id.indexOf("/") + 1);

/** The checks of the scheduling part; `gpuWorker` is the dedicated worker of the second queue. */
export async function schedulingChecks(
  backend: PersistentBackend,
  plan: SchedulingPlan,
  logs: Logs,
  gpuWorker: string,
): Promise<Check[]> {
  return [
    await retryCheck(backend, plan, logs),
    napCheck(plan, logs),
    await urgentCheck(backend, plan, logs),
    await queueCheck(backend, plan, logs, gpuWorker),
  ];
}

/** The flaky step failed on runs 1 and 2 (recorded by failTasks), ran again no earlier than its retryAt, and succeeded on run 3. */
async function retryCheck(backend: PersistentBackend, plan: SchedulingPlan, logs: Logs): Promise<Check> {
  const id = plan.retry;
  const claims = eventsOf(logs, "claimed", id).filter((e) => e.taskId === "charge");
  const retries = eventsOf(logs, "retrying", id).filter((e) => e.taskId === "charge");
  const commit = eventsOf(logs, "committed", id).find((e) => e.taskId === "charge");
  const problems: string[] = [];
  const snapshot = await backend.loadSnapshot(id).catch(() => undefined);
  if (snapshot?.state.kind !== "Completed") problems.push(`it is ${snapshot?.state.kind ?? "missing"}`);
  const won = commit === undefined ? undefined : claims.find((c) => c.token === commit.token);
  if (won === undefined) problems.push("no committed run of charge in the logs");
  // A takeover after the demo's kill counts as an attempt too; without one: exactly 2 failures.
  // The store is the record: the logs of the worker the demo SIGKILLs may miss its last events
  // (a run it claimed and failed just before it died), so they may show fewer runs, never more.
  const takeovers = claims.length - retries.length - 1;
  if (retries.length > FAILURES)
    problems.push(`${retries.length} failed runs logged, at most ${FAILURES} expected`);
  if (won !== undefined && won.attempt < FAILURES + 1) {
    problems.push(
      `the run that succeeded says attempt ${won.attempt}: fewer than ${FAILURES} runs before it`,
    );
  }
  if (won !== undefined && claims.length > won.attempt) {
    problems.push(
      `the run that succeeded says attempt ${won.attempt}, after ${claims.length - 1} logged runs`,
    );
  }
  const count = snapshot?.attempts?.charge?.count;
  if (won !== undefined && count !== won.attempt - 1) problems.push(`the store records ${count} failed runs`);
  const unlogged = won === undefined ? 0 : won.attempt - claims.length;
  for (const retry of retries) {
    const next = claims.find((c) => c.attempt === retry.attempt + 1);
    if (next !== undefined && next.at < retry.retryAt) {
      problems.push(`attempt ${next.attempt} claimed ${retry.retryAt - next.at} ms before its retryAt`);
    }
  }
  return {
    ok: problems.length === 0,
    text:
      `retried ${short(id)}: charge failed on attempts ${retries.map((r) => r.attempt).join(" and ") || "-"}` +
      ` (durable backoff ${RETRY.backoffMs} ms doubling), succeeded on attempt ${won?.attempt ?? "?"}` +
      `, the store counts ${count ?? 0} failed runs${takeovers > 0 ? ` (${takeovers} takeover)` : ""}` +
      (unlogged > 0 ? ` (${unlogged} run by the killed worker not in its log)` : "") +
      (problems.length > 0 ? `\n      ${problems.join("\n      ")}` : ""),
  };
}

/** The step after the sleep was first claimed no earlier than the runAt the commit before it wrote. */
function napCheck(plan: SchedulingPlan, logs: Logs): Check {
  const id = plan.nap;
  const before = eventsOf(logs, "committed", id).find((e) => e.taskId === "before");
  const after = eventsOf(logs, "claimed", id).filter((e) => e.taskId === "after");
  const runAt = before?.runAt;
  const first = after[0];
  const ok = runAt !== undefined && first !== undefined && after.every((c) => c.at >= runAt);
  return {
    ok,
    text:
      `durable sleep in ${short(id)}: "after" was first claimed ${first === undefined || runAt === undefined ? "?" : first.at - runAt} ms ` +
      `after its runAt (${NAP_MS} ms after "before" committed), never before it` +
      (ok
        ? ""
        : `\n      runAt ${runAt ?? "not logged"}, claims of after at ${after.map((c) => c.at).join(", ") || "none"}`),
  };
}

/** The urgent workflow, started after the whole backlog, completed before most of it. */
async function urgentCheck(backend: PersistentBackend, plan: SchedulingPlan, logs: Logs): Promise<Check> {
  const done = eventsOf(logs, "committed", plan.urgent).find((e) => e.workflowCompleted);
  const completedAt = new Map<string, number>();
  for (const [, list] of logs) {
    for (const event of list) {
      if (event.type === "committed" && event.workflowCompleted) completedAt.set(event.instanceId, event.t);
    }
  }
  const state = (await backend.loadSnapshot(plan.urgent).catch(() => undefined))?.state;
  const later = plan.backlog.filter(
    (id) => (completedAt.get(id) ?? Number.POSITIVE_INFINITY) > (done?.t ?? 0),
  );
  // "Before the backlog's tail": at least a third of the backlog finished after it.
  const ok = state?.kind === "Completed" && done !== undefined && later.length * 3 >= plan.backlog.length;
  const priorities = new Set(eventsOf(logs, "claimed", plan.urgent).map((e) => e.priority));
  return {
    ok,
    text:
      `high-priority ${short(plan.urgent)} (priority ${[...priorities].join(",") || "?"}), started after a backlog of ` +
      `${plan.backlog.length} workflows, completed before ${later.length} of them`,
  };
}

/** Every task of the second queue ran on the dedicated worker, none on a default one. */
async function queueCheck(
  backend: PersistentBackend,
  plan: SchedulingPlan,
  logs: Logs,
  gpuWorker: string,
): Promise<Check> {
  const problems: string[] = [];
  let renders = 0;
  for (const id of plan.routed) {
    for (const claim of eventsOf(logs, "claimed", id)) {
      const inGpu = claim.taskId === "render";
      if (inGpu) renders++;
      if (inGpu && (claim.worker !== gpuWorker || claim.queue !== GPU_QUEUE)) {
        problems.push(`${short(id)} / render claimed by ${claim.worker} (queue ${claim.queue})`);
      }
      if (!inGpu && claim.worker === gpuWorker)
        problems.push(`${short(id)} / ${claim.taskId} ran on ${gpuWorker}`);
    }
    const snapshot = await backend.loadSnapshot(id).catch(() => undefined);
    if (
      snapshot?.state.kind !== "Completed" ||
      !bytesEqual(snapshot.state.finalOutput, plan.expected.get(id)!)
    ) {
      problems.push(
        `${short(id)} is ${snapshot === undefined ? "missing" : isFinished(snapshot.state) ? "finished wrong" : snapshot.state.kind}`,
      );
    }
  }
  return {
    ok: problems.length === 0 && renders >= plan.routed.length,
    text:
      `queue "${GPU_QUEUE}": ${renders} render tasks of ${plan.routed.length} routed workflows ran on the dedicated ${gpuWorker}, ` +
      `none on a default worker` +
      (problems.length > 0 ? `\n      ${problems.slice(0, 5).join("\n      ")}` : ""),
  };
}
