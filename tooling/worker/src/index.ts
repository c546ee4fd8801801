export {
  type CompiledWorkflow,
  childInstanceId,
  compileWorkflow,
  defineWorkflow,
  evaluate,
  type FanOutStage,
  fanOut,
  firstTaskId,
  type JoinFn,
  parseChildId,
  type Stage,
  type StepStage,
  step,
  type TaskAction,
  type TaskContext,
  type TaskFn,
  taskCount,
  taskIds,
  type WorkflowDefinition,
} from "./definition.ts";
export { bytes, type DemoWorkflowOptions, demoWorkflows, text } from "./demo-workflows.ts";
export {
  countTakeovers,
  type EndToEndOptions,
  type EndToEndReport,
  runEndToEnd,
  startWorkflow,
} from "./end-to-end.ts";
export {
  type LostDuring,
  runWorker,
  type WorkerEvent,
  type WorkerOptions,
  type WorkerStats,
} from "./worker.ts";
