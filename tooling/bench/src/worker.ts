// Entry of a worker process (child_process.fork). Protocol with the parent (procs.ts):
//   parent -> {type:"init", job}   child -> {type:"ready"}   (connections open, nothing consumed yet)
//   parent -> {type:"go"}          child works; a Sayiir loop ends on its own with {type:"done", result}
//   parent -> {type:"stop"}        (peers, steps: the parent saw the work done) child -> {type:"done", result}
import { countDynamoRequests, dynamoRequestCount, ownCpuMs } from "./counters.ts";
import { preparePeerWorker } from "./peers.ts";
import type { ChildMessage, ParentMessage, WorkerJob, WorkerOutcome } from "./procs.ts";
import { runSayiirLoop } from "./sayiir-workers.ts";
import { runStepsLoop } from "./steps-workers.ts";
import { openStore, startRequestCounter } from "./targets.ts";
import { errorMessage } from "./util.ts";

/** Resolves once the message is handed to the channel (large reports must not be cut off by the exit). */
function send(message: ChildMessage): Promise<void> {
  return new Promise((resolve) => {
    if (!process.send) return resolve();
    process.send(message, undefined, {}, () => resolve());
  });
}

/** Starts counting what this process sends to its server; returns the counter (undefined: not counted). */
async function startCounting(job: WorkerJob): Promise<(() => number) | undefined> {
  if (job.kind === "peer") return startRequestCounter(job.config.peer === "bullmq" ? "redis" : "postgres");
  return startRequestCounter(job.store.backend);
}

/** Opens the job's store and warms its pool (before the clock starts). */
async function openWarm(job: Extract<WorkerJob, { kind: "sayiir" | "steps" }>) {
  const backend = await openStore(job.store, job.poolSize);
  const dynamo =
    job.store.backend === "dynamodb" && countDynamoRequests((backend as { client?: unknown }).client);
  await Promise.all(
    Array.from({ length: job.loop.workers }, (_, k) =>
      backend.loadSnapshot(`warm-up-${process.pid}-${k}`).catch(() => undefined),
    ),
  );
  return { backend, dynamo };
}

async function main(job: WorkerJob): Promise<void> {
  let count = await startCounting(job);
  if (job.kind === "sayiir" || job.kind === "steps") {
    const { backend, dynamo } = await openWarm(job);
    if (dynamo) count = dynamoRequestCount;
    await waitFor("go");
    const base = count?.() ?? 0;
    const cpu0 = ownCpuMs();
    let outcome: WorkerOutcome;
    if (job.kind === "sayiir") {
      const result = await runSayiirLoop(backend, job.loop);
      outcome = { kind: "sayiir", result, cpuMs: 0 };
    } else {
      const stop = new AbortController();
      void waitFor("stop").then(() => stop.abort());
      const result = await runStepsLoop(backend, job.loop, stop.signal);
      outcome = { kind: "steps", result, cpuMs: 0 };
    }
    outcome.cpuMs = ownCpuMs() - cpu0;
    const roundTrips = count ? count() - base : undefined;
    await backend.close();
    await send({ type: "done", result: { ...outcome, ...(roundTrips === undefined ? {} : { roundTrips }) } });
    return;
  }
  const worker = await preparePeerWorker(job.config, job.settings);
  await waitFor("go");
  const base = count?.() ?? 0;
  const cpu0 = ownCpuMs();
  await worker.start();
  await waitFor("stop");
  const cpuMs = ownCpuMs() - cpu0;
  const roundTrips = count ? count() - base : undefined;
  const seen = await worker.stop();
  await send({
    type: "done",
    result: { kind: "peer", seen, cpuMs, ...(roundTrips === undefined ? {} : { roundTrips }) },
  });
}

const waiters = new Map<string, () => void>();
const arrived = new Set<string>();
function waitFor(type: "go" | "stop"): Promise<void> {
  if (type === "go") void send({ type: "ready" });
  if (arrived.has(type)) return Promise.resolve();
  return new Promise((resolve) => waiters.set(type, resolve));
}

process.on("message", (message: ParentMessage) => {
  if (message.type === "init") {
    main(message.job).then(
      () => process.disconnect?.(),
      async (error: unknown) => {
        await send({ type: "error", message: errorMessage(error), stack: (error as Error)?.stack ?? "" });
        process.exitCode = 1;
        process.disconnect?.();
      },
    );
    return;
  }
  arrived.add(message.type);
  waiters.get(message.type)?.();
});
