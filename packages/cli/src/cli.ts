import { createRequire } from "node:module";
import { copyCommand } from "./copy.js";
import { CliError, EXIT, UsageError } from "./errors.js";
import { HELP } from "./help.js";
import { inspectCommand } from "./inspect.js";
import { type Io, processIo } from "./io.js";
import { migrateCommand } from "./migrate.js";
import { purgeCommand } from "./purge.js";
import { showCommand } from "./show.js";

const COMMANDS: Record<string, (argv: string[], io: Io) => Promise<number>> = {
  inspect: inspectCommand,
  show: showCommand,
  copy: copyCommand,
  purge: purgeCommand,
  migrate: migrateCommand,
};

/** How the databases say a table is missing: the store was never migrated. */
const MISSING_SCHEMA =
  /no such table|relation .* does not exist|schema .* does not exist|ResourceNotFoundException|non-existent table|requested resource not found/i;
const MIGRATE_HINT = 'Has the store been migrated? Run "sayiir-persistence migrate URL" once first.';

/** parseArgs throws TypeErrors with these codes for unknown or malformed options. */
function isArgumentError(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "string" && code.startsWith("ERR_PARSE_ARGS");
}

function describe(error: unknown): string {
  if (error instanceof CliError || error instanceof UsageError) return error.message;
  if (error instanceof Error) {
    const code = (error as { code?: unknown }).code;
    const causeText = error.cause instanceof Error ? error.cause.message : "";
    const cause = causeText && !error.message.includes(causeText) ? ` (cause: ${causeText})` : "";
    const text = `${typeof code === "string" ? `${code}: ` : ""}${error.message}${cause}`;
    return MISSING_SCHEMA.test(text) ? `${text}\n${MIGRATE_HINT}` : text;
  }
  return String(error);
}

/** Runs one command line (without node and the script) and returns the exit code. */
export async function main(argv: readonly string[], io: Io = processIo): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === "--help" || name === "-h" || name === "help") {
    const topic = name === "help" && rest[0] !== undefined ? HELP[rest[0]] : undefined;
    io.help(`${topic ?? HELP.main}\n`);
    return name === undefined ? EXIT.usage : EXIT.ok;
  }
  if (name === "--version" || name === "-v") {
    const pkg = createRequire(import.meta.url)("../package.json") as { version: string };
    io.out(`${pkg.version}\n`);
    return EXIT.ok;
  }
  const command = COMMANDS[name];
  if (command === undefined) {
    io.err(`sayiir-persistence: unknown command "${name}"\nRun "sayiir-persistence --help".\n`);
    return EXIT.usage;
  }
  if (rest.includes("--help") || rest.includes("-h")) {
    io.help(`${HELP[name]}\n`);
    return EXIT.ok;
  }
  try {
    return await command(rest, io);
  } catch (error) {
    if (error instanceof UsageError || isArgumentError(error)) {
      io.err(`sayiir-persistence ${name}: ${describe(error)}\nRun "sayiir-persistence ${name} --help".\n`);
      return EXIT.usage;
    }
    io.err(`sayiir-persistence ${name}: ${describe(error)}\n`);
    return EXIT.failure;
  }
}
