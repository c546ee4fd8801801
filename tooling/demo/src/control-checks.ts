/**
 * The checks of the controller's part of the demo, from the store and the workers' logs: the
 * cancelled workflow ended Cancelled and never advanced after the cancel; the paused one did not
 * advance while paused and completed after resume; every approval was consumed exactly once and
 * its workflow continued with its payload; the unanswered one ran its timeout path.
 */
import { bytesEqual, type PersistentBackend, type WorkflowSnapshot } from "@sayiir/persistence-core";
import { text, type WorkerEvent } from "@sayiir/worker";
import type { Check, LoggedEvent } from "./checks.ts";
import type { ControlPlan } from "./control.ts";

type Committed = Extract<WorkerEvent, { type: "committed" }>;

/** Every logged event of the workers, by worker id. */
export type WorkerLogs = Map<string, LoggedEvent[]>;

function eventsOf<T extends WorkerEvent["type"]>(logs: WorkerLogs, type: T, instanceId: string) {
  const found: Array<Extract<WorkerEvent, { type: T }> & { t: number }> = [];
  for (const list of logs.values()) {
    for (const event of list) {
      if (event.type === type && "instanceId" in event && event.instanceId === instanceId) {
        found.push(event as Extract<WorkerEvent, { type: T }> & { t: number });
      }
    }
  }
  return found;
}

async function load(backend: PersistentBackend, id: string): Promise<WorkflowSnapshot | string> {
  try {
    return await backend.loadSnapshot(id);
  } catch (error) {
    return error instanceof Error ? error.message : String(error);
  }
}

/** Result task ids of a snapshot (sorted), for "did it advance" comparisons. */
function results(snapshot: WorkflowSnapshot | undefined): string {
  const state = snapshot?.state;
  if (state === undefined || !("completedTasks" in state)) return "-";
  return Object.keys(state.completedTasks).sort().join(",");
}

function positionOf(snapshot: WorkflowSnapshot | undefined): string {
  const state = snapshot?.state;
  return state !== undefined && "position" in state ? JSON.stringify(state.position) : "-";
}

export async function controlChecks(
  backend: PersistentBackend,
  plan: ControlPlan,
  logs: WorkerLogs,
): Promise<Check[]> {
  return [
    await cancelCheck(backend, plan, logs),
    pauseCheck(plan, logs),
    await approvalCheck(backend, plan, logs),
    await timeoutCheck(backend, plan, logs),
  ];
}

async function cancelCheck(backend: PersistentBackend, plan: ControlPlan, logs: WorkerLogs): Promise<Check> {
  const { id, at, after, error } = plan.cancel;
  if (at === undefined) return { ok: false, text: `${id} was never cancelled${error ? `: ${error}` : ""}` };
  const final = await load(backend, id);
  if (typeof final === "string") return { ok: false, text: `${id}: ${final}` };
  const state = final.state;
  const commits = eventsOf(logs, "committed", id).map((e) => e.taskId);
  const stopped = eventsOf(logs, "lost", id);
  const problems: string[] = [];
  if (state.kind !== "Cancelled") problems.push(`it is ${state.kind}`);
  else if (state.reason !== "demo: order withdrawn") problems.push(`reason ${JSON.stringify(state.reason)}`);
  if (results(final) !== results(after))
    problems.push(`results ${results(after)} at the cancel, ${results(final)} at the end`);
  const done = new Set(results(final).split(","));
  const stray = commits.filter((taskId) => !done.has(taskId));
  if (stray.length > 0) problems.push(`commits of ${stray.join(", ")} are not in its results`);
  const interrupted = state.kind === "Cancelled" ? state.interruptedAtTaskId : null;
  return {
    ok: problems.length === 0,
    text:
      `cancelled ${id} ended Cancelled and never advanced after the cancel: ${commits.length} step${commits.length === 1 ? "" : "s"} committed before it` +
      `${interrupted ? `, interrupted at ${interrupted}` : ""}` +
      (stopped.length > 0
        ? `, its running task stopped by the revoked claim (${stopped.map((e) => e.during).join(", ")})`
        : "") +
      detail(problems),
  };
}

