/**
 * The live view: a progress bar per worker plus the total (cli-progress) on a terminal; plain
 * progress lines about once a second otherwise (CI logs, `pnpm demo | cat`).
 */
import cliProgress from "cli-progress";

export interface WorkerView {
  id: string;
  committed: number;
  inFlight: number;
  takeovers: number;
  status: string;
}

export interface ViewState {
  workers: WorkerView[];
  workflowsDone: number;
  workflows: number;
  tasksDone: number;
  tasksTotal: number;
  elapsedMs: number;
  /** The controller's status (cancel, pause, approvals), one line. */
  control?: string;
}

export interface View {
  update(state: ViewState): void;
  /** A line above the bars (or a plain line). */
  log(line: string): void;
  stop(): void;
}

export function createView(options: { tty: boolean; plainEveryMs?: number }): View {
  return options.tty ? new BarsView() : new PlainView(options.plainEveryMs ?? 1000);
}

const seconds = (ms: number) => `${(ms / 1000).toFixed(1)}s`;

class BarsView implements View {
  readonly #multibar = new cliProgress.MultiBar(
    {
      format: " {name} {bar} {value}/{total} {unit} {info}",
      barsize: 20,
      hideCursor: true,
      // Redraw every bar each frame: lines logged above the bars would otherwise leave stale rows.
      forceRedraw: true,
      clearOnComplete: false,
      stopOnComplete: false,
      autopadding: true,
      fps: 10,
      emptyOnZero: true,
    },
    cliProgress.Presets.shades_classic,
  );
  readonly #bars = new Map<string, cliProgress.SingleBar>();
  #total: cliProgress.SingleBar | undefined;
  #control: cliProgress.SingleBar | undefined;

  update(state: ViewState): void {
    const info = `${seconds(state.elapsedMs)}  tasks ${state.tasksDone}/${state.tasksTotal}`;
    if (this.#total === undefined) {
      this.#total = this.#multibar.create(state.workflows, 0, { name: "workflows", unit: "done", info });
    }
    this.#total.setTotal(state.workflows);
    this.#total.update(state.workflowsDone, { info });
    if (state.control !== undefined) {
      this.#control ??= this.#multibar.create(
        1,
        0,
        { name: "control  ", unit: "", info: "" },
        { format: " {name} {info}" },
      );
      this.#control.update(0, { name: "control  ", info: state.control });
    }
    // Each worker's bar: the tasks it committed, out of all the tasks (the bars add up to the total).
    const total = Math.max(1, state.tasksTotal);
    for (const worker of state.workers) {
      const payload = {
        name: worker.id.padEnd(9),
        unit: "tasks",
        info: `${worker.inFlight} held  ${worker.takeovers} taken over  ${worker.status}`,
      };
      let bar = this.#bars.get(worker.id);
      if (bar === undefined) {
        bar = this.#multibar.create(total, 0, payload);
        this.#bars.set(worker.id, bar);
      }
      bar.setTotal(total);
      bar.update(worker.committed, payload);
    }
  }

  log(line: string): void {
    this.#multibar.log(`${line}\n`);
  }

  stop(): void {
    this.#multibar.update();
    this.#multibar.stop();
  }
}

class PlainView implements View {
  #last = 0;
  readonly #everyMs: number;
  #state: ViewState | undefined;

  constructor(everyMs: number) {
    this.#everyMs = everyMs;
  }

  update(state: ViewState): void {
    this.#state = state;
    if (state.elapsedMs - this.#last < this.#everyMs) return;
    this.#last = state.elapsedMs;
    this.#print(state);
  }

  #print(state: ViewState): void {
    const workers = state.workers
      .map((w) => `${w.id}=${w.committed}${w.status === "running" ? "" : `(${w.status})`}`)
      .join(" ");
    console.log(
      `[${seconds(state.elapsedMs)}] workflows ${state.workflowsDone}/${state.workflows}, tasks ${state.tasksDone}/${state.tasksTotal} | ${workers}` +
        (state.control === undefined ? "" : ` | ${state.control}`),
    );
  }

  log(line: string): void {
    console.log(line);
  }

  stop(): void {
    if (this.#state !== undefined && this.#state.elapsedMs !== this.#last) this.#print(this.#state);
  }
}
