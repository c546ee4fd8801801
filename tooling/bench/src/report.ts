// The results: targets, the printed tables (Markdown, so they paste into the README) and the SVG chart.
import type { DiscoveryResult, DiscoveryShape } from "./discovery.ts";
import type { OperationsResult } from "./operations.ts";

/** How scenario 3's shapes read in tables and targets. */
const SHAPE_LABEL: Record<DiscoveryShape, string> = {
  "non-ready": "non-ready",
  future: "future-dated",
  "other-queue": "in another queue",
};

import type { PythonPeerResult } from "./python-peer.ts";
import type { SnapshotResult } from "./snapshots.ts";
import type { StepsResult } from "./steps.ts";
import type { PeerResult, ThroughputResult } from "./throughput.ts";
import { fmtMs, fmtNumber } from "./util.ts";
import type { WakeupsResult } from "./wakeups.ts";
import { printWakeups, wakeupsTargets } from "./wakeups-report.ts";

export interface TargetVerdict {
  target: string;
  value: number | null;
  /** How the value reads: a ratio ("x", the default) or a count with its unit. */
  unit?: string;
  required: string;
  /** null: not measured in this run. */
  met: boolean | null;
  note: string;
}

export interface BenchReport {
  version: 1;
  startedAt: string;
  finishedAt: string;
  durationS: number;
  quick: boolean;
  options: Record<string, unknown>;
  machine: {
    nproc: number;
    cpuModel: string;
    memTotalGiB: number;
    memFreeGiB: number;
    freeH: string;
    loadAverage: number[];
    node: string;
    platform: string;
  };
  servers: Record<string, { server: string; version: string; source: string }>;
  skipped: Record<string, string>;
  throughput: ThroughputResult[];
  peers: PeerResult[];
  discovery: DiscoveryResult[];
  snapshots: SnapshotResult[];
  /** Scenario 5: wake-up latency and idle cost, ours and the peers (absent in reports before it). */
  wakeups?: WakeupsResult[];
  /** Scenario 7: operating a store (absent in reports before it). */
  operations?: OperationsResult[];
  /** Scenario 6: workflow steps through the reference worker (main rows, and PostgreSQL at 4 / 8 workers). */
  steps: StepsResult[];
  /** Scenario 6's peer: the mature Sayiir engine (Python) on the same PostgreSQL. */
  stepsPeers: PythonPeerResult[];
  targets: TargetVerdict[];
  /** fatal: false for extra rows (option variants, bench experiments), which do not fail the run. */
  errors: Array<{ scenario: string; backend: string; message: string; fatal: boolean }>;
}

function ratio(a: number | undefined, b: number | undefined): number | null {
  if (a === undefined || b === undefined || !(b > 0)) return null;
  return Math.round((a / b) * 100) / 100;
}

export function evaluateTargets(r: BenchReport): TargetVerdict[] {
  const tp = (name: string) => r.throughput.find((t) => t.backend === name)?.tasksPerSecond;
  const peer = (name: string) => r.peers.find((p) => p.peer === name)?.jobsPerSecond;
  const out: TargetVerdict[] = [];
  const vs = (ours: string, peerName: string, min: number) => {
    const value = ratio(tp(ours), peer(peerName));
    out.push({
      target: `${ours} throughput / ${peerName}`,
      value,
      required: `>= ${min}`,
      met: value === null ? null : value >= min,
      note:
        value === null ? "not measured" : `${fmtNumber(tp(ours))} vs ${fmtNumber(peer(peerName))} per second`,
    });
  };
  // Issue 17's targets: Redis >= 3x BullMQ, Postgres >= 1x graphile-worker, and >= 1x pg-boss
  // even without batching (the per-task row).
  vs("redis", "bullmq", 3);
  vs("postgres", "graphile-worker", 1);
  vs("postgres", "pg-boss", 1.5);
  const perTask = r.throughput.find((t) => t.extra === true && t.backend.startsWith("postgres, per-task"));
  if (perTask !== undefined) {
    const value = ratio(perTask.tasksPerSecond, peer("pg-boss"));
    out.push({
      target: "postgres per-task calls / pg-boss",
      value,
      required: ">= 1",
      met: value === null ? null : value >= 1,
      note:
        value === null
          ? "not measured"
          : `${fmtNumber(perTask.tasksPerSecond)} vs ${fmtNumber(peer("pg-boss"))} per second`,
    });
  }
  standInTargets(r, out);
  wakeupsTargets(r.wakeups, out);
  stepsTargets(r, out);
  for (const d of r.discovery) {
    const first = d.points[0];
    const last = d.points.at(-1);
    out.push({
      target: `${d.backend} claim p50 at ${fmtNumber(last?.nonReady)} / at ${fmtNumber(first?.nonReady)} ${SHAPE_LABEL[d.shape ?? "non-ready"]}`,
      value: d.claimRatio,
      required: "<= 1.5",
      met: Number.isFinite(d.claimRatio) ? d.claimRatio <= 1.5 : null,
      note: `${fmtMs(first?.claim.p50)} ms -> ${fmtMs(last?.claim.p50)} ms${d.note ? `; ${d.note}` : ""}`,
    });
  }
  operationsTargets(r.operations, out);
  return out;
}