function pauseCheck(plan: ControlPlan, logs: WorkerLogs): Check {
  const { id, at, after, beforeResume, resumedAt, error } = plan.pause;
  if (at === undefined || resumedAt === undefined || error !== undefined) {
    return { ok: false, text: `${id} was not paused and resumed: ${error ?? "the run ended first"}` };
  }
  const problems: string[] = [];
  if (after?.state.kind !== "Paused") problems.push(`right after the pause it is ${after?.state.kind}`);
  if (beforeResume?.state.kind !== "Paused")
    problems.push(`before the resume it is ${beforeResume?.state.kind}`);
  if (positionOf(after) !== positionOf(beforeResume))
    problems.push(`moved from ${positionOf(after)} to ${positionOf(beforeResume)} while paused`);
  if (results(after) !== results(beforeResume))
    problems.push(`results ${results(after)} became ${results(beforeResume)} while paused`);
  const paused = eventsOf(logs, "paused", id);
  // Logged while paused and not in the results right after the pause (a commit that landed just
  // before the pause may be logged a little after it).
  const before = new Set(results(after).split(","));
  const during = eventsOf(logs, "committed", id).filter(
    (e) => e.t > at && e.t < resumedAt && !before.has(e.taskId),
  );
  if (during.length > 0) problems.push(`${during.map((e) => e.taskId).join(", ")} committed while paused`);
  return {
    ok: problems.length === 0,
    text:
      `paused ${id} did not advance while paused (${((resumedAt - at) / 1000).toFixed(1)} s)` +
      (paused.length > 0
        ? `, its running task stopped early and was released (${paused.map((e) => e.during).join(", ")})`
        : "") +
      `, and completed after resume (output checked above)` +
      detail(problems),
  };
}

async function approvalCheck(
  backend: PersistentBackend,
  plan: ControlPlan,
  logs: WorkerLogs,
): Promise<Check> {
  const problems: string[] = [];
  let once = 0;
  let landed = 0;
  const phases = new Map<string, number>();
  for (const record of plan.approvals) {
    if (record.sequence === undefined) {
      problems.push(`${record.id}: ${record.error ?? "no approval sent"}`);
      continue;
    }
    phases.set(record.phase ?? "?", (phases.get(record.phase ?? "?") ?? 0) + 1);
    const consumed = eventsOf(logs, "committed", record.id).filter((e) => e.event !== undefined);
    const other = consumed.filter(
      (e) => e.event?.sequence !== record.sequence || e.event?.eventName !== "approval",
    );
    const final = await load(backend, record.id);
    const continued =
      typeof final !== "string" &&
      final.state.kind === "Completed" &&
      bytesEqual(final.state.finalOutput, plan.expected.get(record.id) ?? new Uint8Array()) &&
      text(final.state.finalOutput).includes(text(record.payload));
    if (!continued) problems.push(`${record.id} did not continue with its payload`);
    if (other.length > 0) problems.push(`${record.id} consumed ${JSON.stringify(other.map((e) => e.event))}`);
    if (consumed.length > 1)
      problems.push(`${record.id}: its approval was consumed ${consumed.length} times`);
    if (eventsOf(logs, "committed", record.id).some((e) => e.timedOut))
      problems.push(`${record.id} timed out`);
    if (consumed.length === 1) once++;
    // A commit whose worker was killed before it could log it: the store shows it landed.
    else if (consumed.length === 0 && continued) landed++;
  }
  const sent = [...phases].map(([phase, n]) => `${n} ${phase}`).join(", ");
  return {
    ok: problems.length === 0,
    text:
      `${plan.approvals.length} approvals (${sent}): each consumed exactly once (${once} by a logged commit` +
      `${landed > 0 ? `, ${landed} by a commit that reached the store just before a kill` : ""}), ` +
      `and each workflow continued with its payload` +
      detail(problems),
  };
}

async function timeoutCheck(backend: PersistentBackend, plan: ControlPlan, logs: WorkerLogs): Promise<Check> {
  const id = plan.expiring;
  const final = await load(backend, id);
  const want = plan.expected.get(id) ?? new Uint8Array();
  const ranTimeout =
    typeof final !== "string" &&
    final.state.kind === "Completed" &&
    bytesEqual(final.state.finalOutput, want);
  const decide = eventsOf(logs, "committed", id).filter((e: Committed) => e.taskId === "decide");
  const flagged = decide.every((e) => e.timedOut === true && e.event === undefined);
  return {
    ok: ranTimeout && flagged,
    text:
      `unanswered ${id} timed out and ran its timeout path (${JSON.stringify(text(want))})` +
      detail([
        ...(ranTimeout
          ? []
          : [typeof final === "string" ? final : `it is ${final.state.kind}${outputOf(final)}`]),
        ...(flagged ? [] : ["its decide step did not run as timed out"]),
      ]),
  };
}

function outputOf(snapshot: WorkflowSnapshot): string {
  return snapshot.state.kind === "Completed"
    ? ` with ${JSON.stringify(text(snapshot.state.finalOutput))}`
    : "";
}

function detail(lines: string[]): string {
  return lines.map((line) => `\n      ${line}`).join("");
}
