/**
 * `pnpm demo`: several worker processes share durable workflows; one is killed with SIGKILL
 * midway; its leases expire, the others take over, and every workflow still finishes exactly
 * once. Meanwhile a controller cancels one workflow, pauses and resumes another, and sends
 * approvals that a batch of workflows wait for (one never gets its approval and times out). And
 * scheduling: a step retried with backoff, a durable sleep, a high-priority workflow that overtakes
 * the backlog, and a second queue served only by a dedicated worker process.
 * SQLite (one file, no server) by default; any backend with --backend and --url.
 */
import { type ChildProcess, fork } from "node:child_process";
import { mkdirSync, readdirSync, rmSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { BackendUnavailable, backendNamed, type Subject } from "@sayiir/backends";
import { isFinished } from "@sayiir/persistence-core";
import {
  bytes,
  childInstanceId,
  demoWorkflows,
  evaluate,
  runWorker,
  startWorkflow,
  taskCount,
  type WorkerEvent,
} from "@sayiir/worker";
import { readLog, runChecks } from "./checks.ts";
import { Controller, createControlWorkflows } from "./control.ts";
import { GPU_QUEUE, NAP_MS, schedulingChecks, schedulingWorkflows, startScheduling } from "./scheduling.ts";
import { BACKENDS, DEMO_BACKENDS, serverUrls, storageOf } from "./store.ts";
import { createView, type WorkerView } from "./view.ts";
import { WAKE_SAMPLES, WakeDemo } from "./wake-ups.ts";
import type { WorkerMessage, WorkerProcessConfig } from "./worker-process.ts";

const HELP = `Usage: pnpm demo [options]

  --backend <kind>      ${DEMO_BACKENDS.join(" | ")} (default sqlite)
  --url <url>           sqlite: file path; redis/postgres/mongo: connection URL; dynamodb: endpoint
  --namespace <name>    key prefix / schema / table of a server backend (default sayiir_demo)
  --workers <k>         worker processes (default 4)
  --workflows <n>       workflows to run, half pipelines, half fan-outs (default 300)
  --batch <n>           tasks in flight per worker (default 4)
  --lease-ms <ms>       claim lease (default 1000); heartbeats every lease/3
  --kill-at <fraction>  SIGKILL one worker when this share of tasks is done (default 0.4)
  --kill-after-ms <ms>  ... or after this long instead
  --no-kill             kill nobody
  --restart             start a replacement worker after the kill
  --in-process          run workers as tasks of this process (forced for memory)
  --work-ms <min,max>   simulated work per task (default 20,60)
  --seed <n>            varies the workflows' inputs (default 1)
  --timeout-ms <ms>     give up after this long (default 300000)
  --plain               plain progress lines even on a terminal
`;

// `pnpm demo -- --x` may pass the "--" through: drop it.
const argv = process.argv.slice(2);
if (argv[0] === "--") argv.shift();
const { values: args } = parseArgs({
  args: argv,
  options: {
    backend: { type: "string", default: "sqlite" },
    url: { type: "string" },
    namespace: { type: "string", default: "sayiir_demo" },
    workers: { type: "string", default: "4" },
    workflows: { type: "string", default: "300" },
    batch: { type: "string", default: "4" },
    "lease-ms": { type: "string", default: "1000" },
    "kill-at": { type: "string", default: "0.4" },
    "kill-after-ms": { type: "string" },
    "no-kill": { type: "boolean", default: false },
    restart: { type: "boolean", default: false },
    "in-process": { type: "boolean", default: false },
    "work-ms": { type: "string", default: "20,60" },
    seed: { type: "string", default: "1" },
    "timeout-ms": { type: "string", default: "300000" },
    "stall-ms": { type: "string", default: "60000" },
    plain: { type: "boolean", default: false },
    help: { type: "boolean", short: "h", default: false },
  },
  allowPositionals: false,
});

function fail(message: string): never {
  console.error(`demo: ${message}\n\n${HELP}`);
  process.exit(2);
}
function int(name: string, value: string | undefined, min = 1): number {
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < min) fail(`--${name} must be an integer >= ${min}`);
  return n;
}