/** Scenario 7: neither a result read nor a purge pays for what it does not touch. */
function operationsTargets(results: OperationsResult[] | undefined, out: TargetVerdict[]): void {
  for (const op of results ?? []) {
    out.push({
      target: `${op.backend} loadTaskResult(1 KiB) p50 beside ${fmtBytes(op.read.besideBytes)} / beside none`,
      value: op.read.ratio,
      required: "<= 1.5",
      met: Number.isFinite(op.read.ratio) ? op.read.ratio <= 1.5 : null,
      note: `${fmtMs(op.read.small.p50)} ms -> ${fmtMs(op.read.big.p50)} ms (loadSnapshot of it: ${fmtMs(op.read.snapshot.p50)} ms)`,
    });
    const first = op.purge.points[0];
    const last = op.purge.points.at(-1);
    out.push({
      target: `${op.backend} purgeFinished(100) p50 at ${fmtNumber(last?.unfinished)} / at ${fmtNumber(first?.unfinished)} unfinished`,
      value: op.purge.ratio,
      required: "<= 1.5",
      met: Number.isFinite(op.purge.ratio) ? op.purge.ratio <= 1.5 : null,
      note: `${fmtMs(first?.call.p50)} ms -> ${fmtMs(last?.call.p50)} ms`,
    });
  }
}

function fmtBytes(bytes: number): string {
  return bytes >= 1024 * 1024
    ? `${Math.round(bytes / (1024 * 1024))} MiB`
    : `${Math.round(bytes / 1024)} KiB`;
}

/**
 * The stand-ins under contention (issue 17, 16 workers): DynamoDB Local >= 480 tasks/s (10x the
 * 48 of 2026-12-04) with <= 4 requests per task; mongo-java-server >= 788 tasks/s (4x 197).
 */
function standInTargets(r: BenchReport, out: TargetVerdict[]): void {
  const main = (name: string) => r.throughput.find((t) => t.backend === name && !t.extra);
  const floor = (name: string, min: number, why: string) => {
    const t = main(name);
    if (t === undefined) return;
    out.push({
      target: `${name} throughput (tasks/s)`,
      value: Math.round(t.tasksPerSecond),
      unit: " tasks/s",
      required: `>= ${min}`,
      met: t.tasksPerSecond >= min,
      note: `${why}; ${t.workers} workers`,
    });
  };
  floor("dynamodb", 480, "10x the 48 tasks/s of 2026-12-04");
  floor("mongo", 788, "4x the 197 tasks/s of 2026-12-04");
  const d = main("dynamodb");
  if (d !== undefined && d.roundTripsPerTask !== null) {
    out.push({
      target: "dynamodb requests per task",
      value: Math.round(d.roundTripsPerTask * 100) / 100,
      unit: " requests",
      required: "<= 4",
      met: d.roundTripsPerTask <= 4,
      note: "17.9 on 2026-12-04",
    });
  }
}

