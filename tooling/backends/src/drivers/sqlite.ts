// SQLite: a storage is a database file; a fresh one lives in a new temporary directory, which
// cleanup removes.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { CORRUPT_HEADER, type Driver } from "../driver.ts";

export const sqlite: Driver = {
  name: "sqlite",
  server: null,
  specifier: "@sayiir/persistence-sqlite",
  className: "SqliteBackend",
  async place({ storage, fresh }) {
    const path = storage ?? join(await mkdtemp(join(tmpdir(), `${fresh}-`)), "store.db");
    return { backend: "sqlite", url: null, storage: path };
  },
  options(config, client) {
    return {
      path: config.storage,
      maxPayloadBytes: client.maxPayloadBytes,
      ...(client.timeoutMs === undefined ? {} : { busyTimeoutMs: client.timeoutMs }),
    };
  },
  async corrupt(config, id) {
    const { DatabaseSync } = await import("node:sqlite");
    const raw = new DatabaseSync(config.storage);
    try {
      raw.exec("PRAGMA busy_timeout = 5000");
      raw.prepare(`UPDATE "sayiir_snapshots" SET header = ? WHERE instance_id = ?`).run(CORRUPT_HEADER, id);
    } finally {
      raw.close();
    }
  },
  async drop(config) {
    // Only fresh storages are dropped: their directory is the registry's own temporary one.
    await rm(dirname(config.storage), { recursive: true, force: true });
  },
};
