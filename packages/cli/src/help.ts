import { URL_FORMS } from "./url.js";

const URLS = `Store URLs:\n  ${URL_FORMS.join("\n  ")}\nPasswords are never printed. DynamoDB credentials come from the AWS default chain.`;

export const HELP: Record<string, string> = {
  main: `sayiir-persistence: operate a Sayiir persistence store.

Usage: sayiir-persistence <command> [options]

Commands:
  inspect URL        counts by state, tasks per queue, stuck work, paused workflows, events
  show URL ID        one workflow: state, position, results, claims, attempts, events
  copy FROM TO       copy every workflow to another store, resumable, verified at the end
  purge URL          delete workflows finished before a time (--finished-before 30d)
  migrate URL        create or upgrade the store's schema

Run "sayiir-persistence <command> --help" for a command's options.
Exit codes: 0 ok, 1 failure or mismatch, 2 bad usage.

${URLS}`,
  inspect: `Usage: sayiir-persistence inspect URL [--json] [--watch [--interval MS]]

Counts workflows by state; per queue the ready, scheduled (future runAt, retry or event
timeout), claimed, waiting (event without timeout) and held (failed, not rescheduled) tasks; the
oldest ready task's age; expired claims not yet taken over (stuck work); paused workflows;
pending events.

It reads every workflow (a scan through the contract: list, snapshot, claims, events), the same
on every backend; on a large store it takes a while and loads the database accordingly.

Options:
  --json            one JSON object (with --watch: one per line)
  --watch           refresh in place until Ctrl-C
  --interval MS     time between refreshes with --watch (default 2000)
  --concurrency N   workflows read at once (default 16)

${URLS}`,
  show: `Usage: sayiir-persistence show URL ID [--json]

One workflow: state and position, results (size and a short hex / UTF-8 preview), claims (holder,
token, expiry, expired?), attempts, pending events.

Options:
  --json   the same as one JSON object

${URLS}`,
  copy: `Usage: sayiir-persistence copy FROM TO [--keep-claims] [--force] [--resume] [--batch N] [--state FILE]
       sayiir-persistence copy FROM TO --verify-only [--keep-claims] [--force]

Copies every workflow of FROM into TO, page by page (bounded memory): its snapshot (state,
results, attempts), then its pending events in order (the target stamps them with its own send
time and sequence), and with --keep-claims its unexpired claims, taken again on the target by the
same worker for the remaining time (with the target's own, new fencing tokens). Expired claims
are not copied. Then verifies: a digest of every workflow on both sides, mismatches printed.

Stop the workers first: changes made during the copy show as mismatches.

Options:
  --keep-claims     copy live claims (default: claims are dropped, tasks are ready on the target)
  --force           copy into a target that already holds workflows
  --resume          continue an interrupted copy from its checkpoint
  --batch N         workflows per page (default 500)
  --concurrency N   workflows copied at once (default 16)
  --state FILE      checkpoint file (default ./sayiir-copy.checkpoint.json)
  --no-verify       skip the verification pass
  --verify-only     only compare the two stores (after a copy), exit 1 on a mismatch

${URLS}`,
  purge: `Usage: sayiir-persistence purge URL --finished-before DURATION [--limit N]

Deletes Completed, Failed and Cancelled workflows (with their results, claims and events) that
finished more than DURATION ago (30d, 12h, 15m, 90s), oldest first, in batches until none is
left. Uses the store's finish-time index: unfinished workflows cost nothing.

Options:
  --finished-before DURATION   required
  --limit N                    delete at most N workflows in all (default: no limit)

${URLS}`,
  migrate: `Usage: sayiir-persistence migrate URL

Creates or upgrades the store's schema (tables, indexes, the DynamoDB table). Idempotent; safe
while other processes run it. Redis keeps no schema: nothing to do there.

${URLS}`,
};