if (args.help) {
  console.log(HELP);
  process.exit(0);
}
const kind = backendNamed(args.backend ?? "") ?? fail(`unknown backend ${JSON.stringify(args.backend)}`);
const workerCount = int("workers", args.workers);
const workflowCount = int("workflows", args.workflows);
const batch = int("batch", args.batch);
const leaseMs = int("lease-ms", args["lease-ms"], 50);
const seed = int("seed", args.seed, 0);
const timeoutMs = int("timeout-ms", args["timeout-ms"]);
const stallMs = int("stall-ms", args["stall-ms"]);
const killAt = Number(args["kill-at"]);
if (!(killAt > 0 && killAt < 1)) fail("--kill-at must be a fraction between 0 and 1");
const killAfterMs =
  args["kill-after-ms"] === undefined ? undefined : int("kill-after-ms", args["kill-after-ms"]);
const workMs = (args["work-ms"] ?? "").split(",").map(Number) as [number, number];
if (workMs.length !== 2 || !workMs.every((n) => Number.isFinite(n) && n >= 0) || workMs[0] > workMs[1]) {
  fail("--work-ms must be min,max milliseconds");
}
if (workerCount < 2 && !args["no-kill"])
  fail("--workers must be at least 2 to survive a kill (or pass --no-kill)");

const here = dirname(fileURLToPath(import.meta.url));
const runId = `run-${new Date().toISOString().replace(/[-:]/g, "").replace(/\..*/, "").replace("T", "-")}-s${seed}`;
const demoDir = resolve(here, "..", ".demo");
const runDir = join(demoDir, runId);
mkdirSync(runDir, { recursive: true });
// Keep the 10 most recent runs' logs.
for (const old of readdirSync(demoDir)
  .filter((name) => name.startsWith("run-"))
  .sort()
  .slice(0, -10)) {
  rmSync(join(demoDir, old), { recursive: true, force: true });
}
const url = args.url ?? join(runDir, "demo.sqlite"); // the SQLite file
const tty = process.stdout.isTTY === true && !args.plain;

// --- the store and the workflows ------------------------------------------------------------
let subject: Subject;
try {
  subject = await BACKENDS[kind].create(serverUrls(kind, args.url), {
    storage: storageOf(kind, url, args.namespace ?? "sayiir_demo"),
  });
} catch (error) {
  if (!(error instanceof BackendUnavailable)) throw error;
  console.error(`demo: cannot use --backend ${kind}: ${error.message}`);
  process.exit(1);
}
const admin = subject.backend;
const connect = () => subject.connect();
// A store that lives in this process (memory) cannot be shared with worker processes.
const inProcess = args["in-process"] || !admin.capabilities.durable;

const workflows = demoWorkflows({ workMs });
const { pipeline, fanout } = workflows;
const definitions = [...Object.values(workflows), ...Object.values(schedulingWorkflows(workMs))];
// The same tasks without the simulated work: computes the expected outputs at once.
const instant = demoWorkflows({ workMs: [0, 0], slowWorkMs: [0, 0] });
const expected = new Map<string, Uint8Array>();
const children: string[] = [];
let tasksTotal = 0;
for (let i = 0; i < workflowCount; i++) {
  const definition = i % 2 === 0 ? pipeline : fanout;
  const reference = i % 2 === 0 ? instant.pipeline : instant.fanout;
  const id = `${runId}/wf-${String(i).padStart(4, "0")}`;
  const input = bytes(`order-${seed}-${i}`);
  await startWorkflow(admin, definition, id, input);
  expected.set(id, await evaluate(reference, input));
  tasksTotal += taskCount(definition);
  for (const stage of definition.stages) {
    if (stage.kind === "fanOut")
      for (let b = 0; b < stage.branches.length; b++) children.push(childInstanceId(id, stage.id, b));
  }
}

// The controller's workflows: one to cancel, one to pause and resume, approvals (one unanswered).
const approvalCount = Math.min(12, Math.max(3, Math.round(workflowCount / 25)));
const plan = await createControlWorkflows(admin, workflows, instant, runId, approvalCount);
for (const [id, want] of plan.expected) expected.set(id, want);
tasksTotal += plan.tasks;
// Scheduling: the retried, napping and routed workflows, then (last) the urgent one.
const routedCount = Math.min(8, Math.max(2, Math.round(workflowCount / 40)));
const backlog = [...expected.keys()].filter((id) => !plan.expected.has(id));
const scheduling = await startScheduling(admin, runId, backlog, routedCount);
for (const [id, want] of scheduling.expected) expected.set(id, want);
tasksTotal += scheduling.tasks;
const GPU_WORKER = "worker-gpu";
/** Every top-level workflow the run waits for: the expected ones and the one that gets cancelled. */
const tracked = [...expected.keys(), plan.cancel.id];

