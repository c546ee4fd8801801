import { scrub } from "./secrets.js";

/** Where a command writes: stdout for results, stderr for progress and errors. */
export interface Io {
  out(text: string): void;
  err(text: string): void;
  /** Help text, written as is: it holds no secret, and its URL forms show where a password goes. */
  help(text: string): void;
  /** Whether stdout / stderr are terminals (redraws and progress bars only there). */
  stdoutTty: boolean;
  stderrTty: boolean;
}

/** The process's streams, every line scrubbed of passwords. */
export const processIo: Io = {
  out: (text) => process.stdout.write(scrub(text)),
  err: (text) => process.stderr.write(scrub(text)),
  help: (text) => process.stdout.write(text),
  stdoutTty: process.stdout.isTTY === true,
  stderrTty: process.stderr.isTTY === true,
};
