// Entry of a scenario 5 worker process (child_process.fork from wakeups.ts). Protocol:
//   parent -> {type:"init", job}  child -> {type:"ready"}   (connected, consumers not started)
//   parent -> {type:"go"}         the consumers start; child -> {type:"started"}
//   parent -> {type:"count"}      child -> {type:"count", claims, requests}   (any number of times)
//   parent -> {type:"stop"}       child -> {type:"done", claims, errors}, then exits
// `requests`: what this process has sent to its server so far (the counters of scenario 1,
// counters.ts), null where nothing is counted (SQLite).
import type { StoreConfig } from "@sayiir/backends";
import { countDynamoRequests, dynamoRequestCount } from "./counters.ts";
import type { PeerConfig } from "./peers.ts";
import { openStore, startRequestCounter } from "./targets.ts";
import { errorMessage } from "./util.ts";
import { startPeerWakeLoop, startSayiirDispatcher, type WakeClaim, type WakeLoop } from "./wakeups-loop.ts";

/** One process's consumer: `slots` tasks (jobs) at a time; ours one dispatcher named `prefix`. */
export type WakeJob =
  | { kind: "sayiir"; store: StoreConfig; slots: number; prefix: string }
  | { kind: "peer"; config: PeerConfig; slots: number };

export type WakeParentMessage =
  | { type: "init"; job: WakeJob }
  | { type: "go" }
  | { type: "count" }
  | { type: "stop" };
export type WakeChildMessage =
  | { type: "ready" }
  | { type: "started" }
  | { type: "count"; claims: number; requests: number | null }
  | { type: "done"; claims: WakeClaim[]; errors: Record<string, number> }
  | { type: "error"; message: string };

function send(message: WakeChildMessage): Promise<void> {
  return new Promise((resolve) => {
    if (!process.send) return resolve();
    process.send(message, undefined, {}, () => resolve());
  });
}

/** Starts the counter of what this process sends to its server (as scenario 1's worker.ts does). */
async function counter(job: WakeJob): Promise<(() => number) | undefined> {
  if (job.kind === "peer") return startRequestCounter(job.config.peer === "bullmq" ? "redis" : "postgres");
  return startRequestCounter(job.store.backend);
}

let loop: WakeLoop | undefined;
let requests: (() => number) | undefined;
let started: (() => void) | undefined;

async function init(job: WakeJob): Promise<void> {
  requests = await counter(job);
  if (job.kind === "sayiir") {
    const backend = await openStore(job.store, job.slots + 2);
    if (job.store.backend === "dynamodb" && countDynamoRequests((backend as { client?: unknown }).client))
      requests = dynamoRequestCount;
    await backend.loadSnapshot(`warm-up-${process.pid}`).catch(() => undefined);
    await new Promise<void>((resolve) => {
      started = resolve;
      void send({ type: "ready" });
    });
    const running = startSayiirDispatcher(backend, job.slots, job.prefix);
    loop = {
      ...running,
      stop: async () => {
        await running.stop();
        await backend.close();
      },
    };
    await send({ type: "started" });
    return;
  }
  await new Promise<void>((resolve) => {
    started = resolve;
    void send({ type: "ready" });
  });
  loop = await startPeerWakeLoop(job.config, job.slots);
  await send({ type: "started" });
}

process.on("message", (message: WakeParentMessage) => {
  const fail = async (error: unknown) => {
    await send({ type: "error", message: `${errorMessage(error)}\n${(error as Error)?.stack ?? ""}` });
    process.exit(1);
  };
  switch (message.type) {
    case "init":
      init(message.job).catch(fail);
      break;
    case "go":
      started?.();
      break;
    case "count":
      void send({ type: "count", claims: loop?.claims.length ?? 0, requests: requests?.() ?? null });
      break;
    case "stop":
      (async () => {
        const current = loop;
        await current?.stop();
        await send({ type: "done", claims: current?.claims ?? [], errors: current?.errors ?? {} });
        process.disconnect?.();
        // Drivers may keep sockets alive; everything is sent.
        setTimeout(() => process.exit(0), 200).unref();
      })().catch(fail);
      break;
  }
});
