// One soak worker process: the reference worker loop (@sayiir/worker) on one backend, every claim
// and write recorded to its own log (recorder.ts), and the loop's own events (which event a commit
// consumed, a retry's time, a durable sleep's runAt, a claim's queue and priority) to a second log.
// Killed with SIGKILL by the soak at random; SIGTERM drains.
// Usage: node src/soak-worker.ts <backend> <storage> <workerId> <logPath> <queues, comma-separated>
import { closeSync, openSync, writeSync } from "node:fs";
import { parseTargetName, urlsFromEnv } from "@sayiir/backends";
import type { PersistentBackend } from "@sayiir/persistence-core";
import { runWorker } from "@sayiir/worker";
import { recordingBackend } from "./recorder.ts";
import { BACKENDS } from "./registry.ts";
import { soakWorkflows } from "./soak/workload.ts";

const [name, storage, workerId, logPath, queues] = process.argv.slice(2) as [
  string,
  string,
  string,
  string,
  string,
];
const leaseMs = Number(process.env.SAYIIR_SOAK_LEASE_MS ?? 1000);
const subject = await BACKENDS[parseTargetName(name)].create(urlsFromEnv(), { storage, timeoutMs: 5000 });
const recorded = recordingBackend(subject.backend, workerId, logPath);
const [workMin, workMax] = (process.env.SAYIIR_SOAK_WORK_MS ?? "20,400").split(",").map(Number) as [
  number,
  number,
];
const workflows = Object.values(soakWorkflows([workMin, workMax]));
// writeSync: an event the loop reported is on disk before the next line runs (a SIGKILL loses nothing reported).
const events = openSync(`${logPath}.loop`, "a");
// failTasks releases the claim; the recorder does not see it. Its request is logged before it is
// sent (like the recorder's release-req before completeTasks): a SIGKILL after it landed but before
// its answer came back must not make the next claim look like an overlap.
const backend: PersistentBackend = {
  ...recorded,
  failTasks: async (failures) => {
    for (const { claim } of failures) {
      const { workerId: w, instanceId, taskId, token } = claim;
      writeSync(
        events,
        `${JSON.stringify({ type: "fail-req", workerId: w, instanceId, taskId, token, now: Date.now() })}\n`,
      );
    }
    return recorded.failTasks(failures);
  },
};
const stop = new AbortController();
process.on("SIGTERM", () => stop.abort());
process.send?.({ ready: true });
const stats = await runWorker({
  backend,
  workerId,
  workflows,
  leaseMs,
  batch: 4,
  maxIdleMs: 50,
  queues: queues.split(","),
  signal: stop.signal,
  onEvent: (event) => writeSync(events, `${JSON.stringify({ ...event, now: Date.now() })}\n`),
});
await backend.close();
closeSync(events);
process.send?.({ stats });
process.exit(0);
