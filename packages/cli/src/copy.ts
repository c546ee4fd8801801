import { resolve } from "node:path";
import { parseArgs } from "node:util";
import cliProgress from "cli-progress";
import {
  type Checkpoint,
  DEFAULT_STATE_FILE,
  readCheckpoint,
  removeCheckpoint,
  storesKey,
  writeCheckpoint,
} from "./checkpoint.js";
import { mapLimit } from "./concurrency.js";
import { openStore, type Store } from "./connect.js";
import { copyWorkflow, removeWorkflow } from "./copy-workflow.js";
import { parseCount } from "./duration.js";
import { CliError, UsageError } from "./errors.js";
import { age, count } from "./format.js";
import type { Io } from "./io.js";
import { verifyCopy } from "./verify.js";
import { pages } from "./workflow.js";

interface CopyOptions {
  keepClaims: boolean;
  force: boolean;
  resume: boolean;
  verify: boolean;
  verifyOnly: boolean;
  batch: number;
  concurrency: number;
  stateFile: string;
}

function parseCopyArgs(argv: string[]): { from: string; to: string; options: CopyOptions } {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      "keep-claims": { type: "boolean", default: false },
      force: { type: "boolean", default: false },
      resume: { type: "boolean", default: false },
      "no-verify": { type: "boolean", default: false },
      "verify-only": { type: "boolean", default: false },
      batch: { type: "string" },
      concurrency: { type: "string" },
      state: { type: "string" },
    },
  });
  if (positionals.length !== 2) throw new UsageError("copy needs a source URL and a target URL");
  if (values["verify-only"] && (values["no-verify"] || values.resume)) {
    throw new UsageError("--verify-only goes with neither --no-verify nor --resume");
  }
  const [from, to] = positionals as [string, string];
  return {
    from,
    to,
    options: {
      keepClaims: values["keep-claims"],
      force: values.force,
      resume: values.resume,
      verify: !values["no-verify"],
      verifyOnly: values["verify-only"],
      batch: parseCount(values.batch, "--batch", 500, 10_000),
      concurrency: parseCount(values.concurrency, "--concurrency", 16, 256),
      stateFile: resolve(values.state ?? DEFAULT_STATE_FILE),
    },
  };
}

/** A progress bar on stderr, only on a terminal (a log file gets the summary lines alone). */
function progressBar(io: Io, label: string, total: number, start: number) {
  if (!io.stderrTty) return { tick: (_n: number) => {}, stop: () => {} };
  const bar = new cliProgress.SingleBar(
    {
      format: `${label} |{bar}| {percentage}% {value}/{total} workflows | {rate}/s | eta {eta_formatted}`,
      stream: process.stderr,
      hideCursor: true,
      etaBuffer: 50,
    },
    cliProgress.Presets.shades_classic,
  );
  const started = performance.now();
  let done = 0;
  bar.start(Math.max(total, start), start, { rate: "0" });
  return {
    tick: (n: number) => {
      done += n;
      const rate = Math.round(done / Math.max(0.001, (performance.now() - started) / 1000));
      bar.increment(n, { rate: count(rate) });
    },
    stop: () => bar.stop(),
  };
}

async function countIds(store: Store, pageSize: number): Promise<number> {
  let total = 0;
  for await (const page of pages(store.backend, pageSize)) total += page.ids.length;
  return total;
}

/** The checkpoint to start from, after the refusals: another copy's file, a non-empty target. */
async function startingPoint(from: Store, to: Store, options: CopyOptions): Promise<Checkpoint> {
  const stores = storesKey(from.display, to.display);
  const existing = readCheckpoint(options.stateFile);
  if (options.resume) {
    if (existing === null) throw new UsageError(`no checkpoint in ${options.stateFile}: nothing to resume`);
    if (existing.stores !== stores) {
      throw new UsageError(`${options.stateFile} is the checkpoint of a copy between other stores`);
    }
    return existing;
  }
  if (existing !== null) {
    throw new UsageError(
      `${options.stateFile} holds the checkpoint of an interrupted copy: add --resume to finish it, or delete the file`,
    );
  }
  if (!options.force) {
    const first = await to.backend.listSnapshotsPage({ limit: 1 });
    if (first.instanceIds.length > 0) {
      throw new CliError(
        `the target ${to.display} already holds workflows: add --force to copy into it anyway`,
      );
    }
  }
  return { version: 1, stores, cursor: null, pageIds: [], copied: 0 };
}

/** Test hook: SIGKILL this process after that many workflows (a crash mid-page, for --resume tests). */
const KILL_AFTER = Number(process.env.SAYIIR_CLI_TEST_KILL_AFTER ?? 0);

