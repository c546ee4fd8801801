import type { KeyLayout } from "./layout.js";
import type { ScriptArg, ScriptName } from "./scripts/index.js";

/**
 * What the modules get from the backend (discovery.ts and completion.ts, which fan out over
 * shards; snapshots.ts, control.ts and events.ts, which call instance scripts): the store's
 * layout, whether one script may cover every shard, and the script caller.
 */
export interface ShardContext {
  readonly layout: KeyLayout;
  /** One script may cover every shard: a standalone server (no slot rule) or a single shard. */
  readonly oneScript: boolean;
  /** Every shard number as a script argument. */
  readonly shardArgs: readonly string[];
  /** How long a request record (claim-next, sendEvent) stays, in ms: longer than any wait for its reply. */
  readonly recordTtlMs: string;
  /** Priority ageing (BaseBackend's agingMs): saveSnapshot turns a priority into a ready-set offset with it. */
  readonly agingMs: number;
  /** Calls one script for `operation`, bounded by the operation timeout. */
  call(name: ScriptName, operation: string, args: ScriptArg[], buffers?: boolean): Promise<unknown>;
}
