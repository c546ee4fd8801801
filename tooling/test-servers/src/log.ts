// One prefix for everything this tooling prints, so it stands out in vitest's output.
export function log(message: string): void {
  process.stderr.write(`[test-servers] ${message}\n`);
}

export function warn(message: string): void {
  process.stderr.write(`[test-servers] WARNING: ${message}\n`);
}

/** Milliseconds since `start` (a `performance.now()` value), rounded. */
export function since(start: number): number {
  return Math.round(performance.now() - start);
}

export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
