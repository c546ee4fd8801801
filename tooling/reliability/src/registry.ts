// How the reliability suite uses the backend registry (@sayiir/backends): where its storages go
// (key prefixes / schemas / collection prefixes / files starting "rel", the sayiir_reliability
// MongoDB database, one shared DynamoDB table with a key prefix per storage: creating a table per
// subject is slow) and its tuning. This module does not import vitest, so the soak's worker
// processes use it too.
import { createRegistry } from "@sayiir/backends";

export const BACKENDS = createRegistry({
  prefix: "rel",
  database: "sayiir_reliability",
  sharedTable: "sayiir_reliability",
  tune: (name, client) => {
    // SQLite waits up to 10 s for a lock unless a test asks for short timeouts.
    if (name === "sqlite") return { busyTimeoutMs: client.timeoutMs ?? 10_000 };
    // Small pools: tests open many clients against one server.
    if (name === "postgres") return { poolConfig: { max: 4 } };
    return undefined;
  },
});