/** Scenario 6: steps/s >= 50% of completeTasks tasks/s per backend; >= 10x the mature engine at 4 and 8 workers. */
function stepsTargets(r: BenchReport, out: TargetVerdict[]): void {
  for (const s of r.steps) {
    if (s.role !== "main") continue;
    out.push({
      target: `${s.backend} workflow steps/s / completeTasks tasks/s (same run)`,
      value: s.ratio ?? null,
      required: ">= 0.5",
      met: s.ratio === undefined ? null : s.ratio >= 0.5,
      note:
        s.ratio === undefined
          ? "not measured (scenario 1 not in this run)"
          : `${fmtNumber(s.stepsPerSecond)} steps/s vs ${fmtNumber(s.completeTasksPerSecond)} tasks/s${s.note ? `; ${s.note}` : ""}`,
    });
  }
  if (!r.options.pythonPeer || !r.steps.some((s) => s.role === "peer-comparison")) return;
  for (const workers of [4, 8]) {
    const ours = r.steps.find((s) => s.role === "peer-comparison" && s.workers === workers);
    const theirs = r.stepsPeers.find((p) => p.workers === workers);
    const value = ratio(ours?.stepsPerSecond, theirs?.stepsPerSecond);
    const why = r.skipped["sayiir (Python)"];
    out.push({
      target: `postgres workflow steps/s / sayiir 1.0.0 (Python), ${workers} workers`,
      value,
      required: ">= 10",
      met: value === null ? null : value >= 10 && ours?.duplicates === 0,
      note:
        value === null
          ? (why ?? "not measured")
          : `${fmtNumber(ours?.stepsPerSecond)} vs ${fmtNumber(theirs?.stepsPerSecond)} steps/s; duplicate executions: ours ${ours?.duplicates}, theirs ${theirs?.duplicates}`,
    });
  }
}

