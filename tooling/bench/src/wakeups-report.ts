// Scenario 5 in the report: its table and its targets (issue 18).
import type { TargetVerdict } from "./report.ts";
import { fmtMs } from "./util.ts";
import type { WakeupsResult } from "./wakeups.ts";

/** Issue 18: wake-up p50 and p99 on PostgreSQL and Redis, and their peer on the same server. */
const WAKE_P50_MS = 5;
const WAKE_P99_MS = 25;
const PEER_OF: Record<string, string> = { postgres: "graphile-worker", redis: "bullmq" };
/** Idle requests per second per worker process on push backends. */
const IDLE_PER_PROCESS = 1;

function rowCells(w: WakeupsResult): string[] {
  return [
    w.peer ? `${w.system} (peer)` : w.system,
    w.peer ? w.wakeUps : `${w.wakeUps}${w.wakeBoundMs === null ? "" : `, bound ${w.wakeBoundMs} ms`}`,
    w.setup ?? `${w.workers} x ${w.processes}`,
    String(w.latency.samples),
    `${fmtMs(w.latency.p50)} / ${fmtMs(w.latency.p99)}`,
    fmtMs(w.latency.max),
    w.idleRequests === null ? "-" : String(w.idleRequests),
    w.idleRequestsPerSecondPerProcess === null ? "-" : w.idleRequestsPerSecondPerProcess.toFixed(2),
    w.idleServer === null
      ? "-"
      : `${w.idleServer.count} ${w.idleServer.what.startsWith("Redis") ? "cmds" : "xacts"}`,
    w.correct ? "yes" : `NO: ${w.problems.join("; ")}`,
  ];
}

/** The table of scenario 5 (nothing when it did not run). */
export function printWakeups(
  rows: WakeupsResult[] | undefined,
  table: (header: string[], rows: string[][]) => string,
  write: (s: string) => void,
): void {
  if (rows === undefined || rows.length === 0) return;
  const idleS = rows[0]!.idleS;
  write(
    `\n### 5. Wake-ups (idle workers; one ready task saved at a time at random intervals; latency from the save's return to the claim's return, ms; then ${idleS} s with nothing to do)\n\n`,
  );
  write(
    table(
      [
        "system",
        "waits by",
        "workers: processes x consumer, slots",
        "tasks",
        "p50 / p99 ms",
        "max ms",
        `idle requests (${idleS} s)`,
        "per s per process",
        "server saw (idle)",
        "each task got once",
      ],
      rows.map(rowCells),
    ),
  );
  write("\n");
  for (const w of rows) {
    if (w.note) write(`  ${w.system}: ${w.note}\n`);
    const errors = Object.entries(w.errors);
    if (errors.length > 0)
      write(`  ${w.system} errors: ${errors.map(([k, v]) => `${k} x${v}`).join(", ")}\n`);
  }
}

/** Scenario 5's verdicts. */
export function wakeupsTargets(rows: WakeupsResult[] | undefined, out: TargetVerdict[]): void {
  if (rows === undefined) return;
  const ms = (value: number, required: string, met: boolean, target: string, note: string) =>
    out.push({ target, value, unit: " ms", required, met: Number.isFinite(value) ? met : null, note });
  for (const w of rows.filter((r) => !r.peer)) {
    const { p50, p99 } = w.latency;
    const peerName = PEER_OF[w.system];
    if (peerName !== undefined) {
      ms(
        p50,
        `<= ${WAKE_P50_MS} ms`,
        p50 <= WAKE_P50_MS,
        `${w.system} wake-up p50`,
        `${w.latency.samples} tasks`,
      );
      ms(
        p99,
        `<= ${WAKE_P99_MS} ms`,
        p99 <= WAKE_P99_MS,
        `${w.system} wake-up p99`,
        `${w.latency.samples} tasks`,
      );
      const peer = rows.find((r) => r.peer && r.system === peerName);
      for (const [label, ours, theirs] of [
        ["p50", p50, peer?.latency.p50],
        ["p99", p99, peer?.latency.p99],
      ] as const) {
        out.push({
          target: `${w.system} wake-up ${label} vs ${peerName}`,
          value: theirs === undefined ? null : ours,
          unit: " ms",
          required: theirs === undefined ? `<= ${peerName}'s` : `<= ${fmtMs(theirs)} ms (${peerName})`,
          met: theirs === undefined || !Number.isFinite(ours) ? null : ours <= theirs,
          note: theirs === undefined ? `${peerName} not measured in this run` : "same server, same run",
        });
      }
    } else if (w.wakeUps === "poll" && w.wakeBoundMs !== null) {
      ms(
        p50,
        `<= ${w.wakeBoundMs} ms (wakeBoundMs)`,
        p50 <= w.wakeBoundMs,
        `${w.system} wake-up p50 (poll)`,
        `p99 ${fmtMs(p99)} ms`,
      );
    }
    if (w.wakeUps === "push") {
      const v = w.idleRequestsPerSecondPerProcess;
      out.push({
        target: `${w.system} idle requests per second per worker process`,
        value: v,
        unit: "/s",
        required: `<= ${IDLE_PER_PROCESS}`,
        met: v === null ? null : v <= IDLE_PER_PROCESS,
        note:
          v === null
            ? "not counted (no server round trips to count)"
            : `${w.idleRequests} requests in ${w.idleS} s from ${w.processes} process(es)`,
      });
    }
  }
}
