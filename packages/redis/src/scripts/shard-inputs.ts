import { L } from "../layout.js";
import { PRELUDE } from "./lua.js";

/** Discovery on a cluster: the inputs of the chosen candidates of one shard. */
export const SHARD_INPUTS = `--[[ shardInputs (findAvailableTasks on a cluster, after the peeks)
  KEYS[1] the shard's ready set (routing only)
  ARGV[1] the shard's base "{P:K}:"   ARGV[2..] instance ids
  Returns, for each id still ready and unclaimed, flat {id, taskId, definitionHash, input, wake,
  attempt, priority, queue, ...} (wake as in peek).
]]
${PRELUDE}
local now_ms = clock()
local base = ARGV[1]
local out = {}
for i = 2, #ARGV do
  local id = ARGV[i]
  local key = base .. ${L.instance} .. id
  local task, _, waiting, member = readiness(base, key, id, now_ms)
  if task and not is_live(parse_claim(call('HGET', key, ${L.claim} .. task)), now_ms) then
    local input, def, wake = offer(base, key, id, waiting, member)
    local attempt, priority, queue = schedule_out(key, task)
    for _, v in ipairs({ id, task, def, input, wake, attempt, priority, queue }) do out[#out + 1] = v end
  end
end
return out
`;