function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => (row[i] ?? "").length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(" | ")} |`;
  return [line(header), `| ${widths.map((w) => "-".repeat(w)).join(" | ")} |`, ...rows.map(line)].join("\n");
}

const pair = (a: number | undefined, b: number | undefined) => `${fmtMs(a)} / ${fmtMs(b)}`;

function kib(bytes: number): string {
  return bytes >= 1024 * 1024 ? `${bytes / 1024 / 1024} MiB` : `${bytes / 1024} KiB`;
}

export function printReport(r: BenchReport, write: (s: string) => void): void {
  const m = r.machine;
  write(
    `\n## Sayiir persistence benchmark (${r.quick ? "quick" : "full"} run, ${r.startedAt})\n\n` +
      `Machine: ${m.nproc} CPUs (${m.cpuModel}), ${m.memTotalGiB} GiB RAM, ${m.platform}, Node ${m.node}, ` +
      `load average at the end ${m.loadAverage.join(" ")}\n`,
  );
  write(
    `Servers: ${Object.entries(r.servers)
      .map(([k, s]) => `${k}: ${s.server}${s.version ? ` ${s.version}` : ""}`)
      .join("; ")}\n`,
  );
  for (const [name, why] of Object.entries(r.skipped)) write(`Skipped ${name}: ${why}\n`);

  if (r.throughput.length > 0) {
    write(
      `\n### 1. Task throughput (claimAvailableTasks -> fenced result + release of the batch in one completeTasks call; the "per-task calls" rows: saveTaskResult + releaseTaskClaim per task)\n\n`,
    );
    write(
      table(
        [
          "backend",
          "tasks",
          "workers x procs",
          "batch",
          "tasks/s",
          "exactly once",
          "mean ms per call: claim / complete or save / release",
          "tasks per claim",
          "requests per task",
          "Redis cmds per task",
          "CPU ms per task: workers / server",
          "pre-load/s",
        ],
        r.throughput.map((t) => [
          t.backend,
          fmtNumber(t.tasks),
          `${t.workers} x ${t.processes}`,
          String(t.batch),
          fmtNumber(t.tasksPerSecond),
          t.exactlyOnce ? "yes" : `NO: ${t.problems.join("; ")}`,
          `${fmtMs(t.meanClaimMs)} / ${fmtMs(t.meanSaveMs)} / ${fmtMs(t.meanReleaseMs)}`,
          fmtNumber(t.tasksPerClaim, 2),
          t.roundTripsPerTask === null ? "-" : fmtNumber(t.roundTripsPerTask, 2),
          t.serverCommandsPerTask === null ? "-" : fmtNumber(t.serverCommandsPerTask, 1),
          `${fmtMs(t.workerCpuMsPerTask ?? undefined)} / ${fmtMs(t.serverCpuMsPerTask ?? undefined)}`,
          fmtNumber(t.preload.perSecond),
        ]),
      ),
    );
    write("\n\n");
    for (const t of r.throughput) if (t.note) write(`  ${t.backend}: ${t.note}\n`);
    const errs = r.throughput.filter((t) => Object.keys(t.errors).length > 0);
    for (const t of errs) write(`  ${t.backend} errors during the run: ${JSON.stringify(t.errors)}\n`);
  }

  if (r.peers.length > 0) {
    write(`\n### 2. The same workload on the peers (no-op handler, same server)\n\n`);
    const ours = (p: PeerResult) =>
      r.throughput.find((t) => t.backend === (p.peer === "bullmq" ? "redis" : "postgres"));
    write(
      table(
        [
          "peer",
          "server",
          "jobs",
          "jobs/s",
          "requests per job",
          "Redis cmds per job",
          "CPU ms per job: workers / server",
          "ours (same server) tasks/s",
          "ours / peer",
          "settings",
        ],
        r.peers.map((p) => [
          `${p.peer} ${p.version}`,
          p.server,
          fmtNumber(p.jobs),
          fmtNumber(p.jobsPerSecond),
          p.roundTripsPerJob === null ? "-" : fmtNumber(p.roundTripsPerJob, 2),
          p.serverCommandsPerJob === null ? "-" : fmtNumber(p.serverCommandsPerJob, 1),
          `${fmtMs(p.workerCpuMsPerJob)} / ${fmtMs(p.serverCpuMsPerJob ?? undefined)}`,
          `${ours(p)?.backend ?? "-"} ${fmtNumber(ours(p)?.tasksPerSecond)}`,
          `${ratio(ours(p)?.tasksPerSecond, p.jobsPerSecond) ?? "-"}x`,
          p.settings,
        ]),
      ),
    );
    write("\n\n");
    for (const p of r.peers) {
      if (p.duplicates || p.missing)
        write(`  ${p.peer}: ${p.duplicates} jobs ran twice, ${p.missing} never ran\n`);
    }
  }

  if (r.discovery.length > 0) {
    write(
      `\n### 3. Discovery cost against store size (p50 / p99 ms, one call at a time; the others: non-ready snapshots, tasks scheduled in 2100, ready tasks in another queue)\n\n`,
    );
    write(
      table(
        [
          "backend",
          "others",
          "claim(1) p50 / p99",
          "find(10) p50 / p99",
          "pre-load/s",
          "claim ratio",
          "find ratio",
        ],
        r.discovery.flatMap((d) =>
          d.points.map((pt, i) => [
            i === 0 ? `${d.backend} (${SHAPE_LABEL[d.shape ?? "non-ready"]})` : "",
            fmtNumber(pt.nonReady),
            pair(pt.claim.p50, pt.claim.p99),
            pair(pt.find.p50, pt.find.p99),
            fmtNumber(pt.load.perSecond),
            i === d.points.length - 1 ? `${d.claimRatio}x` : "",
            i === d.points.length - 1 ? `${d.findRatio}x` : "",
          ]),
        ),
      ),
    );
    write("\n\n");
    for (const d of r.discovery) if (d.note) write(`  ${d.backend}: ${d.note}\n`);
  }

  if (r.snapshots.length > 0) {
    const sizes = r.snapshots[0]!.sizes.map((s) => s.bytes);
    write(`\n### 4. Snapshot save / load latency (p50 / p99 ms)\n\n`);
    write(
      table(
        ["backend", ...sizes.flatMap((b) => [`save ${kib(b)}`, `load ${kib(b)}`])],
        r.snapshots.map((s) => [
          s.backend,
          ...s.sizes.flatMap((x) => [pair(x.save.p50, x.save.p99), pair(x.load.p50, x.load.p99)]),
        ]),
      ),
    );
    write("\n");
  }

  printWakeups(r.wakeups, table, write);
  printSteps(r, write);
  printOperations(r.operations, write);

  if (r.targets.length > 0) {
    write(`\n### Targets\n\n`);
    write(
      table(
        ["target", "value", "required", "verdict", "note"],
        r.targets.map((t) => [
          t.target,
          t.value === null ? "-" : `${t.value}${t.unit ?? "x"}`,
          t.required,
          t.met === null ? "not measured" : t.met ? "met" : "target missed",
          t.note,
        ]),
      ),
    );
    write("\n");
  }
  for (const e of r.errors) {
    write(
      `\n${e.fatal ? "ERROR" : "error (extra row, not fatal)"} in ${e.scenario} / ${e.backend}: ${e.message}\n`,
    );
  }
  write(`\n(${r.durationS} s in all)\n`);
}

