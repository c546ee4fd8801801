/** A mistake in the command line: the CLI prints it with a hint and exits 2. */
export class UsageError extends Error {
  override name = "UsageError";
}

/** A failure the CLI explains in one line and exits 1 for (no stack: the message says it all). */
export class CliError extends Error {
  override name = "CliError";
}

/** Exit codes: 0 success, 1 failure or mismatch, 2 bad usage. */
export const EXIT = { ok: 0, failure: 1, usage: 2 } as const;
