/**
 * The demo's final checks, from the store (what is durable) and from the workers' JSON-lines
 * logs (who claimed and who wrote what, with which fencing token).
 */
import { existsSync, readFileSync } from "node:fs";
import { bytesEqual, type PersistentBackend, type WorkflowSnapshot } from "@sayiir/persistence-core";
import { text, type WorkerEvent } from "@sayiir/worker";
import type { ControlPlan } from "./control.ts";
import { controlChecks } from "./control-checks.ts";

export interface Check {
  ok: boolean;
  text: string;
}

export interface ChecksInput {
  backend: PersistentBackend;
  /** Top-level workflows and their expected final output. */
  expected: Map<string, Uint8Array>;
  /** Fan-out children that must be Completed too. */
  children: string[];
  /** Worker id to its log file. */
  logs: Map<string, string>;
  /** The worker that was killed, if any. */
  killed: string | undefined;
  /** How: "SIGKILLed" (a process) or "crashed" (an in-process worker stopped dead). */
  killedHow?: string;
  wallMs: number;
  /** The controller's cancel, pause/resume and approvals, to check too. */
  control?: ControlPlan;
}

export interface ChecksResult {
  checks: Check[];
  figures: {
    workflows: number;
    tasks: number;
    takeovers: number;
    refused: number;
    tasksPerSecond: number;
    wallMs: number;
  };
}

export type LoggedEvent = WorkerEvent & { t: number };

export function readLog(file: string): LoggedEvent[] {
  if (!existsSync(file)) return [];
  const events: LoggedEvent[] = [];
  for (const line of readFileSync(file, "utf8").split("\n")) {
    if (line.trim() === "") continue;
    try {
      events.push(JSON.parse(line) as LoggedEvent);
    } catch {
      // The last line of a killed worker's log may be cut short.
    }
  }
  return events;
}

const key = (instanceId: string, taskId: string) => `${instanceId}\u0000${taskId}`;
const show = (k: string) => k.replace("\u0000", " / ");

