import { L } from "../layout.js";
import { PRELUDE } from "./lua.js";

/** failTasks: per failure, the fenced attempts write, the release of its claim and the re-index. */
export const FAIL_TASKS = `--[[ failTasks
  KEYS[1] the ready set of the shard of the first failure (routing only)
  ARGV[1] "{P:"   ARGV[2] request id (hex, one per call)
  ARGV[3] a JSON array of strings, 5 per failure (shard, instance id, taskId, token, retryAt
  ('' = null))   ARGV[4..] the error texts, in the same order
  Per failure, in order, one fenced step (checks as completeTasks): the task's attempts become
  count + 1, lastFailedAt = now, retryAt, the error; the claim becomes the tombstone
  "token|request id" (released); when the task is the one the position makes ready (AtTask's,
  or a wait's next), its due field becomes the later of retryAt and the position's runAt (field
  ${L.runAt}; 'h' when retryAt is null: held, in no index) and the instance is re-indexed: in its
  queue's timer set until then, then in its queue's ready set at that time + offset. The header and updatedAt stay. A refused failure writes nothing. Per
  failure 2 commands on the instance hash and the re-index. Repeat-safe per request id like
  completeTasks: a second run finds its own tombstone and answers OK without counting again.
  Returns one digit per failure: OK, SNAPSHOT_NOT_FOUND, FENCE_REJECTED (unless the live claim
  on the task carries that token) or RESULTS_FINAL, checked in that order.
]]
${PRELUDE}
local pre, req = ARGV[1], ARGV[2]
local items = cjson.decode(ARGV[3])
local now_ms = clock()
local out = {}
for k = 1, #items / 5 do
  local j = 5 * k - 4
  local s, id, task, tok, retry = items[j], items[j + 1], items[j + 2], items[j + 3], items[j + 4]
  local base = pre .. s .. ${L.tagEnd}
  local key = base .. ${L.instance} .. id
  local cfield, afield = ${L.claim} .. task, ${L.attempts} .. task
  local m = call('HMGET', key, ${L.finished}, ${L.positionTaskId}, ${L.awaitedTask}, cfield, afield, ${L.runAt})
  local code = item_fence(m[1], m[4], tok, req, now_ms)
  if code == 'again' then
    code = OK
  elseif code == OK then
    local tomb = tok .. '|' .. req
    local count = 1
    if m[5] then count = tonumber(string.match(m[5], '^(%d+)')) + 1 end
    local r = retry
    if r == '' then r = 'n' end
    local set = { afield, fmt(count) .. '|' .. fmt(now_ms) .. '|' .. r .. '|=' .. ARGV[3 + k], cfield, tomb }
    if m[2] == task or m[3] == task then
      set[#set + 1] = ${L.due}
      local due = retry
      if retry == '' then due = 'h'
      elseif m[6] and tonumber(m[6]) > tonumber(retry) then due = m[6] end
      set[#set + 1] = due
    end
    call('HSET', key, unpack(set))
    reindex(base, key, id, now_ms)
  end
  out[k] = code
end
return table.concat(out)
`;
