import { L } from "../layout.js";
import { PRELUDE } from "./lua.js";

/** completeTasks with `next` reads the state of its steps with this before it computes the new headers. */
export const LOAD_STEPS = `--[[ loadSteps (the read of completeTasks with next)
  KEYS[1] the ready set of the shard of the first item (routing only)
  ARGV[1] "{P:"
  ARGV[2] a JSON array of strings, 5 per item (shard, instance id, task id, the next task to ask
  about ('' = none), the name of the event to consume ('' = none))
  Per item, from the instance hash and its event order (never an output): the header (nil: no
  snapshot), the finished flag, updatedAt, lastCompletedTaskId ('' = none), the task's claim
  field ('' = none), whether the next task has a result ('1'/'0'), the sequence of the oldest
  pending event of that name ('' = none). Then Redis time in ms.
  Returns those 7 values per item, flat, then the time.
]]
${PRELUDE}
local pre = ARGV[1]
local items = cjson.decode(ARGV[2])
local out = {}
for k = 1, #items / 5 do
  local j = 5 * k - 5
  local s, id, task, nxt, name = items[j + 1], items[j + 2], items[j + 3], items[j + 4], items[j + 5]
  local base = pre .. s .. ${L.tagEnd}
  local key = base .. ${L.instance} .. id
  local v = call('HMGET', key, ${L.header}, ${L.finished}, ${L.updatedAt}, ${L.lastCompletedTaskId}, ${L.claim} .. task)
  local had, oldest = '0', ''
  if v[2] then
    if nxt ~= '' and call('HEXISTS', key, ${L.result} .. nxt) == 1 then had = '1' end
    if name ~= '' then
      local member = oldest_event(base, id, name)
      if member then oldest = member_seq(member, name) end
    end
  end
  local n = #out
  out[n + 1] = v[2] and v[1]
  out[n + 2] = v[2] or ''
  out[n + 3] = v[3] or ''
  out[n + 4] = v[4] or ''
  out[n + 5] = v[5] or ''
  out[n + 6] = had
  out[n + 7] = oldest
end
out[#out + 1] = fmt(clock())
return out
`;
