// Starts the soak's workflows while it runs, a mix of every kind, and remembers what each must end
// with (see workload.ts). The feeder is not under test: a busy store (SQLite's lock held by a frozen
// worker) is retried, and a start whose outcome is unknown is checked before it is retried.
import type { PersistentBackend } from "@sayiir/persistence-core";
import { bytes, startWorkflow } from "@sayiir/worker";
import { type SoakWorkflows, soakWorkflows, type WorkflowKind } from "./workload.ts";

/** One round of starts: what the soak runs, in the order it starts them. */
const ROUND: WorkflowKind[] = [
  "pipeline",
  "fanout",
  "approval",
  "control",
  "retry",
  "nap",
  "routed",
  "expiring",
  "pipeline",
  "urgent",
  "control",
  "fanout",
];

export interface Started {
  kind: WorkflowKind;
  input: Uint8Array;
  /** When the start returned (local clock). */
  at: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class Feeder {
  readonly started = new Map<string, Started>();
  retries = 0;
  #next = 0;
  readonly #admin: PersistentBackend;
  /** The definitions to start (no simulated work: only their hashes and stages matter here). */
  readonly #workflows: SoakWorkflows = soakWorkflows([0, 0], [0, 0]);
  readonly #onStart: (id: string, started: Started) => Promise<void>;

  constructor(admin: PersistentBackend, onStart: (id: string, started: Started) => Promise<void>) {
    this.#admin = admin;
    this.#onStart = onStart;
  }

  async add(n: number): Promise<void> {
    for (let k = 0; k < n; k++) {
      const kind = ROUND[this.#next % ROUND.length]!;
      const id = `soak/wf-${this.#next}`;
      const input = bytes(`order-${this.#next}`);
      this.#next++;
      await this.#start(kind, id, input);
      const started = { kind, input, at: Date.now() };
      this.started.set(id, started);
      await this.#onStart(id, started);
    }
  }

  async #start(kind: WorkflowKind, id: string, input: Uint8Array): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      try {
        await startWorkflow(this.#admin, this.#workflows[kind], id, input);
        return;
      } catch (error) {
        if (attempt >= 20 || (error as { code?: string }).code !== "BACKEND") throw error;
        this.retries++;
        await sleep(100);
        // The start may have landed before its answer was lost: then it is not written twice.
        if ((await this.#admin.loadSnapshot(id).catch(() => null)) !== null) return;
      }
    }
  }
}
