// The soak's workflows, shared by the parent (which starts them and predicts their outputs) and
// the worker processes (which run them): the demo's pipeline and fan-out, plus one workflow per
// newer operation: two waits on one event name (events consumed once and in order, sent before or
// after the wait), a wait that times out, a step that fails and is retried with backoff, a durable
// sleep (runAt), a step in a second queue, an urgent workflow at priority 1, and a slow workflow
// that the controller cancels or pauses from outside.
import { setTimeout as delay } from "node:timers/promises";
import {
  bytes,
  defineWorkflow,
  demoWorkflows,
  sleep,
  step,
  type TaskFn,
  text,
  type WorkflowDefinition,
  waitForEvent,
} from "@sayiir/worker";

/** The second queue: served by the workers of the last two slots only (see queuesOfSlot). */
export const SECOND_QUEUE = "gpu";
/** The event both waits of the approval workflow wait for. */
export const EVENT_NAME = "approval";
/** Runs of the flaky step that fail (a takeover after a kill counts as a run too). */
export const FAILING_RUNS = 2;
/** The retry policy of the flaky step: enough runs for FAILING_RUNS failures plus takeovers. */
export const RETRY = { attempts: 8, backoffMs: 150, maxBackoffMs: 600 };
/** The durable sleep of the nap workflow (ms). */
export const NAP_MS = 800;
/** The wait of the expiring workflow: no event is ever sent, it times out. */
export const EXPIRING_TIMEOUT_MS = 700;
/** The waits of the approval workflow: long enough that they never time out in a soak. */
const APPROVAL_TIMEOUT_MS = 600_000;

/**
 * The pace a backend keeps up with on this 2-core machine: workflows started per second and the
 * lease. DynamoDB Local answers slowly under 8 workers: with a 1 s lease its heartbeats come too
 * late and most claims are taken over (50 takeovers for one kill in 9 s), which tests little but
 * the drain's patience; at half the rate with a 3 s lease it soaks like the others.
 */
export function paceOf(backend: string): { workflowsPerSecond: number; leaseMs: number } {
  if (backend === "dynamodb") return { workflowsPerSecond: 3, leaseMs: 3000 };
  return { workflowsPerSecond: 6, leaseMs: 1000 };
}

export interface SoakWorkflows {
  pipeline: WorkflowDefinition;
  fanout: WorkflowDefinition;
  /** request -> wait "approval" -> wait "approval" again -> ship: the two events, in order. */
  approval: WorkflowDefinition;
  /** request -> wait "approval" (times out: no event is sent) -> ship */
  expiring: WorkflowDefinition;
  /** charge (fails on its first FAILING_RUNS runs, retried with backoff) -> receipt */
  retry: WorkflowDefinition;
  /** before -> durable sleep NAP_MS -> after */
  nap: WorkflowDefinition;
  /** prepare -> render (second queue) -> deliver */
  routed: WorkflowDefinition;
  /** triage -> fix, every task at priority 1 */
  urgent: WorkflowDefinition;
  /** five slow steps: the workflow the controller cancels or pauses */
  control: WorkflowDefinition;
}

