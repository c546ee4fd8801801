import { setTimeout as delay } from "node:timers/promises";
import {
  defineWorkflow,
  fanOut,
  step,
  type TaskContext,
  type TaskFn,
  type WorkflowDefinition,
} from "./definition.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();
export const text = (bytes: Uint8Array): string => decoder.decode(bytes);
export const bytes = (value: string): Uint8Array => encoder.encode(value);

export interface DemoWorkflowOptions {
  /** Simulated work per task, in ms: a random duration in [min, max]. */
  workMs?: [number, number];
}

/**
 * The demo's two workflows. Every task is deterministic (its output depends on its input only),
 * so `evaluate(definition, input)` gives the output the fleet must produce.
 *  - pipeline-v1: parse -> enrich -> score -> format
 *  - fanout-v1: split -> fan-out of 4 branches (run concurrently as child instances) -> join -> report
 */
export function demoWorkflows(options: DemoWorkflowOptions = {}): {
  pipeline: WorkflowDefinition;
  fanout: WorkflowDefinition;
} {
  const [min, max] = options.workMs ?? [5, 25];
  const work = async (context: TaskContext) => {
    if (max > 0) await delay(min + Math.random() * (max - min), undefined, { signal: context.signal });
  };
  const wrap =
    (name: string): TaskFn =>
    async (input, context) => {
      await work(context);
      return bytes(`${name}(${text(input)})`);
    };
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
  return { pipeline, fanout };
}
