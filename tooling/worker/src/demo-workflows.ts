import { setTimeout as delay } from "node:timers/promises";
import {
  defineWorkflow,
  fanOut,
  step,
  type TaskContext,
  type TaskFn,
  type WorkflowDefinition,
  waitForEvent,
} from "./definition.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();
export const text = (bytes: Uint8Array): string => decoder.decode(bytes);
export const bytes = (value: string): Uint8Array => encoder.encode(value);

export interface DemoWorkflowOptions {
  /** Simulated work per task, in ms: a random duration in [min, max]. */
  workMs?: [number, number];
  /** Simulated work per task of the slow control workflow (the one the demo cancels or pauses). Default [600, 900]. */
  slowWorkMs?: [number, number];
  /** How long the approval workflow waits for its approval. Default 10 minutes. */
  approvalTimeoutMs?: number;
  /** How long the expiring approval workflow waits. Default 2 s. */
  expiringTimeoutMs?: number;
}

export interface DemoWorkflows {
  /** parse -> enrich -> score -> format */
  pipeline: WorkflowDefinition;
  /** split -> fan-out of 4 branches (child instances) -> join -> report */
  fanout: WorkflowDefinition;
  /** request -> wait for "approval" (long timeout) -> ship: the output says which approval it got */
  approval: WorkflowDefinition;
  /** the approval workflow with a short timeout: without an approval it runs its timeout path */
  expiring: WorkflowDefinition;
  /** receive -> check -> pack -> label -> dispatch, slow steps: the workflow the demo cancels or pauses */
  control: WorkflowDefinition;
}

/**
 * The demo's workflows. Every task is deterministic (its output depends on its input only, and
 * after a wait on the event's payload), so `evaluate(definition, input, events)` gives the output
 * the fleet must produce.
 */
export function demoWorkflows(options: DemoWorkflowOptions = {}): DemoWorkflows {
  const worker = (range: [number, number]) => async (context: TaskContext) => {
    const [min, max] = range;
    if (max > 0) await delay(min + Math.random() * (max - min), undefined, { signal: context.signal });
  };
  const work = worker(options.workMs ?? [5, 25]);
  const wrapWith =
    (name: string, wait: (context: TaskContext) => Promise<void>): TaskFn =>
    async (input, context) => {
      await wait(context);
      return bytes(`${name}(${text(input)})`);
    };
  const wrap = (name: string) => wrapWith(name, work);
  const pipeline = defineWorkflow("pipeline-v1", [
    step("parse", wrap("parse")),
    step("enrich", wrap("enrich")),
    step("score", wrap("score")),
    step("format", wrap("format")),
  ]);
  const fanout = defineWorkflow("fanout-v1", [
    step("split", wrap("split")),
    fanOut(
      "fan",
      ["north", "south", "east", "west"].map((region) => wrap(region)),
      async (outputs, context) => {
        await work(context);
        return bytes(`join[${outputs.map(text).join(",")}]`);
      },
    ),
    step("report", wrap("report")),
  ]);
  const approvalStages = (timeoutMs: number) => [
    step("request", wrap("request")),
    waitForEvent(
      "decide",
      "approval",
      {
        timeoutMs,
        onTimeout: wrap("timeout"),
      },
      async (payload, context) => {
        await work(context);
        return bytes(`approved[${text(payload)}](${text(context.stageInput ?? new Uint8Array())})`);
      },
    ),
    step("ship", wrap("ship")),
  ];
  const approval = defineWorkflow("approval-v1", approvalStages(options.approvalTimeoutMs ?? 600_000));
  const expiring = defineWorkflow("approval-expiring-v1", approvalStages(options.expiringTimeoutMs ?? 2_000));
  const slow = worker(options.slowWorkMs ?? [600, 900]);
  const control = defineWorkflow(
    "control-v1",
    ["receive", "check", "pack", "label", "dispatch"].map((name) => step(name, wrapWith(name, slow))),
  );
  return { pipeline, fanout, approval, expiring, control };
}