function printOperations(results: OperationsResult[] | undefined, write: (s: string) => void): void {
  if (results === undefined || results.length === 0) return;
  write(
    `\n### 7. Operating a store (p50 / p99 ms): loadTaskResult of a 1 KiB output beside none and beside 4 big ones; purgeFinished(100) as unfinished workflows accumulate\n\n`,
  );
  write(
    table(
      [
        "backend",
        "read 1 KiB",
        "beside big",
        "(loadSnapshot)",
        "read ratio",
        "unfinished",
        "purge(100)",
        "purge ratio",
      ],
      results.flatMap((op) =>
        op.purge.points.map((pt, i) => [
          i === 0 ? op.backend : "",
          i === 0 ? pair(op.read.small.p50, op.read.small.p99) : "",
          i === 0 ? `${pair(op.read.big.p50, op.read.big.p99)} (${fmtBytes(op.read.besideBytes)})` : "",
          i === 0 ? fmtMs(op.read.snapshot.p50) : "",
          i === 0 ? `${op.read.ratio}x` : "",
          fmtNumber(pt.unfinished),
          pair(pt.call.p50, pt.call.p99),
          i === op.purge.points.length - 1 ? `${op.purge.ratio}x` : "",
        ]),
      ),
    ),
  );
  write("\n");
}

