// Entry of a worker process (child_process.fork). Protocol with the parent (procs.ts):
//   parent -> {type:"init", job}   child -> {type:"ready"}   (connections open, nothing consumed yet)
//   parent -> {type:"go"}          child works; a Sayiir loop ends on its own with {type:"done", result}
//   parent -> {type:"stop"}        (peers: the parent saw the queue empty) child -> {type:"done", result}
import {
  countDynamoRequests,
  countPgStatements,
  countRedisCommands,
  dynamoRequestCount,
  ownCpuMs,
  pgStatementCount,
  redisCommandCount,
} from "./counters.ts";
import { preparePeerWorker } from "./peers.ts";
import type { ChildMessage, ParentMessage, WorkerJob } from "./procs.ts";
import { runSayiirLoop } from "./sayiir-workers.ts";
import { openStore } from "./targets.ts";
import { errorMessage } from "./util.ts";

/** Resolves once the message is handed to the channel (large reports must not be cut off by the exit). */
function send(message: ChildMessage): Promise<void> {
  return new Promise((resolve) => {
    if (!process.send) return resolve();
    process.send(message, undefined, {}, () => resolve());
  });
}

async function main(job: WorkerJob): Promise<void> {
  let count: (() => number) | undefined;
  if (
    (job.kind === "sayiir" && job.store.backend === "postgres") ||
    (job.kind === "peer" && job.config.peer !== "bullmq")
  ) {
    countPgStatements();
    count = pgStatementCount;
  }
  if (
    (job.kind === "sayiir" && job.store.backend === "redis") ||
    (job.kind === "peer" && job.config.peer === "bullmq")
  ) {
    await countRedisCommands();
    count = redisCommandCount;
  }
  if (job.kind === "sayiir") {
    const backend = await openStore(job.store, job.poolSize);
    if (job.store.backend === "dynamodb" && countDynamoRequests((backend as { client?: unknown }).client)) {
      count = dynamoRequestCount;
    }
    // Warm up: open the pool's connections before the clock starts.
    await Promise.all(
      Array.from({ length: job.loop.workers }, (_, k) =>
        backend.loadSnapshot(`warm-up-${process.pid}-${k}`).catch(() => undefined),
      ),
    );
    await waitFor("go");
    const base = count?.() ?? 0;
    const cpu0 = ownCpuMs();
    const result = await runSayiirLoop(backend, job.loop);
    const cpuMs = ownCpuMs() - cpu0;
    const roundTrips = count ? count() - base : undefined;
    await backend.close();
    await send({
      type: "done",
      result: { kind: "sayiir", result, cpuMs, ...(roundTrips === undefined ? {} : { roundTrips }) },
    });
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
