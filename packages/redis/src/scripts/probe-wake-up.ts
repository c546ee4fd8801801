import { L } from "../layout.js";
import { PRELUDE, WALK } from "./lua.js";

/*
 * How many lease-set entries one probe reads on each side of now (the lease set is the shard's,
 * every queue in it, so each entry costs a look at its instance's queue): bounded, and an answer
 * past the bound errs early (a look sooner than needed), never late.
 */
const LEASE_SCAN = 16;

/** waitForTasks' look: is a task of these queues claimable now, and when is the next one due? */
export const PROBE_WAKE_UP = `--[[ probeWakeUp (waitForTasks)
  KEYS[1] the ready set of the first shard looked at (routing only)
  ARGV[1] "{P:"   ARGV[2] n = how many queues   ARGV[3..2+n] the queues   ARGV[3+n..] the shards
  Read-only: it moves nothing (claim-next promotes due timers and expired leases itself) and
  reads no payload. By the server's clock, the same rules as claim-next: ready when a ready set of
  those queues has an entry, a timer of theirs is due or a lease of theirs has expired. Else the
  next due time: the earliest timer (runAt, retryAt, a wait's timeout) of those queues and the
  earliest lease expiry of theirs after now (past ${LEASE_SCAN} leases of other queues: that one's).
  Returns {ready '1'/'0', next due (ms) or '', the server's now (ms)}.
]]
${PRELUDE}${WALK}
local now_ms = clock()
local pre = ARGV[1]
local queues, shards = queues_and_shards(2)
local served = {}
for _, q in ipairs(queues) do served[q] = true end
local next_due
local function sooner(score)
  local n = tonumber(score)
  if next_due == nil or n < next_due then next_due = n end
end
local function served_by(base, id)
  return served[call('HGET', base .. ${L.instance} .. id, ${L.queue}) or 'default'] == true
end
-- '1' when something of the queues is claimable in the shard, else nil (next_due updated).
local function look(base)
  for _, q in ipairs(queues) do
    if call('ZCARD', ready_of(base, q)) > 0 then return '1' end
    local t = call('ZRANGE', timers_of(base, q), 0, 0, 'WITHSCORES')
    if t[2] then
      if tonumber(t[2]) <= now_ms then return '1' end
      sooner(t[2])
    end
  end
  local leased = base .. ${L.leased}
  local expired = call('ZRANGEBYSCORE', leased, '-inf', now_ms, 'LIMIT', 0, ${LEASE_SCAN})
  for _, id in ipairs(expired) do
    if served_by(base, id) then return '1' end
  end
  -- More expired leases than one look reads, none of them ours so far: one of ours may be behind
  -- them. Say ready (a claim-next moves expired leases back where they belong, so this clears).
  if #expired == ${LEASE_SCAN} then return '1' end
  local later = call('ZRANGEBYSCORE', leased, '(' .. fmt(now_ms), '+inf', 'WITHSCORES', 'LIMIT', 0, ${LEASE_SCAN})
  for i = 1, #later, 2 do
    if later[i + 1] == 'inf' then break end
    if served_by(base, later[i]) or i == ${LEASE_SCAN * 2 - 1} then
      sooner(later[i + 1])
      break
    end
  end
  return nil
end
for _, s in ipairs(shards) do
  if look(shard_base(pre, s)) then return { '1', '', fmt(now_ms) } end
end
if next_due == nil then return { '0', '', fmt(now_ms) } end
return { '0', fmt(next_due), fmt(now_ms) }
`;