console.log(
  `Sayiir persistence demo: ${workflowCount} workflows (pipelines of 4 steps, fan-outs of 4 concurrent ` +
    `branches) and ${approvalCount + 3} controlled ones, ${tasksTotal} tasks, on ${kind}${kind === "sqlite" ? ` (${url})` : ""}`,
);
console.log(
  `Controller: cancels ${plan.cancel.id.slice(runId.length + 1)} mid-task, pauses and resumes ` +
    `${plan.pause.id.slice(runId.length + 1)}, sends ${approvalCount} approvals (one before any wait), ` +
    `leaves ${plan.expiring.slice(runId.length + 1)} unanswered until it times out`,
);
console.log(
  `${workerCount} ${inProcess ? "in-process workers" : "worker processes"}, lease ${leaseMs} ms, ` +
    `${args["no-kill"] ? "no kill" : `one SIGKILLed at ${killAfterMs !== undefined ? `${killAfterMs} ms` : `${Math.round(killAt * 100)}% of tasks`}`}` +
    `; logs in ${runDir}`,
);
console.log(
  `Scheduling: ${scheduling.retry.slice(runId.length + 1)} fails twice and is retried with backoff, ` +
    `${scheduling.nap.slice(runId.length + 1)} sleeps ${NAP_MS} ms durably, ${scheduling.urgent.slice(runId.length + 1)} ` +
    `(priority 1) starts after the backlog, ${routedCount} routed workflows render in queue "${GPU_QUEUE}" ` +
    `on the dedicated ${GPU_WORKER}\n`,
);

// --- workers --------------------------------------------------------------------------------
interface Worker {
  id: string;
  view: WorkerView;
  open: Set<string>;
  kill(): void;
  stop(): void;
  exited: Promise<void>;
  logFile: string;
}

const workers: Worker[] = [];
const logs = new Map<string, string>();
let tasksDone = 0;
let errorsShown = 0;
let lastProgress = Date.now();
let workflowsDoneByEvents = 0;
let approvalsConsumed = 0;
let waitsTimedOut = 0;
const claimHolders = new Map<string, string>(); // (instance, task) -> last claiming worker

const wakes = new WakeDemo();

/** One event of `worker`, reported at `t` (Date.now() in the worker's process). */
function onEvent(worker: Worker, event: WorkerEvent, t = Date.now()): void {
  const k = "instanceId" in event && "taskId" in event ? `${event.instanceId}\u0000${event.taskId}` : "";
  controller?.onEvent(event);
  switch (event.type) {
    case "claimed": {
      wakes.claimed(event.instanceId, t);
      worker.open.add(k);
      const previous = claimHolders.get(k);
      if (previous !== undefined && previous !== worker.id) {
        worker.view.takeovers++;
        view.log(
          `  ↻ ${worker.id} took over ${event.instanceId} / ${event.taskId} from ${previous} (token ${event.token})`,
        );
      }
      claimHolders.set(k, worker.id);
      break;
    }
    case "committed":
      tasksDone++;
      lastProgress = Date.now();
      worker.view.committed++;
      if (event.workflowCompleted) workflowsDoneByEvents++;
      if (event.event !== undefined) approvalsConsumed++;
      if (event.timedOut === true) waitsTimedOut++;
      break;
    case "paused":
      view.log(
        `  ‖ ${worker.id}: ${event.instanceId} / ${event.taskId} stopped early, its workflow is paused (${event.during}); released`,
      );
      break;
    case "released":
    case "retrying":
    case "lost":
      worker.open.delete(k);
      // Released without a commit (its workflow was paused, or failTasks handed it back for a
      // retry): claiming it again is no takeover.
      if (event.type !== "lost" && claimHolders.get(k) === worker.id) claimHolders.delete(k);
      if (event.type === "retrying")
        view.log(
          `  ⟳ ${worker.id}: ${event.instanceId} / ${event.taskId} failed (attempt ${event.attempt}), retry held until ${new Date(event.retryAt).toISOString().slice(11, 23)}`,
        );
      if (event.type === "lost")
        view.log(
          `  ⨯ ${worker.id}: stale claim on ${event.instanceId} / ${event.taskId} refused (${event.during})`,
        );
      break;
    case "error":
      // Show a few; the rest are counted in the checks (a backend that is down would flood the view).
      if (++errorsShown <= 5)
        view.log(`  ! ${worker.id}: ${event.error}${errorsShown === 5 ? " (further errors not shown)" : ""}`);
      break;
    case "input-mismatch":
      view.log(
        `  ! ${worker.id}: ${event.instanceId} / ${event.taskId} was claimed with a wrong input (refused)`,
      );
      break;
  }
  worker.view.inFlight = worker.open.size;
}

