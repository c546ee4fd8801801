// A dedicated throw-away redis-server for tests that must change server settings (a password, TLS,
// a restart) without disturbing the shared server other test files use.
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer, connect as tcpConnect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const REDIS_SERVER_BIN = ["/usr/bin/redis-server", "/usr/local/bin/redis-server"].find((p) =>
  existsSync(p),
);

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

async function waitForPort(port: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const socket = tcpConnect({ host: "127.0.0.1", port }, () => {
        socket.destroy();
        resolve(true);
      });
      socket.once("error", () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline)
      throw new Error(`redis-server did not listen on ${port} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export class LocalRedis {
  readonly port: number;
  readonly dir: string;
  readonly args: string[];
  #child: ChildProcess | undefined;

  private constructor(port: number, dir: string, args: string[]) {
    this.port = port;
    this.dir = dir;
    this.args = args;
  }

  /** Starts redis-server on a free loopback port with extra arguments (e.g. ["--requirepass", "x"]). */
  static async start(extra: string[] = [], port?: number): Promise<LocalRedis> {
    if (REDIS_SERVER_BIN === undefined) throw new Error("no redis-server binary");
    const dir = await mkdtemp(join(tmpdir(), "sayiir-rel-redis-"));
    const p = port ?? (await freePort());
    const args = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir, ...extra];
    const server = new LocalRedis(p, dir, args);
    await server.spawn();
    return server;
  }

  async spawn(): Promise<void> {
    const portArgs = this.args.includes("--tls-port") ? [] : ["--port", String(this.port)];
    const child = spawn(REDIS_SERVER_BIN!, [...portArgs, ...this.args], { stdio: "ignore" });
    this.#child = child;
    await waitForPort(this.port, 10_000);
  }

  /** SIGKILL and wait for the exit. */
  async kill(): Promise<void> {
    const child = this.#child;
    if (child === undefined || child.exitCode !== null) return;
    await new Promise<void>((resolve) => {
      child.once("exit", () => resolve());
      child.kill("SIGKILL");
    });
  }

  async stop(): Promise<void> {
    await this.kill();
    await rm(this.dir, { recursive: true, force: true });
  }
}