function printSteps(r: BenchReport, write: (s: string) => void): void {
  if (r.steps.length === 0 && r.stepsPeers.length === 0) return;
  write(
    `\n### 6. Workflow steps (4-step pipelines run to completion by the reference worker: one completeTasks item with next per step)\n\n`,
  );
  const ours = r.steps.map((s) => [
    s.role === "main" ? s.backend : `${s.backend} (vs sayiir)`,
    fmtNumber(s.workflows),
    `${s.workers} x ${s.processes}`,
    String(s.batch),
    fmtNumber(s.stepsPerSecond),
    fmtNumber(s.workflowsPerSecond),
    s.completeTasksPerSecond === undefined ? "-" : fmtNumber(s.completeTasksPerSecond),
    s.ratio === undefined ? "-" : `${s.ratio}x`,
    s.exactlyOnce ? "yes" : `NO: ${s.problems.join("; ")}`,
    String(s.duplicates),
    s.roundTripsPerTask === null ? "-" : fmtNumber(s.roundTripsPerTask, 2),
    `${fmtMs(s.workerCpuMsPerTask ?? undefined)} / ${fmtMs(s.serverCpuMsPerTask ?? undefined)}`,
    fmtNumber(s.preload.perSecond),
  ]);
  const theirs = r.stepsPeers.map((p) => [
    `${p.engine}`,
    fmtNumber(p.workflows),
    `${p.workers} x ${p.processes}`,
    "-",
    fmtNumber(p.stepsPerSecond),
    fmtNumber(p.workflowsPerSecond),
    "-",
    "-",
    p.notCompleted || p.wrongOutput || p.neverRun
      ? `NO: ${p.notCompleted} not completed, ${p.wrongOutput} wrong output, ${p.neverRun} never run`
      : "completed",
    `${p.duplicates} (${p.extraRuns} extra runs)`,
    "-",
    "-",
    "-",
  ]);
  write(
    table(
      [
        "backend",
        "workflows",
        "workers x procs",
        "batch",
        "steps/s",
        "workflows/s",
        "scenario 1 tasks/s (same run)",
        "steps / scenario 1",
        "exactly once",
        "tasks run twice",
        "requests per step",
        "CPU ms per step: workers / server",
        "start/s",
      ],
      [...ours, ...theirs],
    ),
  );
  write("\n\n");
  for (const s of r.steps) {
    if (s.note) write(`  ${s.backend}: ${s.note}\n`);
    if (Object.keys(s.events).length > 0)
      write(`  ${s.backend} (${s.workers} workers) worker events: ${JSON.stringify(s.events)}\n`);
  }
  for (const p of r.stepsPeers) write(`  ${p.engine}, ${p.workers} workers: ${p.settings}\n`);
  const why = r.skipped["sayiir (Python)"];
  if (why) write(`  sayiir (Python): ${why}\n`);
}

// ---------------------------------------------------------------------------------------------
// SVG chart: throughput of every backend and peer, and claim latency at the two store sizes.

function esc(s: string): string {
  return s.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;").replaceAll('"', "&quot;");
}

interface Bar {
  label: string;
  value: number;
  color: string;
  text: string;
}

function barPanel(
  title: string,
  bars: Bar[],
  y0: number,
  width: number,
  unit: string,
): { svg: string; height: number } {
  const left = 250;
  const right = 110;
  const rowH = 22;
  const max = Math.max(1, ...bars.map((b) => b.value));
  const plotW = width - left - right;
  const parts: string[] = [
    `<text x="16" y="${y0 + 18}" font-size="15" font-weight="bold">${esc(title)}</text>`,
  ];
  bars.forEach((b, i) => {
    const y = y0 + 32 + i * rowH;
    const w = Math.max(1, (b.value / max) * plotW);
    parts.push(
      `<text x="${left - 8}" y="${y + 14}" font-size="12" text-anchor="end">${esc(b.label)}</text>`,
      `<rect x="${left}" y="${y + 2}" width="${w.toFixed(1)}" height="${rowH - 6}" fill="${b.color}"/>`,
      `<text x="${(left + w + 6).toFixed(1)}" y="${y + 14}" font-size="12">${esc(b.text)}</text>`,
    );
  });
  parts.push(
    `<text x="${left}" y="${y0 + 32 + bars.length * rowH + 14}" font-size="11" fill="#666">${esc(unit)}</text>`,
  );
  return { svg: parts.join("\n"), height: 32 + bars.length * rowH + 30 };
}

const OURS = "#2f6fdf";
const PEER = "#e08a2c";
const SMALL = "#7fb3f5";
const LARGE = "#1d4fa8";

