// A dedicated throw-away PostgreSQL for the restart test (killing the shared server would break
// the other test files running at the same time). initdb + postgres as an unprivileged user.
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { chmodSync, chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { freePort } from "./redis-server.ts";

/** Debian's (or any /usr/lib/postgresql/<v>/bin) server binaries, newest first. */
export function postgresBinDir(): string | undefined {
  const root = "/usr/lib/postgresql";
  if (!existsSync(root)) return undefined;
  const versions = readdirSync(root)
    .filter((v) => existsSync(join(root, v, "bin", "postgres")))
    .sort((a, b) => Number(b) - Number(a));
  return versions[0] === undefined ? undefined : join(root, versions[0], "bin");
}

function nobody(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const uid = Number(execFileSync("id", ["-u", "nobody"]).toString().trim());
  const gid = Number(execFileSync("id", ["-g", "nobody"]).toString().trim());
  return { uid, gid };
}

export class LocalPostgres {
  readonly port: number;
  readonly dir: string;
  readonly bin: string;
  readonly user: { uid: number; gid: number } | undefined;
  #child: ChildProcess | undefined;
  /** TLS settings of the readiness probe, once the server only accepts TLS. */
  probeSsl: pg.ClientConfig["ssl"] = undefined;

  private constructor(
    bin: string,
    dir: string,
    port: number,
    user: { uid: number; gid: number } | undefined,
  ) {
    this.bin = bin;
    this.dir = dir;
    this.port = port;
    this.user = user;
  }

  get url(): string {
    return `postgres://sayiir@127.0.0.1:${this.port}/postgres`;
  }

  static async start(): Promise<LocalPostgres> {
    const bin = postgresBinDir();
    if (bin === undefined) throw new Error("no PostgreSQL server binaries under /usr/lib/postgresql");
    const user = nobody();
    const dir = mkdtempSync(join(tmpdir(), "sayiir-rel-pg-"));
    chmodSync(dir, 0o700);
    if (user) chownSync(dir, user.uid, user.gid);
    execFileSync(
      join(bin, "initdb"),
      ["-D", join(dir, "data"), "-U", "sayiir", "-A", "trust", "-E", "UTF8", "--locale=C", "-N"],
      { stdio: "ignore", ...(user ?? {}), env: { ...process.env, LC_ALL: "C" } },
    );
    const server = new LocalPostgres(bin, dir, await freePort(), user);
    await server.spawn();
    return server;
  }

  async spawn(): Promise<void> {
    this.#child = spawn(
      join(this.bin, "postgres"),
      [
        "-D",
        join(this.dir, "data"),
        "-p",
        String(this.port),
        "-c",
        "listen_addresses=127.0.0.1",
        "-c",
        `unix_socket_directories=${this.dir}`,
        "-c",
        "fsync=off",
        "-c",
        "full_page_writes=off",
      ],
      { stdio: "ignore", detached: true, ...(this.user ?? {}), env: { ...process.env, LC_ALL: "C" } },
    );
    const deadline = Date.now() + 30_000;
    for (;;) {
      const client = new pg.Client({
        connectionString: this.url,
        connectionTimeoutMillis: 1000,
        ssl: this.probeSsl,
      });
      client.on("error", () => {});
      try {
        await client.connect();
        await client.query("SELECT 1");
        await client.end();
        return;
      } catch {
        await client.end().catch(() => {});
        if (Date.now() > deadline) throw new Error("postgres did not start within 30 s");
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  /** SIGKILL the postmaster and its backends (its process group): a crash, not a shutdown. */
  async kill(): Promise<void> {
    const child = this.#child;
    if (child === undefined || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    try {
      process.kill(-child.pid!, "SIGKILL");
    } catch {
      child.kill("SIGKILL");
    }
    await exited;
    // The backends die with the group; give the kernel a moment to release the port.
    await new Promise((r) => setTimeout(r, 200));
  }

  async stop(): Promise<void> {
    await this.kill();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
