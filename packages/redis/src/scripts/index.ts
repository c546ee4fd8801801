import type { Cluster, Redis } from "ioredis";
import { callWithAcks, needsAcks, type ReplicaAcks } from "../replica-acks.js";
import { CANCEL_WORKFLOW } from "./cancel-workflow.js";
import { CLAIM_NEXT } from "./claim-next.js";
import { CLAIM_TASK } from "./claim-task.js";
import { COMPLETE_STEPS } from "./complete-steps.js";
import { COMPLETE_TASKS } from "./complete-tasks.js";
import { DELETE_SNAPSHOT } from "./delete-snapshot.js";
import { EXTEND_CLAIM } from "./extend-claim.js";
import { FAIL_TASKS } from "./fail-tasks.js";
import { INDEX_FINISHED } from "./index-finished.js";
import { LOAD_EVENTS } from "./load-events.js";
import { LOAD_HEADER } from "./load-header.js";
import { LOAD_SNAPSHOT } from "./load-snapshot.js";
import { LOAD_STEPS } from "./load-steps.js";
import { LOAD_TASK_CLAIMS } from "./load-task-claims.js";
import { LOAD_TASK_RESULT } from "./load-task-result.js";
import { PAUSE_WORKFLOW } from "./pause-workflow.js";
import { PEEK } from "./peek.js";
import { PROBE_WAKE_UP } from "./probe-wake-up.js";
import { PEEK_FINISHED, PURGE_FINISHED } from "./purge-finished.js";
import { RELEASE_CLAIM } from "./release-claim.js";
import { RESUME_WORKFLOW } from "./resume-workflow.js";
import { SAVE_SNAPSHOT } from "./save-snapshot.js";
import { SAVE_TASK_RESULT } from "./save-task-result.js";
import { SEND_EVENT } from "./send-event.js";
import { SHARD_INPUTS } from "./shard-inputs.js";
import { STORE_RECORD } from "./store-record.js";

export { Code, type CodeName, type CodeSubject, refusal } from "./codes.js";

/*
 * Every state change is one Lua script, loaded once and called by SHA (ioredis defineCommand
 * sends EVALSHA and falls back to EVAL on NOSCRIPT). Instance scripts get their keys in KEYS and
 * touch one shard, so one Cluster slot. Shard scripts (peek, claim-next, inputs, completion, steps) get
 * one key of the first shard they touch in KEYS (which routes them to the right node) and build
 * every other key from "{P:" .. shard .. "}:". On a cluster the backend sends them one shard at a
 * time; on a standalone server one call may cover several shards (there is no slot rule there).
 *
 * An instance is one hash (see layout.ts): the snapshot fields, its task outputs ("r:" .. task)
 * and its claims ("c:" .. task), so finishing a task writes one hash, and neither claiming nor
 * finishing creates a key. Its pending events are two keys of their own (payloads, order).
 * Re-indexing an instance (the PRELUDE's place) may also touch its queue's timer set and read
 * its event order: keys built from the shard's base inside Lua, in the same slot.
 *
 * The hot path (claim-next, completion) is written for few Redis commands per task: the Redis
 * thread shares the machine with the workers, and each redis.call costs about as much as a small
 * command from a client.
 */