export async function runChecks(input: ChecksInput): Promise<ChecksResult> {
  const checks: Check[] = [];

  // 1. Every workflow Completed with the expected output (and every fan-out branch completed).
  let good = 0;
  const bad: string[] = [];
  for (const [id, want] of input.expected) {
    let snapshot: WorkflowSnapshot;
    try {
      snapshot = await input.backend.loadSnapshot(id);
    } catch (error) {
      bad.push(`${id}: ${(error as Error).message}`);
      continue;
    }
    const state = snapshot.state;
    if (state.kind !== "Completed")
      bad.push(`${id} is ${state.kind}${state.kind === "Failed" ? `: ${state.error}` : ""}`);
    else if (!bytesEqual(state.finalOutput, want)) {
      bad.push(
        `${id}: got ${JSON.stringify(text(state.finalOutput))}, expected ${JSON.stringify(text(want))}`,
      );
    } else good++;
  }
  checks.push({
    ok: good === input.expected.size,
    text: `${good}/${input.expected.size} workflows completed with the expected output${detail(bad)}`,
  });
  let childrenDone = 0;
  for (const id of input.children) {
    const snapshot = await input.backend.loadSnapshot(id).catch(() => undefined);
    if (snapshot?.state.kind === "Completed") childrenDone++;
  }
  if (input.children.length > 0) {
    checks.push({
      ok: childrenDone === input.children.length,
      text: `${childrenDone}/${input.children.length} fan-out branches (child instances) completed`,
    });
  }

  // 2. From the logs: no task committed by two workers (or twice), no branch recorded twice.
  const events = new Map<string, LoggedEvent[]>();
  for (const [worker, file] of input.logs) events.set(worker, readLog(file));
  const commits = new Map<string, string[]>();
  const records = new Map<string, string[]>();
  const claims = new Map<string, { worker: string; token: number }[]>();
  /** Claims handed back by failTasks (a retry): the next claim of the task is no takeover. */
  const handedBack = new Set<string>();
  let refused = 0;
  let tasks = 0;
  let errors = 0;
  const mismatches: string[] = [];
  for (const [worker, list] of events) {
    for (const event of list) {
      if (event.type === "committed") {
        tasks++;
        const k = key(event.instanceId, event.taskId);
        commits.set(k, [...(commits.get(k) ?? []), worker]);
      } else if (event.type === "branch-recorded") {
        const k = key(event.parentId, event.branchTaskId);
        records.set(k, [...(records.get(k) ?? []), worker]);
      } else if (event.type === "claimed") {
        const k = key(event.instanceId, event.taskId);
        claims.set(k, [...(claims.get(k) ?? []), { worker, token: event.token }]);
      } else if (event.type === "retrying") {
        handedBack.add(`${key(event.instanceId, event.taskId)}\u0001${event.token}`);
      } else if (event.type === "lost") {
        refused++;
      } else if (event.type === "error") {
        errors++;
      } else if (event.type === "input-mismatch") {
        mismatches.push(
          `${event.instanceId} / ${event.taskId} (token ${event.token}): got ${JSON.stringify(event.got)}, snapshot says ${JSON.stringify(event.expected)}`,
        );
      }
    }
  }
  const doubles = [...commits].filter(([, workers]) => workers.length > 1);
  const doubleRecords = [...records].filter(([, workers]) => workers.length > 1);
  checks.push({
    ok: doubles.length === 0 && doubleRecords.length === 0,
    text:
      `no task result written twice: ${commits.size} tasks committed once each, ` +
      `${records.size} branch outputs recorded once each in their parent` +
      (refused > 0 ? ` (${refused} stale attempts stopped by fencing)` : "") +
      detail([
        ...doubles.map(([k, w]) => `${show(k)} committed by ${w.join(", ")}`),
        ...doubleRecords.map(([k, w]) => `${show(k)} recorded by ${w.join(", ")}`),
      ]),
  });

  if (input.control !== undefined)
    checks.push(...(await controlChecks(input.backend, input.control, events)));

  checks.push({
    ok: mismatches.length === 0,
    text:
      mismatches.length === 0
        ? "every claimed task came with its snapshot's input"
        : `${mismatches.length} claimed tasks came with an input that is not their snapshot's (a backend bug; the workers refused them)` +
          detail(mismatches),
  });

  // 3. Takeovers: a claim of a task whose previous claim (by token) belonged to another worker.
  let takeovers = 0;
  const takenOver = new Set<string>();
  for (const [k, list] of claims) {
    list.sort((a, b) => a.token - b.token);
    for (let i = 1; i < list.length; i++) {
      if (handedBack.has(`${k}\u0001${list[i - 1]!.token}`)) continue;
      if (list[i]!.worker !== list[i - 1]!.worker) {
        takeovers++;
        takenOver.add(`${list[i - 1]!.worker}\u0001${k}`);
      }
    }
  }
  if (input.killed !== undefined) {
    const open = new Set<string>();
    for (const event of events.get(input.killed) ?? []) {
      if (event.type === "claimed") open.add(key(event.instanceId, event.taskId));
      if (
        event.type === "committed" ||
        event.type === "released" ||
        event.type === "lost" ||
        event.type === "retrying"
      ) {
        open.delete(key(event.instanceId, event.taskId));
      }
    }
    const recovered = [...open].filter((k) => takenOver.has(`${input.killed}\u0001${k}`));
    // A claim nobody took over is fine if its commit reached the store just before the kill (the
    // process died before it could log it): then nobody else committed that task, yet every
    // workflow completed with the right output, which needs that task's result.
    const allCompleted = good === input.expected.size && childrenDone === input.children.length;
    const landed = [...open].filter((k) => !recovered.includes(k) && allCompleted && !commits.has(k));
    const unresolved = [...open].filter((k) => !recovered.includes(k) && !landed.includes(k));
    checks.push({
      ok: unresolved.length === 0,
      text:
        `${input.killed} was ${input.killedHow ?? "SIGKILLed"} holding ${open.size} claims: ${recovered.length} taken over after their lease expired` +
        (landed.length > 0
          ? `, ${landed.length} whose commit had reached the store just before the kill`
          : "") +
        ` (${takeovers} takeovers in all)` +
        detail(unresolved.map((k) => `${show(k)} never taken over`)),
    });
  } else {
    checks.push({ ok: true, text: `no worker was killed; ${takeovers} takeovers` });
  }
  if (errors > 0) checks.push({ ok: true, text: `(info) ${errors} transient backend errors were retried` });

  const tasksPerSecond = tasks / Math.max(0.001, input.wallMs / 1000);
  checks.push({
    ok: tasks > 0,
    text: `throughput: ${tasks} tasks in ${(input.wallMs / 1000).toFixed(1)} s = ${tasksPerSecond.toFixed(0)} tasks/s`,
  });
  return {
    checks,
    figures: { workflows: good, tasks, takeovers, refused, tasksPerSecond, wallMs: input.wallMs },
  };
}

function detail(lines: string[]): string {
  if (lines.length === 0) return "";
  const shown = lines.slice(0, 5).map((line) => `\n      ${line}`);
  return shown.join("") + (lines.length > 5 ? `\n      ... and ${lines.length - 5} more` : "");
}
