// The backend names every tool accepts, the server each one needs, and the accepted aliases.

/** Backend names: the adapters' kinds. */
export const BACKEND_NAMES = ["memory", "sqlite", "redis", "postgres", "mongo", "dynamodb"] as const;
export type BackendName = (typeof BACKEND_NAMES)[number];

/** Server kinds, as @sayiir/test-servers names them (and its SAYIIR_TEST_* variables). */
export type ServerKind = "redis" | "postgres" | "mongodb" | "dynamodb";

/** The server each backend needs (null: in-process or a local file). */
export const SERVER_KINDS: Readonly<Record<BackendName, ServerKind | null>> = {
  memory: null,
  sqlite: null,
  redis: "redis",
  postgres: "postgres",
  mongo: "mongodb",
  dynamodb: "dynamodb",
};

/** Other spellings the tools accepted before (the bench said "mongodb", the server kind). */
export const BACKEND_ALIASES: Readonly<Record<string, BackendName>> = { mongodb: "mongo" };

export function isBackendName(name: string): name is BackendName {
  return (BACKEND_NAMES as readonly string[]).includes(name);
}

/** The backend a name or alias means, or undefined. */
export function backendNamed(name: string): BackendName | undefined {
  return isBackendName(name) ? name : BACKEND_ALIASES[name];
}

/** Parses a backend name (or alias); throws a message listing what is accepted. */
export function parseBackendName(name: string): BackendName {
  const found = backendNamed(name);
  if (found === undefined) {
    const aliases = Object.entries(BACKEND_ALIASES).map(([alias, to]) => `${alias} for ${to}`);
    throw new Error(
      `unknown backend ${JSON.stringify(name)} (expected ${BACKEND_NAMES.join(", ")}; also ${aliases.join(", ")})`,
    );
  }
  return found;
}
