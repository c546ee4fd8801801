// One soak worker process: the reference worker loop (@sayiir/worker) on one backend, every claim
// and write recorded to its own log. Killed with SIGKILL by the soak at random; SIGTERM drains.
// Usage: node src/soak-worker.ts <backend> <storage> <workerId> <logPath>

import { type BackendName, urlsFromEnv } from "@sayiir/backends";
import { demoWorkflows, runWorker } from "@sayiir/worker";
import { recordingBackend } from "./recorder.ts";
import { BACKENDS } from "./registry.ts";

const [name, storage, workerId, logPath] = process.argv.slice(2) as [BackendName, string, string, string];
const leaseMs = Number(process.env.SAYIIR_SOAK_LEASE_MS ?? 1000);
const subject = await BACKENDS[name].create(urlsFromEnv(), { storage, timeoutMs: 5000 });
const backend = recordingBackend(subject.backend, workerId, logPath);
const [workMin, workMax] = (process.env.SAYIIR_SOAK_WORK_MS ?? "20,400").split(",").map(Number) as [
  number,
  number,
];
const { pipeline, fanout } = demoWorkflows({ workMs: [workMin, workMax] });
const stop = new AbortController();
process.on("SIGTERM", () => stop.abort());
process.send?.({ ready: true });
const stats = await runWorker({
  backend,
  workerId,
  workflows: [pipeline, fanout],
  leaseMs,
  batch: 4,
  maxIdleMs: 50,
  signal: stop.signal,
});
await backend.close();
process.send?.({ stats });
process.exit(0);