export function renderSvg(r: BenchReport): string {
  const width = 760;
  const panels: string[] = [];
  let y = 44;
  const tpBars: Bar[] = [
    ...r.throughput.map((t) => ({
      label: t.chartLabel,
      value: t.tasksPerSecond,
      color: OURS,
      text: fmtNumber(t.tasksPerSecond),
    })),
    ...r.peers.map((p) => ({
      label: `${p.peer} (${p.peer === "bullmq" ? "Redis" : "Postgres"})`,
      value: p.jobsPerSecond,
      color: PEER,
      text: fmtNumber(p.jobsPerSecond),
    })),
  ];
  if (tpBars.length > 0) {
    const workers = r.throughput[0]?.workers ?? r.peers[0]?.workers ?? 0;
    const p = barPanel(
      `Task throughput, ${workers} workers over ${r.throughput.find((t) => t.processes > 1)?.processes ?? 2} processes`,
      tpBars,
      y,
      width,
      "tasks (jobs) per second, higher is better; blue: Sayiir backends, orange: job queues",
    );
    panels.push(p.svg);
    y += p.height + 10;
  }
  const stepBars: Bar[] = [
    ...r.steps.map((st) => ({
      label: st.role === "main" ? st.backend : `${st.backend}, ${st.workers} x 1 process`,
      value: st.stepsPerSecond,
      color: OURS,
      text: `${fmtNumber(st.stepsPerSecond)}${st.ratio === undefined ? "" : ` (${st.ratio}x completeTasks)`}`,
    })),
    ...r.stepsPeers.map((p) => ({
      label: `sayiir (Python), ${p.workers} x 1 process`,
      value: p.stepsPerSecond,
      color: PEER,
      text: fmtNumber(p.stepsPerSecond),
    })),
  ];
  if (stepBars.length > 0) {
    const p = barPanel(
      "Workflow steps, 4-step pipelines through the reference worker",
      stepBars,
      y,
      width,
      "steps per second, higher is better; orange: the mature Sayiir engine on the same PostgreSQL",
    );
    panels.push(p.svg);
    y += p.height + 10;
  }
  const discBars: Bar[] = r.discovery.flatMap((d) => {
    const first = d.points[0]!;
    const last = d.points.at(-1)!;
    return [
      {
        label: `${d.backend} ${d.shape ?? "non-ready"} @ ${fmtNumber(first.nonReady)}`,
        value: first.claim.p50,
        color: SMALL,
        text: `${fmtMs(first.claim.p50)} ms`,
      },
      {
        label: `${d.backend} ${d.shape ?? "non-ready"} @ ${fmtNumber(last.nonReady)}`,
        value: last.claim.p50,
        color: LARGE,
        text: `${fmtMs(last.claim.p50)} ms (${d.claimRatio}x)`,
      },
    ];
  });
  if (discBars.length > 0) {
    const p = barPanel(
      "Claim latency (p50) against non-ready snapshots in the store",
      discBars,
      y,
      width,
      "milliseconds per claimAvailableTasks(limit 1), lower is better; ratio large/small in brackets",
    );
    panels.push(p.svg);
    y += p.height + 10;
  }
  const snapBars: Bar[] = r.snapshots.flatMap((s) =>
    s.sizes
      .filter((x) => x.bytes === 64 * 1024)
      .flatMap((x) => [
        {
          label: `${s.backend} save 64 KiB`,
          value: x.save.p50,
          color: SMALL,
          text: `${fmtMs(x.save.p50)} ms`,
        },
        {
          label: `${s.backend} load 64 KiB`,
          value: x.load.p50,
          color: LARGE,
          text: `${fmtMs(x.load.p50)} ms`,
        },
      ]),
  );
  if (snapBars.length > 0) {
    const p = barPanel(
      "Snapshot save / load latency, 64 KiB (p50)",
      snapBars,
      y,
      width,
      "milliseconds, lower is better (1 KiB and 1 MiB: see the table)",
    );
    panels.push(p.svg);
    y += p.height + 10;
  }
  const m = r.machine;
  const footer = `${r.quick ? "QUICK RUN (small sizes), " : ""}${r.startedAt.slice(0, 16).replace("T", " ")} UTC, ${m.nproc} CPUs ${m.cpuModel}, Node ${m.node}`;
  const height = y + 20;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="Helvetica, Arial, sans-serif" role="img">
<title>Sayiir persistence benchmark: task throughput against BullMQ, pg-boss and graphile-worker; claim latency against store size; snapshot latency</title>
<rect width="100%" height="100%" fill="#fff"/>
<text x="16" y="26" font-size="18" font-weight="bold">Sayiir persistence benchmark</text>
${panels.join("\n")}
<text x="16" y="${height - 8}" font-size="11" fill="#666">${esc(footer)}</text>
</svg>
`;
}
