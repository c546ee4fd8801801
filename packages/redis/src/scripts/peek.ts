import { L } from "../layout.js";
import { PRELUDE, WALK } from "./lua.js";

/** Discovery: the oldest ready entries of one or several shards, checked or not. */
export const PEEK = `--[[ peek (findAvailableTasks; a cluster's claim-next candidates)
  KEYS[1] the ready set of the first shard walked (routing only)
  ARGV[1] "{P:"   ARGV[2] limit   ARGV[3] mode   ARGV[4] n = how many queues
  ARGV[5..4+n] the queues served   ARGV[5+n..] the shards to walk
  Walks the ready sets of those queues in those shards.
  Mode '0': the first entries of the ready sets as they are, flat {id, score, ...} (the
  candidates of a cluster's claim-next, whose claim scripts check each task themselves).
  Mode '1': checked tasks, flat {id, taskId, score, ...}.
  Mode '2': checked tasks with their inputs, flat {id, taskId, score, definitionHash, input,
  wake, attempt, priority, queue, ...}; wake: '' (no wait), 't' (a wait that timed out) or
  "<seq><event name>" (a wait with the event it carries, whose payload is the input).
  By score (readyAt + offset), then id. A checked entry found out of step with its instance (it cannot happen while every
  write goes through these scripts) is re-indexed and replaced.
]]
${PRELUDE}${WALK}
-- Discovery: what it re-files was claimable already (see wake in lua.ts).
woken = false
local now_ms = clock()
local pre, limit, mode = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local queues, shards = queues_and_shards(4)
local out = {}
if mode == '0' then
  for _, p in ipairs(oldest(pre, shards, queues, limit, now_ms)) do
    out[#out + 1] = p.id; out[#out + 1] = p.score
  end
  return out
end
for round = 1, 8 do
  out = {}
  local bad = {}
  for _, p in ipairs(oldest(pre, shards, queues, limit, now_ms)) do
    local base = shard_base(pre, p.s)
    local key = base .. ${L.instance} .. p.id
    local task, _, waiting, member = readiness(base, key, p.id, now_ms)
    if task and not is_live(parse_claim(call('HGET', key, ${L.claim} .. task)), now_ms) then
      out[#out + 1] = p.id; out[#out + 1] = task; out[#out + 1] = p.score
      if mode == '2' then
        local input, def, wake = offer(base, key, p.id, waiting, member)
        out[#out + 1] = def; out[#out + 1] = input; out[#out + 1] = wake
        local attempt, priority, queue = schedule_out(key, task)
        out[#out + 1] = attempt; out[#out + 1] = priority; out[#out + 1] = queue
      end
    else
      bad[#bad + 1] = p
    end
  end
  if #bad == 0 then break end
  -- Not ready after all: re-indexing takes it out of the ready set, and the walk runs again.
  for _, p in ipairs(bad) do
    local base = shard_base(pre, p.s)
    call('ZREM', p.k, p.id)
    reindex(base, base .. ${L.instance} .. p.id, p.id, now_ms)
  end
end
return out
`;
