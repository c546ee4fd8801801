import { parseArgs } from "node:util";
import { openStore } from "./connect.js";
import { UsageError } from "./errors.js";
import type { Io } from "./io.js";

export async function migrateCommand(argv: string[], io: Io): Promise<number> {
  const { positionals } = parseArgs({ args: argv, allowPositionals: true, options: {} });
  if (positionals.length !== 1) throw new UsageError("migrate needs exactly one store URL");
  const store = await openStore(positionals[0] as string);
  try {
    if (store.migrate === undefined) {
      io.out(`${store.display}: this database keeps no schema, nothing to migrate\n`);
      return 0;
    }
    const report = await store.migrate();
    const applied = report.applied.length === 0 ? "already current" : `applied ${report.applied.join(", ")}`;
    io.out(`${store.display}: schema version ${report.version} (${applied})\n`);
    return 0;
  } finally {
    await store.close();
  }
}
