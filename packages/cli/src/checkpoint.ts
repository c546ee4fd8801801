import { createHash } from "node:crypto";
import { readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { UsageError } from "./errors.js";

/**
 * Where an interrupted copy stands. Written (atomically: a temporary file renamed over it) before
 * each page is copied and after it is done, so after a crash `pageIds` names every workflow that
 * may be half-copied on the target, and `cursor` is where the listing of the source resumes.
 */
export interface Checkpoint {
  version: 1;
  /** sha-256 of the two store URLs (passwords left out), so a checkpoint resumes only its own copy. */
  stores: string;
  /** The listing cursor of the page being copied (or of the next page when `pageIds` is empty). */
  cursor: string | null;
  /** Ids of the page in progress: deleted from the target before the page is copied again. */
  pageIds: string[];
  /** Workflows copied by the pages finished so far. */
  copied: number;
}

export const DEFAULT_STATE_FILE = "sayiir-copy.checkpoint.json";

export function storesKey(from: string, to: string): string {
  return createHash("sha256").update(`${from}\n${to}`).digest("hex");
}

export function writeCheckpoint(file: string, checkpoint: Checkpoint): void {
  const temporary = `${file}.tmp`;
  writeFileSync(temporary, `${JSON.stringify(checkpoint)}\n`);
  renameSync(temporary, file);
}

/** The checkpoint in `file`, or null when there is none. */
export function readCheckpoint(file: string): Checkpoint | null {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (error) {
    if ((error as { code?: string }).code === "ENOENT") return null;
    throw error;
  }
  const parsed = JSON.parse(text) as Partial<Checkpoint>;
  if (parsed.version !== 1 || typeof parsed.stores !== "string" || !Array.isArray(parsed.pageIds)) {
    throw new UsageError(`${file} is not a copy checkpoint`);
  }
  return parsed as Checkpoint;
}

export function removeCheckpoint(file: string): void {
  rmSync(file, { force: true });
  rmSync(`${file}.tmp`, { force: true });
}
