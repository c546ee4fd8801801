// Scenario 5's consumers as one handle, whether they run in forked worker processes
// (wakeups-worker.ts) or, for a store that lives in this process (memory), here.
import { type ChildProcess, fork } from "node:child_process";
import { fileURLToPath } from "node:url";
import type { PersistentBackend } from "@sayiir/persistence-core";
import { startSayiirDispatchers, type WakeClaim } from "./wakeups-loop.ts";
import type { WakeChildMessage, WakeJob, WakeParentMessage } from "./wakeups-worker.ts";

export interface Consumers {
  /** Tasks got so far, and the requests the consumers' processes sent (null: not counted). */
  count(): Promise<{ claims: number; requests: number | null }>;
  /** Stops every consumer; what they got and the errors they counted. */
  stop(): Promise<{ claims: WakeClaim[]; errors: Record<string, number> }>;
}

const SCRIPT = fileURLToPath(new URL("./wakeups-worker.ts", import.meta.url));
const START_MS = 60_000;

type Reply<T extends WakeChildMessage["type"]> = Extract<WakeChildMessage, { type: T }>;

/** One forked worker process and its replies, awaited by type (in order). */
class Child {
  readonly #proc: ChildProcess;
  readonly #waiting = new Map<
    string,
    Array<{ resolve: (m: WakeChildMessage) => void; reject: (e: Error) => void }>
  >();
  #failure: Error | undefined;

  constructor(job: WakeJob) {
    this.#proc = fork(SCRIPT, [], {
      serialization: "advanced",
      stdio: ["ignore", "inherit", "inherit", "ipc"],
      execArgv: ["--disable-warning=ExperimentalWarning"],
    });
    this.#proc.on("message", (m: WakeChildMessage) => {
      if (m.type === "error") this.#fail(new Error(`wake-up worker ${this.#proc.pid}: ${m.message}`));
      else this.#waiting.get(m.type)?.shift()?.resolve(m);
    });
    this.#proc.on("exit", (code, signal) =>
      this.#fail(new Error(`wake-up worker ${this.#proc.pid} exited (${signal ?? code})`)),
    );
    this.#proc.send({ type: "init", job } satisfies WakeParentMessage);
  }

  #fail(error: Error): void {
    this.#failure ??= error;
    for (const list of this.#waiting.values()) for (const w of list.splice(0)) w.reject(error);
  }

  expect<T extends WakeChildMessage["type"]>(type: T, ms = START_MS): Promise<Reply<T>> {
    return new Promise<Reply<T>>((resolve, reject) => {
      if (this.#failure) return reject(this.#failure);
      const timer = setTimeout(
        () => reject(new Error(`no "${type}" from worker ${this.#proc.pid} in ${ms} ms`)),
        ms,
      );
      const list = this.#waiting.get(type) ?? [];
      list.push({
        resolve: (m) => {
          clearTimeout(timer);
          resolve(m as Reply<T>);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      this.#waiting.set(type, list);
    });
  }

  ask<T extends WakeChildMessage["type"]>(message: WakeParentMessage, reply: T): Promise<Reply<T>> {
    const answer = this.expect(reply);
    this.#proc.send(message);
    return answer;
  }

  kill(): void {
    if (this.#proc.exitCode === null && this.#proc.signalCode === null) this.#proc.kill("SIGKILL");
  }
}

/** Forks one process per job, waits until each is connected, starts them all, waits until started. */
export async function forkConsumers(jobs: WakeJob[]): Promise<Consumers> {
  const children = jobs.map((job) => new Child(job));
  try {
    await Promise.all(children.map((c) => c.expect("ready")));
    await Promise.all(children.map((c) => c.ask({ type: "go" }, "started")));
  } catch (error) {
    for (const c of children) c.kill();
    throw error;
  }
  return {
    async count() {
      const replies = await Promise.all(children.map((c) => c.ask({ type: "count" }, "count")));
      const requests = replies.map((r) => r.requests);
      return {
        claims: replies.reduce((a, r) => a + r.claims, 0),
        requests: requests.every((r) => r !== null) ? requests.reduce((a, r) => a + r, 0) : null,
      };
    },
    async stop() {
      try {
        const done = await Promise.all(children.map((c) => c.ask({ type: "stop" }, "done")));
        const errors: Record<string, number> = {};
        for (const d of done) for (const [k, v] of Object.entries(d.errors)) errors[k] = (errors[k] ?? 0) + v;
        return { claims: done.flatMap((d) => d.claims), errors };
      } finally {
        setTimeout(() => {
          for (const c of children) c.kill();
        }, 2000).unref();
      }
    },
  };
}

/**
 * Every dispatcher in this process on one client (a store that cannot be shared across processes):
 * one per entry of `slots`, each with that many slots.
 */
export function localConsumers(backend: PersistentBackend, slots: readonly number[]): Consumers {
  const loop = startSayiirDispatchers(backend, slots);
  return {
    count: async () => ({ claims: loop.claims.length, requests: null }),
    async stop() {
      await loop.stop();
      return { claims: loop.claims, errors: loop.errors };
    },
  };
}