function startWorker(index: number, queues?: string[]): Worker {
  const id = queues === undefined ? `worker-${index}` : GPU_WORKER;
  const logFile = join(runDir, `${id}.jsonl`);
  logs.set(id, logFile);
  const view: WorkerView = { id, committed: 0, inFlight: 0, takeovers: 0, status: "starting" };
  const config: WorkerProcessConfig = {
    store: subject.config,
    workerId: id,
    leaseMs,
    heartbeatMs: Math.max(1, Math.floor(leaseMs / 3)),
    batch,
    workMs,
    logFile,
    ...(queues === undefined ? {} : { queues }),
  };
  if (inProcess) {
    const stop = new AbortController();
    const crash = new AbortController();
    const worker: Worker = {
      id,
      view,
      open: new Set(),
      logFile,
      kill: () => crash.abort(),
      stop: () => stop.abort(),
      exited: Promise.resolve(),
    };
    worker.exited = (async () => {
      const { appendFileSync } = await import("node:fs");
      const backend = await connect();
      view.status = "running";
      await runWorker({
        backend,
        workerId: id,
        workflows: definitions,
        leaseMs,
        heartbeatMs: config.heartbeatMs,
        batch,
        ...(queues === undefined ? {} : { queues }),
        signal: stop.signal,
        crash: crash.signal,
        onEvent: (event) => {
          appendFileSync(logFile, `${JSON.stringify({ ...event, t: Date.now() })}\n`);
          onEvent(worker, event);
        },
      });
      if (!crash.signal.aborted) await backend.close();
      if (view.status === "running") view.status = "stopped";
    })();
    return worker;
  }
  const child: ChildProcess = fork(join(here, "worker-process.ts"), [], {
    env: { ...process.env, SAYIIR_DEMO_WORKER: JSON.stringify(config) },
    stdio: ["ignore", "pipe", "pipe", "ipc"],
  });
  const worker: Worker = {
    id,
    view,
    open: new Set(),
    logFile,
    kill: () => child.kill("SIGKILL"),
    stop: () => {
      if (child.connected) child.send({ type: "stop" });
    },
    exited: new Promise((resolveExit) => {
      child.on("exit", (code, signal) => {
        if (view.status !== "KILLED") {
          view.status = signal !== null ? `exited (${signal})` : code === 0 ? "stopped" : `exited (${code})`;
        }
        resolveExit();
      });
    }),
  };
  const relay = (stream: NodeJS.ReadableStream | null) =>
    stream?.on("data", (chunk: Buffer) => {
      for (const line of chunk.toString().split("\n")) if (line.trim() !== "") view_log(`  [${id}] ${line}`);
    });
  relay(child.stdout);
  relay(child.stderr);
  child.on("message", (message: WorkerMessage) => {
    if (message.type === "ready") view.status = "running";
    else if (message.type === "event") onEvent(worker, message.event, message.t);
  });
  return worker;
}

const view = createView({ tty });
const view_log = (line: string) => view.log(line);
const controller: Controller = new Controller(admin, plan, view_log);
await controller.start();
const started = Date.now();
for (let i = 0; i < workerCount; i++) workers.push(startWorker(i));
// The dedicated worker of the second queue (never the one killed: nobody else serves its queue).
workers.push(startWorker(workerCount, [GPU_QUEUE]));

// --- watch, kill one, wait for the end -------------------------------------------------------
const pending = new Set(tracked);
let killed: Worker | undefined;
let lastPoll = 0;
let timedOut = false;
let dropped = 0;
const render = () =>
  view.update({
    workers: workers.map((w) => w.view),
    workflowsDone: tracked.length - pending.size,
    workflows: tracked.length,
    tasksDone,
    tasksTotal: tasksTotal - dropped,
    elapsedMs: Date.now() - started,
    control: controller.status(approvalsConsumed, waitsTimedOut),
  });