/** Each script by the operation it serves: its key count and its Lua (which opens with its KEYS, ARGV and reply). */
export const SCRIPTS = {
  saveSnapshot: { numberOfKeys: 7, lua: SAVE_SNAPSHOT },
  saveTaskResult: { numberOfKeys: 3, lua: SAVE_TASK_RESULT },
  loadSnapshot: { numberOfKeys: 1, lua: LOAD_SNAPSHOT },
  deleteSnapshot: { numberOfKeys: 8, lua: DELETE_SNAPSHOT },
  claimTask: { numberOfKeys: 4, lua: CLAIM_TASK },
  releaseClaim: { numberOfKeys: 3, lua: RELEASE_CLAIM },
  extendClaim: { numberOfKeys: 3, lua: EXTEND_CLAIM },
  peek: { numberOfKeys: 1, lua: PEEK },
  probeWakeUp: { numberOfKeys: 1, lua: PROBE_WAKE_UP },
  claimNext: { numberOfKeys: 1, lua: CLAIM_NEXT },
  shardInputs: { numberOfKeys: 1, lua: SHARD_INPUTS },
  completeTasks: { numberOfKeys: 1, lua: COMPLETE_TASKS },
  loadSteps: { numberOfKeys: 1, lua: LOAD_STEPS },
  completeSteps: { numberOfKeys: 1, lua: COMPLETE_STEPS },
  failTasks: { numberOfKeys: 1, lua: FAIL_TASKS },
  storeRecord: { numberOfKeys: 1, lua: STORE_RECORD },
  loadHeader: { numberOfKeys: 1, lua: LOAD_HEADER },
  cancelWorkflow: { numberOfKeys: 6, lua: CANCEL_WORKFLOW },
  pauseWorkflow: { numberOfKeys: 4, lua: PAUSE_WORKFLOW },
  resumeWorkflow: { numberOfKeys: 5, lua: RESUME_WORKFLOW },
  sendEvent: { numberOfKeys: 7, lua: SEND_EVENT },
  loadEvents: { numberOfKeys: 3, lua: LOAD_EVENTS },
  loadTaskResult: { numberOfKeys: 1, lua: LOAD_TASK_RESULT },
  loadTaskClaims: { numberOfKeys: 1, lua: LOAD_TASK_CLAIMS },
  peekFinished: { numberOfKeys: 1, lua: PEEK_FINISHED },
  purgeFinished: { numberOfKeys: 1, lua: PURGE_FINISHED },
  indexFinished: { numberOfKeys: 1, lua: INDEX_FINISHED },
} as const;

export type ScriptName = keyof typeof SCRIPTS;

/** A script argument: KEYS first, then ARGV. */
export type ScriptArg = string | Buffer | Uint8Array | number;

/**
 * Testing only, not a stable API: the adapter's one fault-injection seam (option `faults`).
 * Every script call of the backend goes through `aroundScript`, so tests observe calls and
 * inject failures in one place instead of patching the client: `run` sends the call, and the
 * hook may skip it, fail before or after it, or count it.
 */
export interface FaultHooks {
  aroundScript?: (
    name: ScriptName,
    args: readonly ScriptArg[],
    run: () => Promise<unknown>,
  ) => Promise<unknown>;
}

/** ioredis command name of a script (prefixed, so it never shadows a client method). */
const commandName = (name: ScriptName): string => `sayiir${name[0]?.toUpperCase()}${name.slice(1)}`;

type Command = (...args: ScriptArg[]) => Promise<unknown>;

/** The scripts, defined on one client (defining one again replaces it; the SHA stays the same). */
export class Scripts {
  readonly #client: Record<string, Command>;
  readonly #redis: Redis | Cluster;
  readonly #faults: FaultHooks | undefined;
  readonly #acks: ReplicaAcks | undefined;

  constructor(client: Redis | Cluster, faults?: FaultHooks, acks?: ReplicaAcks) {
    for (const [name, script] of Object.entries(SCRIPTS)) {
      client.defineCommand(commandName(name as ScriptName), script);
    }
    this.#client = client as unknown as Record<string, Command>;
    this.#redis = client;
    this.#faults = faults;
    this.#acks = acks;
  }

  /** Calls one script (KEYS then ARGV). `buffers`: bulk strings come back as Buffers. */
  call(name: ScriptName, args: ScriptArg[], buffers = false): Promise<unknown> {
    const command = `${commandName(name)}${buffers ? "Buffer" : ""}`;
    const acks = this.#acks;
    // Option replicaAcks: a write script and its WAIT (see replica-acks.ts).
    const run =
      acks !== undefined && needsAcks(name)
        ? () => callWithAcks(this.#redis, command, name, args, acks)
        : () => (this.#client[command] as Command).call(this.#client, ...args);
    const around = this.#faults?.aroundScript;
    return around === undefined ? run() : around(name, args, run);
  }
}
