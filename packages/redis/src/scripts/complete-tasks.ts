import { L } from "../layout.js";
import { PRELUDE } from "./lua.js";

/** completeTasks: per completion, the fenced result write and the release of its claim. */
export const COMPLETE_TASKS = `--[[ completeTasks
  KEYS[1] the ready set of the shard of the first completion (routing only)
  ARGV[1] "{P:"   ARGV[2] request id (hex, one per call)
  ARGV[3] a JSON array of strings, 4 per completion (shard, instance id, taskId, token)
  ARGV[4..] the outputs, in the same order (bytes)
  Per completion, in order, the fenced saveTaskResult (result, lastCompletedTaskId, updatedAt =
  max(old, now), index) and the release of that claim: it becomes a tombstone
  "token|request id". A refused completion writes nothing. Per completion 2 commands on the
  instance hash (one read, one write); per shard 2 (its finished tasks leave both index sets at
  once; those of one queue's ready set too). Repeat-safe per request id: run a second time (its first reply lost, the command sent
  again), a completion whose claim is gone but whose tombstone is this call's own answers OK
  again, not FENCE_REJECTED.
  Returns one digit per completion: OK, SNAPSHOT_NOT_FOUND, FENCE_REJECTED (unless the live
  claim on the task carries that token) or RESULTS_FINAL, checked in that order.
]]
${PRELUDE}
local pre, req = ARGV[1], ARGV[2]
local items = cjson.decode(ARGV[3])
local now_ms = clock()
local out, gone = {}, {}
-- Ids to take out of a set (ready sets of queues, lease sets), by key.
local function drop(k, id)
  local ids = gone[k]
  if ids == nil then
    ids = {}
    gone[k] = ids
  end
  ids[#ids + 1] = id
end
for k = 1, #items / 4 do
  local j = 4 * k - 3
  local s, id, task, tok = items[j], items[j + 1], items[j + 2], items[j + 3]
  local key = pre .. s .. ${L.tagEnd} .. ${L.instance} .. id
  local cfield = ${L.claim} .. task
  local m = call('HMGET', key, ${L.finished}, ${L.updatedAt}, ${L.positionTaskId}, cfield, ${L.queue})
  local code = item_fence(m[1], m[4], tok, req, now_ms)
  if code == 'again' then
    code = OK
  elseif code == OK then
    local tomb = tok .. '|' .. req
    local u = tonumber(m[2])
    if now_ms > u then u = now_ms end
    call('HSET', key, ${L.result} .. task, ARGV[3 + k], ${L.lastCompletedTaskId}, task, ${L.updatedAt}, fmt(u), cfield, tomb)
    if m[3] == task then
      -- Its position task has a result now: the instance is in neither index set.
      local base = pre .. s .. ${L.tagEnd}
      drop(base .. ${L.leased}, id)
      drop(ready_of(base, m[5]), id)
    else
      reindex(pre .. s .. ${L.tagEnd}, key, id, now_ms)
    end
  end
  out[k] = code
end
for k, ids in pairs(gone) do call_chunked('ZREM', k, ids) end
return table.concat(out)
`;
