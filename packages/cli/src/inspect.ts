import { parseArgs } from "node:util";
import { mapLimit } from "./concurrency.js";
import { openStore, type Store } from "./connect.js";
import { parseCount } from "./duration.js";
import { UsageError } from "./errors.js";
import { age, count, iso, relative, table } from "./format.js";
import type { Io } from "./io.js";
import { addWorkflow, emptyStats, finishStats, type StoreStats } from "./stats.js";
import { pages, readWorkflow } from "./workflow.js";

const PAGE = 500;

/** Scans every workflow through the contract, `concurrency` reads in flight. */
export async function scanStore(store: Store, concurrency: number): Promise<StoreStats> {
  const stats = emptyStats();
  for await (const page of pages(store.backend, PAGE)) {
    // Each workflow is added as soon as it is read: only `concurrency` snapshots are in memory.
    await mapLimit(page.ids, concurrency, async (id) => {
      const view = await readWorkflow(store.backend, id);
      if (view !== null) addWorkflow(stats, view, Date.now());
    });
  }
  return finishStats(stats);
}

/** The report as lines of text. */
export function renderStats(store: string, stats: StoreStats, now: number, tookMs: number): string[] {
  const lines = [
    `Store        ${store}`,
    `Scanned      ${count(stats.workflows)} workflows in ${age(tookMs)} (every workflow read) at ${iso(now)}`,
    `States       ${Object.entries(stats.states)
      .map(([kind, n]) => `${kind} ${count(n)}`)
      .join("  ")}`,
  ];
  const queues = Object.entries(stats.queues).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  if (queues.length === 0) lines.push("Queues       (no task ready, scheduled or claimed)");
  else {
    lines.push("Queues");
    const rows = queues.map(([name, q]) => [
      name,
      count(q.ready),
      count(q.scheduled),
      count(q.claimed),
      count(q.waiting),
      count(q.held),
      q.oldestReadyAt === null ? "-" : age(now - q.oldestReadyAt),
    ]);
    const header = ["queue", "ready", "scheduled", "claimed", "waiting", "held", "oldest ready"];
    lines.push(...table(header, rows, "  "));
  }
  const oldest = stats.oldestReady;
  lines.push(
    oldest === null
      ? "Oldest ready -"
      : `Oldest ready ${age(now - oldest.readyAt)}: ${oldest.instanceId} / ${oldest.taskId} (queue ${oldest.queue})`,
  );
  lines.push(`Stuck work   ${count(stats.stuck.count)} expired claim(s) not taken over`);
  for (const c of stats.stuck.claims) {
    lines.push(
      `  ${c.instanceId} / ${c.taskId}  worker ${c.workerId}  token ${c.token}  expired ${relative(c.expiresAt, now)}`,
    );
  }
  if (stats.stuck.count > stats.stuck.claims.length) lines.push("  …");
  lines.push(`Paused       ${count(stats.paused.count)}`);
  for (const p of stats.paused.workflows) {
    const why = p.reason === null ? "" : ` "${p.reason}"`;
    const who = p.requestedBy === null ? "" : ` by ${p.requestedBy}`;
    lines.push(`  ${p.instanceId}  paused ${relative(p.pausedAt, now)}${who}${why}`);
  }
  if (stats.paused.count > stats.paused.workflows.length) lines.push("  …");
  lines.push(
    `Events       ${count(stats.pendingEvents.count)} pending in ${count(stats.pendingEvents.workflows)} workflow(s)`,
  );
  return lines;
}

function toJson(store: string, stats: StoreStats, now: number, tookMs: number): string {
  const oldestReadyAgeMs = stats.oldestReady === null ? null : now - stats.oldestReady.readyAt;
  return JSON.stringify({ store, at: iso(now), scanMs: Math.round(tookMs), ...stats, oldestReadyAgeMs });
}

export async function inspectCommand(argv: string[], io: Io): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      json: { type: "boolean", default: false },
      watch: { type: "boolean", default: false },
      interval: { type: "string" },
      concurrency: { type: "string" },
    },
  });
  if (positionals.length !== 1) throw new UsageError("inspect needs exactly one store URL");
  if (values.interval !== undefined && !values.watch) throw new UsageError("--interval needs --watch");
  const interval = parseCount(values.interval, "--interval", 2000, 86_400_000);
  const concurrency = parseCount(values.concurrency, "--concurrency", 16, 256);
  const store = await openStore(positionals[0] as string);
  try {
    let drawn = 0;
    for (;;) {
      const started = performance.now();
      const stats = await scanStore(store, concurrency);
      const now = Date.now();
      const took = performance.now() - started;
      if (values.json) io.out(`${toJson(store.display, stats, now, took)}\n`);
      else {
        const lines = renderStats(store.display, stats, now, took);
        // Redraw in place: back to the first line of the previous report, clear to the end.
        if (drawn > 0 && io.stdoutTty) io.out(`\x1b[${drawn}F\x1b[0J`);
        else if (drawn > 0) io.out("\n");
        io.out(`${lines.join("\n")}\n`);
        drawn = lines.length;
      }
      if (!values.watch) return 0;
      await new Promise((resolve) => setTimeout(resolve, interval));
    }
  } finally {
    await store.close();
  }
}