while (pending.size > 0) {
  await new Promise((r) => setTimeout(r, 100));
  const elapsed = Date.now() - started;
  await controller.tick(elapsed);
  dropped = controller.tasksDropped;
  render();
  const shouldKill =
    !args["no-kill"] &&
    killed === undefined &&
    (killAfterMs !== undefined ? elapsed >= killAfterMs : tasksDone >= killAt * (tasksTotal - dropped));
  if (shouldKill) {
    // The busiest running worker: it holds claims that must be taken over.
    const victim = workers
      .filter((w) => w.view.status === "running" && w.id !== GPU_WORKER)
      .sort((a, b) => b.open.size - a.open.size || a.id.localeCompare(b.id))[0];
    if (victim !== undefined) {
      killed = victim;
      victim.kill();
      victim.view.status = "KILLED";
      view.log(
        `  ✗ ${(elapsed / 1000).toFixed(1)}s: ${inProcess ? "crashed" : "killed"} ${victim.id}${inProcess ? "" : " with SIGKILL"} while it held ${victim.open.size} claims`,
      );
      if (args.restart) {
        const replacement = startWorker(workers.length);
        workers.push(replacement);
        view.log(`  + started ${replacement.id} as a replacement`);
      }
    }
  }
  // Ask the store which workflows are still running (cheap: only the pending ones, once a second).
  if (Date.now() - lastPoll >= 1000 || workflowsDoneByEvents >= expected.size) {
    lastPoll = Date.now();
    for (const id of [...pending]) {
      const snapshot = await admin.loadSnapshot(id).catch(() => undefined);
      if (snapshot !== undefined && isFinished(snapshot.state)) pending.delete(id);
    }
  }
  if (elapsed > timeoutMs || Date.now() - lastProgress > stallMs) {
    timedOut = true;
    view.log(
      elapsed > timeoutMs
        ? `  timed out after ${timeoutMs} ms with ${pending.size} workflows still running`
        : `  no progress for ${stallMs} ms: giving up with ${pending.size} workflows still running`,
    );
    break;
  }
}
const wallMs = Date.now() - started;
// Every worker is idle now: save a few workflows and time how fast a waiting worker claims them.
const reference = { definition: pipeline, reference: instant.pipeline, expected, log: view_log };
if (!timedOut) tasksTotal += WAKE_SAMPLES * taskCount(pipeline);
const woke = timedOut ? undefined : await wakes.run({ admin, runId, ...reference });
render();
for (const worker of workers) if (worker !== killed) worker.stop();
const exitTimer = setTimeout(() => {
  for (const worker of workers) worker.kill();
}, 10_000);
await Promise.all(workers.map((w) => w.exited));
clearTimeout(exitTimer);
render();
view.stop();

// --- checks ---------------------------------------------------------------------------------
const { checks, figures } = await runChecks({
  backend: admin,
  expected,
  children,
  logs,
  killed: killed?.id,
  killedHow: inProcess ? "crashed (in-process, no release)" : "SIGKILLed",
  wallMs,
  control: plan,
});
const loggedEvents = new Map([...logs].map(([worker, file]) => [worker, readLog(file)] as const));
const scheduled = await schedulingChecks(admin, scheduling, loggedEvents, GPU_WORKER);
checks.splice(checks.length - 1, 0, ...scheduled, ...(woke === undefined ? [] : [woke]));
if (timedOut)
  checks.unshift({ ok: false, text: `finished within ${timeoutMs} ms, never stalled for ${stallMs} ms` });
if (!args["no-kill"] && killed === undefined) {
  const at = checks.findIndex((c) => c.text.startsWith("no worker was killed"));
  checks.splice(at, 1, { ok: false, text: "a worker was killed midway (the run ended first)" });
}
await admin.close();
if (kind === "sqlite" && args.url === undefined && checks.every((c) => c.ok)) {
  // Keep the logs, drop the database of a passing run.
  for (const suffix of ["", "-wal", "-shm"]) rmSync(`${url}${suffix}`, { force: true });
}

console.log("\nChecks");
for (const check of checks) console.log(`  ${check.ok ? "✓" : "✗"} ${check.text}`);
const ok = checks.every((c) => c.ok);
console.log(
  `\n${ok ? "All checks passed" : "SOME CHECKS FAILED"}: ${figures.workflows}/${expected.size} workflows completed, 1 cancelled, ` +
    `${figures.tasks} tasks, takeovers ${figures.takeovers}, ${approvalsConsumed} approvals consumed, ${waitsTimedOut} timed out, ` +
    `${figures.tasksPerSecond.toFixed(0)} tasks/s, ${(wallMs / 1000).toFixed(1)} s`,
);
process.exit(ok ? 0 : 1);
