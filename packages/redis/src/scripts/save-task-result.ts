import { L } from "../layout.js";
import { PRELUDE } from "./lua.js";

/** saveTaskResult: one output added, fenced. */
export const SAVE_TASK_RESULT = `--[[ saveTaskResult
  KEYS[1] the instance hash   KEYS[2] the shard's ready set   KEYS[3] its lease set
  ARGV[1] instance id   ARGV[2] task id   ARGV[3] output
  ARGV[4] fence task id   ARGV[5] fence token ('' = no fence)
  Writes the output, lastCompletedTaskId = task id, updatedAt = max(stored, now); re-indexes.
  A paused workflow takes results (it is not finished); a cancelled one refuses them.
  Returns OK, SNAPSHOT_NOT_FOUND, FENCE_REJECTED or RESULTS_FINAL, checked in that order.
]]
${PRELUDE}
local key = KEYS[1]
local m = call('HMGET', key, ${L.finished}, ${L.updatedAt})
if not m[1] then return SNAPSHOT_NOT_FOUND end
local now_ms = clock()
if not fence_ok(key, ARGV[4], ARGV[5], now_ms) then return FENCE_REJECTED end
if m[1] == '1' then return RESULTS_FINAL end
local u = tonumber(m[2])
if now_ms > u then u = now_ms end
call('HSET', key, ${L.result} .. ARGV[2], ARGV[3], ${L.lastCompletedTaskId}, ARGV[2], ${L.updatedAt}, fmt(u))
reindex(base_of(key, ARGV[1]), key, ARGV[1], now_ms)
return OK
`;