/** The soak's workflows; every task is deterministic, so its output is predicted (expectedOutput). */
export function soakWorkflows(
  workMs: [number, number],
  slowMs: [number, number] = [150, 350],
): SoakWorkflows {
  const { pipeline, fanout } = demoWorkflows({ workMs });
  const pause =
    ([min, max]: [number, number]) =>
    (signal: AbortSignal) =>
      max > 0 ? delay(min + Math.random() * (max - min), undefined, { signal }) : Promise.resolve();
  const work = pause(workMs);
  const slow = pause(slowMs);
  const wrap =
    (tag: string, wait = work): TaskFn =>
    async (input, context) => {
      await wait(context.signal);
      return bytes(`${tag}(${text(input)})`);
    };
  const decided =
    (tag: string): TaskFn =>
    async (payload, context) => {
      await work(context.signal);
      return bytes(`${tag}[${text(payload)}](${text(context.stageInput ?? new Uint8Array())})`);
    };
  const charge: TaskFn = async (input, context) => {
    if (context.attempt <= FAILING_RUNS) throw new Error(`declined (run ${context.attempt})`);
    return wrap("charged")(input, context);
  };
  return {
    pipeline,
    fanout,
    approval: defineWorkflow("soak-approval-v1", [
      step("request", wrap("request")),
      waitForEvent("approve", EVENT_NAME, { timeoutMs: APPROVAL_TIMEOUT_MS }, decided("approved")),
      waitForEvent("countersign", EVENT_NAME, { timeoutMs: APPROVAL_TIMEOUT_MS }, decided("signed")),
      step("ship", wrap("ship")),
    ]),
    expiring: defineWorkflow("soak-expiring-v1", [
      step("request", wrap("request")),
      waitForEvent(
        "approve",
        EVENT_NAME,
        { timeoutMs: EXPIRING_TIMEOUT_MS, onTimeout: wrap("expired") },
        decided("approved"),
      ),
      step("ship", wrap("ship")),
    ]),
    retry: defineWorkflow("soak-retry-v1", [
      step("charge", charge, { retry: RETRY }),
      step("receipt", wrap("receipt")),
    ]),
    nap: defineWorkflow("soak-nap-v1", [
      step("before", wrap("before")),
      sleep("nap", NAP_MS),
      step("after", wrap("after")),
    ]),
    routed: defineWorkflow("soak-routed-v1", [
      step("prepare", wrap("prepare")),
      step("render", wrap("render"), { queue: SECOND_QUEUE }),
      step("deliver", wrap("deliver")),
    ]),
    urgent: defineWorkflow("soak-urgent-v1", [step("triage", wrap("triage")), step("fix", wrap("fix"))], {
      priority: 1,
    }),
    control: defineWorkflow(
      "soak-control-v1",
      ["receive", "check", "pack", "label", "dispatch"].map((name) => step(name, wrap(name, slow))),
    ),
  };
}

export type WorkflowKind = keyof SoakWorkflows;

/** The two payloads the approval workflow `id` gets, in the order they are sent. */
export function approvalPayloads(id: string): [Uint8Array, Uint8Array] {
  return [bytes(`first-of-${id}`), bytes(`second-of-${id}`)];
}

/**
 * The output a workflow of the soak must end with (evaluate() cannot say it for the approval
 * workflow: its two waits share one event name, and the first event sent goes to the first wait).
 */
export function expectedOutput(kind: WorkflowKind, id: string, input: Uint8Array): string {
  const x = text(input);
  switch (kind) {
    case "pipeline":
      return `format(score(enrich(parse(${x}))))`;
    case "fanout": {
      const split = `split(${x})`;
      const regions = ["north", "south", "east", "west"].map((r) => `${r}(${split})`);
      return `report(join[${regions.join(",")}])`;
    }
    case "approval": {
      const [first, second] = approvalPayloads(id).map(text);
      return `ship(signed[${second}](approved[${first}](request(${x}))))`;
    }
    case "expiring":
      return `ship(expired(request(${x})))`;
    case "retry":
      return `receipt(charged(${x}))`;
    case "nap":
      return `after(before(${x}))`;
    case "routed":
      return `deliver(render(prepare(${x})))`;
    case "urgent":
      return `fix(triage(${x}))`;
    case "control":
      return `dispatch(label(pack(check(receive(${x})))))`;
  }
}

/** The queues the worker in `slot` of `workers` serves: the last slot only the second queue, the one before both. */
export function queuesOfSlot(slot: number, workers: number): string[] {
  // Too few workers to set one aside: every one serves both.
  if (workers < 3) return ["default", SECOND_QUEUE];
  if (slot === workers - 1) return [SECOND_QUEUE];
  if (slot === workers - 2) return ["default", SECOND_QUEUE];
  return ["default"];
}

/** The queue of a task of a workflow kind. */
export function queueOfTask(kind: WorkflowKind, taskId: string): string {
  return kind === "routed" && taskId === "render" ? SECOND_QUEUE : "default";
}

/** The queues a worker serves, from its id (`w<slot>-g<n>-<queues joined by +>`). */
export function queuesOfWorker(workerId: string): string[] {
  return (workerId.split("-")[2] ?? "default").split("+");
}
