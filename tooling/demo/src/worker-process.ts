/**
 * One demo worker process: runs the reference worker loop on its own client of the store,
 * appends every event to its JSON-lines log (read by the final checks) and forwards it to the
 * coordinator over IPC (for the live view). Stops cleanly on a "stop" message; the demo kills
 * one of these with SIGKILL midway.
 */
import { appendFileSync } from "node:fs";
import type { StoreConfig } from "@sayiir/backends";
import { demoWorkflows, runWorker, type WorkerEvent } from "@sayiir/worker";
import { schedulingWorkflows } from "./scheduling.ts";
import { BACKENDS } from "./store.ts";

export interface WorkerProcessConfig {
  /** The run's store (opened again in this process). */
  store: StoreConfig;
  workerId: string;
  leaseMs: number;
  heartbeatMs: number;
  batch: number;
  workMs: [number, number];
  logFile: string;
  /** The queues this worker serves (absent: the default queue). */
  queues?: string[];
}

/** `t`: Date.now() in this process when the event happened (the demo times wake-ups with it). */
export type WorkerMessage =
  | { type: "ready" }
  | { type: "event"; event: WorkerEvent; t: number }
  | { type: "stopped" };

const config = JSON.parse(process.env.SAYIIR_DEMO_WORKER ?? "null") as WorkerProcessConfig | null;
if (config === null || process.send === undefined) {
  console.error("worker-process.ts is started by the demo (src/main.ts) with an IPC channel");
  process.exit(2);
}
const send = (message: WorkerMessage) => {
  if (process.connected) process.send?.(message);
};

const stop = new AbortController();
process.on("message", (message: { type?: string }) => {
  if (message?.type === "stop") stop.abort();
});
process.on("disconnect", () => stop.abort());

const backend = await BACKENDS[config.store.backend].open(config.store);
const workflows = [
  ...Object.values(demoWorkflows({ workMs: config.workMs })),
  ...Object.values(schedulingWorkflows(config.workMs)),
];
send({ type: "ready" });
await runWorker({
  backend,
  workerId: config.workerId,
  workflows,
  leaseMs: config.leaseMs,
  heartbeatMs: config.heartbeatMs,
  batch: config.batch,
  ...(config.queues === undefined ? {} : { queues: config.queues }),
  signal: stop.signal,
  onEvent: (event) => {
    const t = Date.now();
    appendFileSync(config.logFile, `${JSON.stringify({ ...event, t })}\n`);
    send({ type: "event", event, t });
  },
});
await backend.close();
send({ type: "stopped" });
process.disconnect?.();
