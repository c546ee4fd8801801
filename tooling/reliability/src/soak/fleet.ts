// The soak's worker processes, one per slot, and the chaos done to them: a random one SIGKILLed
// and restarted, or frozen (SIGSTOP) past its lease and resumed (SIGCONT) as a stale worker whose
// writes must be fenced out.
import { type ChildProcess, fork } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { queuesOfSlot } from "./workload.ts";

const WORKER = join(dirname(fileURLToPath(import.meta.url)), "..", "soak-worker.ts");

export async function killAndWait(child: ChildProcess, signal: NodeJS.Signals = "SIGKILL"): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  await new Promise<void>((resolve) => {
    child.once("exit", () => resolve());
    child.kill(signal);
  });
}

export class Fleet {
  readonly children = new Map<number, ChildProcess>();
  readonly paused = new Set<ChildProcess>();
  kills = 0;
  pauses = 0;
  #generation = 0;
  readonly #target: string;
  readonly #storage: string;
  readonly #logDir: string;
  readonly #env: NodeJS.ProcessEnv;
  readonly #leaseMs: number;
  readonly #workers: number;

  constructor(options: {
    target: string;
    storage: string;
    logDir: string;
    env: NodeJS.ProcessEnv;
    leaseMs: number;
    workers: number;
  }) {
    this.#target = options.target;
    this.#storage = options.storage;
    this.#logDir = options.logDir;
    this.#env = options.env;
    this.#leaseMs = options.leaseMs;
    this.#workers = options.workers;
  }

  /** Starts every slot's worker. */
  startAll(): void {
    for (let slot = 0; slot < this.#workers; slot++) this.start(slot);
  }

  /** Starts a worker process in `slot` (replacing whatever was there); its id names its queues. */
  start(slot: number): void {
    const queues = queuesOfSlot(slot, this.#workers);
    const workerId = `w${slot}-g${this.#generation++}-${queues.join("+")}`;
    const child = fork(
      WORKER,
      [this.#target, this.#storage, workerId, join(this.#logDir, `${workerId}.log`), queues.join(",")],
      { env: this.#env, stdio: ["ignore", "ignore", "inherit", "ipc"] },
    );
    this.children.set(slot, child);
  }

  /** Freezes a random worker past its lease (then resumes it), or kills and restarts it. */
  async strike(): Promise<void> {
    const slot = Math.floor(Math.random() * this.#workers);
    const victim = this.children.get(slot)!;
    // The first strike always kills (a short soak must see one); then 30% are freezes.
    if (this.kills > 0 && Math.random() < 0.3 && !this.paused.has(victim)) {
      // Frozen past its lease: its claims are taken over; when it wakes, its writes must be refused.
      this.paused.add(victim);
      this.pauses++;
      victim.kill("SIGSTOP");
      setTimeout(
        () => {
          this.paused.delete(victim);
          if (victim.exitCode === null && victim.signalCode === null) victim.kill("SIGCONT");
        },
        this.#leaseMs * (1.5 + Math.random()),
      );
      return;
    }
    if (this.paused.has(victim)) victim.kill("SIGCONT");
    await killAndWait(victim);
    this.kills++;
    this.start(slot);
  }

  async killAll(): Promise<void> {
    await Promise.all([...this.children.values()].map((c) => killAndWait(c, "SIGKILL")));
  }
}
