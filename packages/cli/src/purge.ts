import { parseArgs } from "node:util";
import { openStore } from "./connect.js";
import { parseCount, parseDuration } from "./duration.js";
import { UsageError } from "./errors.js";
import { age, count, iso } from "./format.js";
import type { Io } from "./io.js";

/** Workflows deleted per purgeFinished call: each call is a bounded batch on the database. */
const BATCH = 1000;

export async function purgeCommand(argv: string[], io: Io): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { "finished-before": { type: "string" }, limit: { type: "string" } },
  });
  if (positionals.length !== 1) throw new UsageError("purge needs exactly one store URL");
  const before = values["finished-before"];
  if (before === undefined) throw new UsageError("purge needs --finished-before DURATION (e.g. 30d)");
  const olderThan = parseDuration(before, "--finished-before");
  const limit = parseCount(values.limit, "--limit", Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER);
  const store = await openStore(positionals[0] as string);
  try {
    const finishedBefore = Date.now() - olderThan;
    const started = performance.now();
    let deleted = 0;
    // purgeFinished deletes oldest first, up to its limit; 0 means nothing older is left.
    while (deleted < limit) {
      const n = await store.backend.purgeFinished({
        finishedBefore,
        limit: Math.min(BATCH, limit - deleted),
      });
      if (n === 0) break;
      deleted += n;
    }
    io.out(
      `Purged ${count(deleted)} workflow(s) finished before ${iso(finishedBefore)} (${before} ago) ` +
        `from ${store.display} in ${age(performance.now() - started)}\n`,
    );
    return 0;
  } finally {
    await store.close();
  }
}
