import { parseArgs } from "node:util";
import {
  completedTasksOf,
  type ExecutionPosition,
  isClaimLive,
  type WorkflowSnapshot,
} from "@sayiir/persistence-core";
import { openStore } from "./connect.js";
import { CliError, UsageError } from "./errors.js";
import { iso, preview, previewLine, relative } from "./format.js";
import type { Io } from "./io.js";
import { readWorkflow, type WorkflowView } from "./workflow.js";

function position(p: ExecutionPosition): string {
  switch (p.kind) {
    case "NotStarted":
      return "NotStarted";
    case "AtTask": {
      const extra = [
        p.queue === undefined ? null : `queue ${p.queue}`,
        p.priority === undefined ? null : `priority ${p.priority}`,
        p.runAt === undefined ? null : `runAt ${iso(p.runAt)}`,
      ].filter((x) => x !== null);
      return `AtTask ${p.taskId}${extra.length ? ` (${extra.join(", ")})` : ""}`;
    }
    case "AtFork":
      return `AtFork ${p.branchId} (done: ${p.completedBranches.join(", ") || "none"})`;
    case "AtJoin":
      return `AtJoin ${p.joinId} (done: ${p.completedBranches.join(", ") || "none"})`;
    case "AwaitingEvent": {
      const timeout = p.timeoutAt === null ? "no timeout" : `timeout ${iso(p.timeoutAt)}`;
      return `AwaitingEvent "${p.eventName}" then ${p.nextTaskId} (${timeout}${p.queue ? `, queue ${p.queue}` : ""})`;
    }
  }
}

function stateLines(s: WorkflowSnapshot, now: number): string[] {
  const state = s.state;
  switch (state.kind) {
    case "InProgress":
      return [`State        InProgress at ${position(state.position)}`];
    case "Paused":
      return [
        `State        Paused ${relative(state.pausedAt, now)}${state.requestedBy ? ` by ${state.requestedBy}` : ""}${state.reason ? `: "${state.reason}"` : ""}`,
        `Position     ${position(state.position)}`,
      ];
    case "Cancelled":
      return [
        `State        Cancelled ${relative(state.cancelledAt, now)}${state.requestedBy ? ` by ${state.requestedBy}` : ""}${state.reason ? `: "${state.reason}"` : ""}`,
        `Interrupted  ${state.interruptedAtTaskId ?? "-"}`,
      ];
    case "Completed":
      return ["State        Completed", `Final output ${previewLine(state.finalOutput).trimStart()}`];
    case "Failed":
      return ["State        Failed", `Error        ${JSON.stringify(state.error)}`];
  }
}

/** The workflow as text lines. */
export function renderWorkflow(view: WorkflowView, now: number): string[] {
  const { snapshot: s, claims, events } = view;
  const lines = [
    `Workflow     ${s.instanceId}`,
    `Definition   ${s.definitionHash}`,
    ...stateLines(s, now),
    `Created      ${iso(s.createdAt)}   updated ${iso(s.updatedAt)} (${relative(s.updatedAt, now)})`,
    `Input        ${s.initialInput === undefined ? "-" : previewLine(s.initialInput).trimStart()}`,
  ];
  const results = Object.values(completedTasksOf(s.state) ?? {});
  const last =
    s.state.kind === "InProgress" || s.state.kind === "Paused" ? s.state.lastCompletedTaskId : null;
  lines.push(`Results      ${results.length}${last ? ` (last completed: ${last})` : ""}`);
  const width = Math.max(0, ...results.map((r) => r.taskId.length));
  for (const r of results) lines.push(`  ${r.taskId.padEnd(width)}  ${previewLine(r.output)}`);
  lines.push(`Claims       ${claims.length}`);
  for (const c of claims) {
    const expiry =
      c.expiresAt === null
        ? "never expires"
        : `${isClaimLive(c, now) ? "expires" : "EXPIRED"} ${relative(c.expiresAt, now)} (${iso(c.expiresAt)})`;
    lines.push(
      `  ${c.taskId}  worker ${c.workerId}  token ${c.token}  claimed ${relative(c.claimedAt, now)}  ${expiry}`,
    );
  }
  const attempts = Object.entries(s.attempts ?? {});
  lines.push(`Attempts     ${attempts.length === 0 ? "-" : ""}`.trimEnd());
  for (const [taskId, a] of attempts) {
    const retry =
      a.retryAt === undefined
        ? ""
        : a.retryAt === null
          ? "  not rescheduled"
          : `  retry ${relative(a.retryAt, now)}`;
    const when = a.lastFailedAt === null ? "" : ` ${relative(a.lastFailedAt, now)}`;
    const error = a.lastError === null ? "" : `: ${JSON.stringify(a.lastError)}`;
    lines.push(`  ${taskId}  ${a.count} failed run(s), last${when}${error}${retry}`);
  }
  lines.push(`Events       ${events.length} pending`);
  for (const e of events) {
    lines.push(
      `  #${e.sequence} ${e.eventName}  sent ${relative(e.sentAt, now)}  ${previewLine(e.payload).trimStart()}`,
    );
  }
  return lines;
}

/** JSON of a workflow: byte values as previews (size, hex, UTF-8), never whole. */
export function workflowJson(view: WorkflowView, now: number): unknown {
  const { snapshot: s, claims, events } = view;
  const state: Record<string, unknown> = { ...s.state };
  const tasks = completedTasksOf(s.state);
  if (tasks !== undefined) {
    state.completedTasks = Object.fromEntries(Object.values(tasks).map((r) => [r.taskId, preview(r.output)]));
  }
  if (s.state.kind === "Completed") state.finalOutput = preview(s.state.finalOutput);
  return {
    instanceId: s.instanceId,
    definitionHash: s.definitionHash,
    createdAt: s.createdAt,
    updatedAt: s.updatedAt,
    initialInput: s.initialInput === undefined ? null : preview(s.initialInput),
    state,
    attempts: s.attempts ?? {},
    claims: claims.map((c) => ({ ...c, expired: !isClaimLive(c, now) })),
    pendingEvents: events.map((e) => ({ ...e, payload: preview(e.payload) })),
  };
}

export async function showCommand(argv: string[], io: Io): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { json: { type: "boolean", default: false } },
  });
  if (positionals.length !== 2) throw new UsageError("show needs a store URL and a workflow id");
  const [url, id] = positionals as [string, string];
  const store = await openStore(url);
  try {
    const view = await readWorkflow(store.backend, id);
    if (view === null) throw new CliError(`no workflow "${id}" in ${store.display}`);
    const now = Date.now();
    if (values.json) io.out(`${JSON.stringify(workflowJson(view, now))}\n`);
    else io.out(`${renderWorkflow(view, now).join("\n")}\n`);
    return 0;
  } finally {
    await store.close();
  }
}
