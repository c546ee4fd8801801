import { UsageError } from "./errors.js";

const UNITS: Record<string, number> = {
  ms: 1,
  s: 1_000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  w: 604_800_000,
};

/** Parses `30d`, `12h`, `15m`, `90s`, `500ms`, `2w` into milliseconds. */
export function parseDuration(text: string, option: string): number {
  const match = /^(\d+)(ms|s|m|h|d|w)$/.exec(text.trim());
  if (match === null) {
    throw new UsageError(`${option} must be a duration such as 30d, 12h, 15m, 90s or 500ms (got "${text}")`);
  }
  const value = Number(match[1]) * (UNITS[match[2] as string] as number);
  if (!Number.isSafeInteger(value)) throw new UsageError(`${option} is too large`);
  return value;
}

/** Parses a positive integer option within bounds. */
export function parseCount(text: string | undefined, option: string, fallback: number, max: number): number {
  if (text === undefined) return fallback;
  if (!/^\d+$/.test(text)) throw new UsageError(`${option} must be a positive integer (got "${text}")`);
  const value = Number(text);
  if (value < 1 || value > max) throw new UsageError(`${option} must be from 1 to ${max}`);
  return value;
}
