// Small helpers shared by the harness: timing, percentiles, bounded concurrency, formatting.

export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** Wall-clock milliseconds with sub-millisecond precision, comparable across processes of one machine. */
export function nowMs(): number {
  return performance.timeOrigin + performance.now();
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

export interface Summary {
  samples: number;
  p50: number;
  p99: number;
  mean: number;
  min: number;
  max: number;
}

/** Percentiles of latencies in milliseconds (nearest-rank). */
export function summarize(values: number[]): Summary {
  const sorted = [...values].sort((a, b) => a - b);
  const n = sorted.length;
  if (n === 0) return { samples: 0, p50: Number.NaN, p99: Number.NaN, mean: Number.NaN, min: 0, max: 0 };
  const rank = (p: number) => sorted[Math.min(n - 1, Math.max(0, Math.ceil(p * n) - 1))]!;
  const mean = sorted.reduce((a, b) => a + b, 0) / n;
  return {
    samples: n,
    p50: round3(rank(0.5)),
    p99: round3(rank(0.99)),
    mean: round3(mean),
    min: round3(sorted[0]!),
    max: round3(sorted[n - 1]!),
  };
}

export function round3(x: number): number {
  return Math.round(x * 1000) / 1000;
}

/** Runs `fn(i)` for i in [0, count) with at most `concurrency` calls in flight. */
export async function forEachConcurrent(
  count: number,
  concurrency: number,
  fn: (i: number) => Promise<void>,
): Promise<void> {
  let next = 0;
  const lanes = Array.from({ length: Math.min(concurrency, count) }, async () => {
    while (next < count) {
      const i = next++;
      await fn(i);
    }
  });
  await Promise.all(lanes);
}

/** Times an async call in milliseconds. */
export async function timed<T>(fn: () => Promise<T>): Promise<[T, number]> {
  const t0 = performance.now();
  const value = await fn();
  return [value, performance.now() - t0];
}

export function fmtNumber(x: number | undefined, digits = 0): string {
  if (x === undefined || !Number.isFinite(x)) return "-";
  return x.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

export function fmtMs(x: number | undefined): string {
  if (x === undefined || !Number.isFinite(x)) return "-";
  if (x < 1) return x.toFixed(3);
  if (x < 10) return x.toFixed(2);
  if (x < 100) return x.toFixed(1);
  return x.toFixed(0);
}

/** A short random id of [a-z0-9]. */
export function runId(): string {
  return `${Date.now().toString(36)}${Math.floor(Math.random() * 36 ** 4).toString(36)}`;
}