async function copyPages(from: Store, to: Store, options: CopyOptions, io: Io) {
  let checkpoint = await startingPoint(from, to, options);
  if (checkpoint.pageIds.length > 0) {
    // The page in progress at the crash may be half-copied: clear it, then copy it again.
    await mapLimit(checkpoint.pageIds, options.concurrency, (id) => removeWorkflow(to.backend, id));
    io.err(
      `resuming after ${count(checkpoint.copied)} workflows; cleared ${checkpoint.pageIds.length} of the interrupted page\n`,
    );
  }
  const total = await countIds(from, options.batch);
  const bar = progressBar(io, "copy  ", total, checkpoint.copied);
  const totals = { workflows: 0, events: 0, claims: 0, claimsSkipped: 0 };
  const started = performance.now();
  try {
    for await (const page of pages(from.backend, options.batch, checkpoint.cursor)) {
      checkpoint = { ...checkpoint, cursor: page.cursor, pageIds: page.ids };
      writeCheckpoint(options.stateFile, checkpoint);
      let copied = 0;
      await mapLimit(page.ids, options.concurrency, async (id) => {
        const outcome = await copyWorkflow(from.backend, to.backend, id, {
          keepClaims: options.keepClaims,
          replace: options.force,
        });
        if (!outcome.copied) return;
        copied++;
        totals.events += outcome.events;
        totals.claims += outcome.claims;
        totals.claimsSkipped += outcome.claimsSkipped;
        if (KILL_AFTER > 0 && totals.workflows + copied >= KILL_AFTER) process.kill(process.pid, "SIGKILL");
        bar.tick(1);
      });
      totals.workflows += copied;
      checkpoint = {
        ...checkpoint,
        cursor: page.nextCursor,
        pageIds: [],
        copied: checkpoint.copied + copied,
      };
      if (page.nextCursor === null) removeCheckpoint(options.stateFile);
      else writeCheckpoint(options.stateFile, checkpoint);
    }
  } finally {
    bar.stop();
  }
  return { ...totals, all: checkpoint.copied, seconds: (performance.now() - started) / 1000 };
}

export async function copyCommand(argv: string[], io: Io): Promise<number> {
  const { from: fromUrl, to: toUrl, options } = parseCopyArgs(argv);
  const from = await openStore(fromUrl);
  let to: Store | undefined;
  try {
    to = await openStore(toUrl);
    if (from.display === to.display) throw new UsageError("source and target are the same store");
    if (options.verifyOnly) return await verifyStep(from, to, options, io);
    const copied = await copyPages(from, to, options, io);
    const rate = Math.round(copied.workflows / Math.max(0.001, copied.seconds));
    io.out(
      `Copied ${count(copied.workflows)} workflows (${count(copied.events)} events, ${count(copied.claims)} claims) ` +
        `from ${from.display} to ${to.display} in ${age(copied.seconds * 1000)} (${count(rate)} workflows/s)\n`,
    );
    if (copied.all !== copied.workflows)
      io.out(`  ${count(copied.all)} in all, with the runs before --resume\n`);
    if (copied.claimsSkipped > 0) {
      io.out(`  ${count(copied.claimsSkipped)} claim(s) not kept: expired, or refused by the target\n`);
    }
    if (!options.verify) return 0;
    return await verifyStep(from, to, options, io);
  } finally {
    await Promise.allSettled([from.close(), to?.close()]);
  }
}

async function verifyStep(from: Store, to: Store, options: CopyOptions, io: Io): Promise<number> {
  const total = await countIds(from, options.batch);
  const bar = progressBar(io, "verify", total, 0);
  const started = performance.now();
  const result = await verifyCopy(from.backend, to.backend, {
    pageSize: options.batch,
    concurrency: options.concurrency,
    keepClaims: options.keepClaims,
    onPage: (n) => bar.tick(n),
  }).finally(() => bar.stop());
  const took = age(performance.now() - started);
  for (const m of result.mismatches.slice(0, 100)) io.out(`  MISMATCH ${m.instanceId}: ${m.problem}\n`);
  if (result.mismatches.length > 100) io.out(`  … ${result.mismatches.length - 100} more\n`);
  const extra = result.extra.count;
  for (const id of result.extra.ids)
    io.out(`  ${options.force ? "note" : "MISMATCH"} ${id}: only on target\n`);
  const failed = result.mismatches.length + (options.force ? 0 : extra);
  io.out(
    `Verified ${count(result.compared)} workflows in ${took}: ${failed === 0 ? "all digests match" : `${count(failed)} mismatch(es)`}` +
      `${extra > 0 ? `; ${count(extra)} workflow(s) only on the target` : ""}\n`,
  );
  return failed === 0 ? 0 : 1;
}
