// The soak's logs: each worker writes its recorded backend calls (recorder.ts) to `<id>.log` and
// its loop's events (@sayiir/worker's WorkerEvent, with the local time) to `<id>.log.loop`.
import { readdir, readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { WorkerEvent } from "@sayiir/worker";
import type { RecordedEvent } from "../recorder.ts";

/** A failTasks about to be sent for this claim (logged by soak-worker.ts before the call). */
export interface FailRequest {
  type: "fail-req";
  workerId: string;
  instanceId: string;
  taskId: string;
  token: number;
}

/** One event of a worker loop (or a failTasks request), with the local time it was logged. */
export type LoopEvent = (WorkerEvent | FailRequest) & { now: number };

/**
 * Each failTasks request as a release request (failTasks releases the claim): a claim that may
 * have been released before the next one is not an overlap (analysis.ts).
 */
export function failReleases(loop: readonly LoopEvent[]): RecordedEvent[] {
  return loop.flatMap((e) =>
    e.type === "fail-req"
      ? [{ k: "release-req" as const, w: e.workerId, i: e.instanceId, t: e.taskId, q: e.now }]
      : [],
  );
}

async function readLines<T>(logDir: string, suffix: string): Promise<T[]> {
  const out: T[] = [];
  for (const file of await readdir(logDir)) {
    if (!file.endsWith(suffix)) continue;
    const text = await readFile(join(logDir, file), "utf8");
    for (const line of text.split("\n")) {
      if (line.length === 0) continue;
      try {
        out.push(JSON.parse(line) as T);
      } catch {
        // A line cut by SIGKILL mid-write (writeSync makes this very unlikely): not an event.
      }
    }
  }
  return out;
}

/** Every backend call the workers recorded, and every event their loops reported. */
export async function readLogs(logDir: string): Promise<{ events: RecordedEvent[]; loop: LoopEvent[] }> {
  const [events, loop] = await Promise.all([
    readLines<RecordedEvent>(logDir, ".log"),
    readLines<LoopEvent>(logDir, ".log.loop"),
  ]);
  return { events, loop };
}

/** Writes the recorded calls of the instances a violation names to a file; returns its path. */
export async function dumpViolations(
  backend: string,
  violations: string[],
  events: RecordedEvent[],
): Promise<string> {
  const dump = join(tmpdir(), `sayiir-soak-violations-${backend}-${Date.now()}.jsonl`);
  const involved = new Set(violations.map((v) => /soak\/wf-\d+/.exec(v)?.[0]).filter(Boolean));
  const lines = events
    .filter((e) => [...involved].some((id) => e.i === id || e.i.startsWith(`${id}#`)))
    .sort((a, b) => a.q - b.q)
    .map((e) => JSON.stringify(e));
  await writeFile(dump, `${lines.join("\n")}\n`);
  return dump;
}
