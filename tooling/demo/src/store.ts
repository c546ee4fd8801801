/**
 * How the demo uses the backend registry (@sayiir/backends): the store of a run is the storage
 * named by --namespace on a server backend (key prefix / schema / collection prefix / table) or
 * the SQLite file. Adapters are imported lazily by the registry, so the default SQLite demo never
 * loads a database driver it does not use.
 */
import {
  BACKEND_NAMES,
  type BackendName,
  createRegistry,
  SERVER_KINDS,
  type ServerKind,
  type ServerUrls,
  urlsFromEnv,
} from "@sayiir/backends";

export const BACKENDS = createRegistry({
  prefix: "demo",
  database: "sayiir_demo",
  // NORMAL: a commit survives the crash of a process (what the demo shows); FULL adds power-loss safety.
  tune: (name) => (name === "sqlite" ? { synchronous: "NORMAL" } : undefined),
});

/** --backend: sqlite first, the default. */
export const DEMO_BACKENDS: readonly BackendName[] = [
  "sqlite",
  ...BACKEND_NAMES.filter((name) => name !== "sqlite"),
];

/** Without --url: the variables the test tooling honours, else the usual local ports. */
const LOCAL_URLS: Record<ServerKind, string> = {
  redis: "redis://127.0.0.1:6379",
  postgres: "postgres://postgres@127.0.0.1:5432/postgres",
  mongodb: "mongodb://127.0.0.1:27017",
  dynamodb: "http://127.0.0.1:8000",
};

/** The server of `name`: --url, else its SAYIIR_TEST_* variable, else the local default (none for memory/SQLite). */
export function serverUrls(name: BackendName, url: string | undefined): ServerUrls {
  const kind = SERVER_KINDS[name];
  if (kind === null) return {};
  return { [kind]: url ?? urlsFromEnv()[kind] ?? LOCAL_URLS[kind] };
}

/** The storage of a run: the SQLite file, else the namespace as an identifier every backend accepts. */
export function storageOf(name: BackendName, sqliteFile: string, namespace: string): string {
  return name === "sqlite" ? sqliteFile : namespace.replace(/[^A-Za-z0-9_]/g, "_");
}
