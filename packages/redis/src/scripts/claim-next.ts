import { L } from "../layout.js";
import { PRELUDE, WALK } from "./lua.js";

/** claimAvailableTasks: the oldest unclaimed ready tasks of some shards, claimed in one step. */
export const CLAIM_NEXT = `--[[ claimNext (claimAvailableTasks)
  KEYS[1] the request record "{P:K}:q:<request id>", K = the first shard walked
  ARGV[1] "{P:"   ARGV[2] limit   ARGV[3] worker id   ARGV[4] ttl ms ('' = never expires)
  ARGV[5] request id (hex, one per call)   ARGV[6] request record ttl (ms)
  ARGV[7] n = how many queues   ARGV[8..7+n] the queues served   ARGV[8+n..] the shards to walk
  Claims the first unclaimed ready tasks (by score = readyAt + offset, then id) of those queues
  in those shards in one step: pops them from the ready sets (ZPOPMIN takes exactly the picks of
  each set, its first entries) and puts them in the lease sets. A pick whose task's last claim
  expired (a takeover) counts one more run in the task's attempts (same write as the claim). Per task 3 commands on the instance hash: its fields read, the
  task's claim (and output, and the input when it is an output) read, the claim written. A wait
  (no AtTask position) costs a few more: its fields, its event's order member and payload.
  Returns {json, input, input, ...}: json = a flat array of strings, 10 per task (id, taskId,
  score, definitionHash, token, claimedAt, expiresAt, attempt, priority, queue), first first, then 2 per task that ran a
  wait (its place in the reply from 1, its wake as in peek: 't' or "<seq><event name>"); then the
  inputs in the task order as bulk strings (bytes). Idempotent per request id: what a run claimed is recorded in the
  request record (shard, id, taskId joined by NUL, which ids cannot hold; it expires), and a
  second run of the same request returns those claims (the ones still live and its own) instead
  of claiming more.
]]
${PRELUDE}${WALK}
-- A claim path: nothing it files is newly claimable by others (see wake in lua.ts).
woken = false
local now_ms, now_us = clock()
local pre, limit, worker, ttl, req = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5]
local queues, shards = queues_and_shards(7)
local meta_out, inputs, wakes = {}, {}, {}
local nm = 0
local function emit(id, task, score, def, input, tok, at, exp, wake, attempt, priority, queue)
  meta_out[nm + 1] = id; meta_out[nm + 2] = task; meta_out[nm + 3] = score; meta_out[nm + 4] = def or ''
  meta_out[nm + 5] = tok; meta_out[nm + 6] = at; meta_out[nm + 7] = exp
  meta_out[nm + 8] = attempt; meta_out[nm + 9] = priority; meta_out[nm + 10] = queue
  nm = nm + 10
  inputs[#inputs + 1] = input
  if wake and wake ~= '' then wakes[#wakes + 1] = fmt(#inputs); wakes[#wakes + 1] = wake end
end
local function reply()
  if nm == 0 then return { '[]' } end
  for i = 1, #wakes do meta_out[nm + i] = wakes[i] end
  local out = { cjson.encode(meta_out) }
  for i = 1, #inputs do out[i + 1] = inputs[i] end
  return out
end
-- A second run of this request: the claims its first run made (those still live) again.
if req ~= '' then
  local done = call('GET', KEYS[1])
  if done then
    local parts = split_nul(done)
    for i = 1, #parts - 2, 3 do
      local id, task = parts[i + 1], parts[i + 2]
      local base = pre .. parts[i] .. ${L.tagEnd}
      local key = base .. ${L.instance} .. id
      local c = parse_claim(call('HGET', key, ${L.claim} .. task))
      if own_retry(c, req, worker, now_ms) then
        local ready, score, waiting, member = readiness(base, key, id, now_ms)
        local input, def, wake = offer(base, key, id, waiting and ready == task, member)
        local attempt, priority, queue = schedule_out(key, task)
        emit(id, task, score or '0', def, input, c.token, c.at, c.exp, wake, attempt, priority, queue)
      end
    end
    return reply()
  end
end
-- Every claim of this call has the same claimedAt and expiresAt, and, unless a task's own
-- history says otherwise, the same token (server time in microseconds): computed once.
local at_s, exp = fmt(now_ms), ''
if ttl ~= '' then exp = fmt(now_ms + tonumber(ttl)) end
local lease_score = exp == '' and '+inf' or exp
local tail = '|' .. at_s .. '|' .. exp .. '|' .. req .. '|' .. worker
local now_tok = fmt(now_us)
-- A wait's ready task, that task's claim field, its input and wake (nil when it is not ready).
local function wait_pick(base, key, id)
  local w = call('HMGET', key, ${L.awaitedEvent}, ${L.awaitedTask}, ${L.timeoutAt}, ${L.updatedAt})
  if not w[1] then return nil end
  local task, _, member = wait_readiness(base, key, id, w[1], w[2], w[3], w[4], now_ms)
  if not task then return nil end
  local input, wake = wait_input(base, id, member)
  return task, call('HGET', key, ${L.claim} .. task), input, wake
end
local record, floors, leases, claimed = {}, {}, {}, 0
for round = 1, 8 do
  if claimed >= limit then break end
  local want = limit - claimed
  -- Up to \`want\` of the oldest entries of the shards' ready sets, popped from them.
  local picks = {}
  if #shards == 1 and #queues == 1 then
    local s = shards[1]
    local base = pre .. s .. ${L.tagEnd}
    if round == 1 then
      expire_leases(base, now_ms)
      promote_timers(base, queues, now_ms)
    end
    local page = call('ZPOPMIN', ready_of(base, queues[1]), want)
    for i = 1, #page, 2 do picks[#picks + 1] = { s = s, id = page[i], score = page[i + 1] } end
  else
    picks = oldest(pre, shards, queues, want, now_ms)
    local counts = {}
    for _, p in ipairs(picks) do counts[p.k] = (counts[p.k] or 0) + 1 end
    for k, n in pairs(counts) do call('ZPOPMIN', k, n) end
  end
  if #picks == 0 then break end
  -- Each pick is claimed if its task is ready and unclaimed, else put where it belongs.
  for _, p in ipairs(picks) do
    local id = p.id
    local key = pre .. p.s .. ${L.tagEnd} .. ${L.instance} .. id
    local m = call('HMGET', key, ${L.finished}, ${L.positionTaskId}, ${L.lastCompletedTaskId}, ${L.initialInput}, ${L.definitionHash}, ${L.priority}, ${L.queue})
    local task = m[2]
    -- The task's claim, the input when it is an output, the task's own output (there is none
    -- while the index is in step: the check keeps a stray entry from being claimed), its attempts.
    local v = task and call('HMGET', key, ${L.claim} .. task, ${L.result} .. (m[3] or ''), ${L.result} .. task, ${L.attempts} .. task)
    local raw = v and v[1]
    local att = v and v[4]
    local input, wake
    if m[1] == '0' and task and not v[3] then
      input = m[3] and v[2]
      if not input then input = m[4] or '' end
    elseif m[1] == '0' and not task then
      -- No AtTask position: a wait, ready with its event pending or timed out (else out of step).
      task, raw, input, wake = wait_pick(pre .. p.s .. ${L.tagEnd}, key, id)
      if task then att = call('HGET', key, ${L.attempts} .. task) end
    end
    local prev = input and parse_claim(raw)
    if input and not is_live(prev, now_ms) then
      local floor = floors[p.s]
      if floor == nil then
        floor = floor_of(pre .. p.s .. ${L.tagEnd} .. ${L.floor})
        floors[p.s] = floor
      end
      -- token = max(last token of this (instance, task) + 1, shard floor + 1, now in microseconds)
      local tok_s = now_tok
      local tok = last_token(raw) + 1
      if floor + 1 > tok then tok = floor + 1 end
      if tok > now_us then tok_s = fmt(tok) end
      if prev then
        -- A takeover: the last claim expired without a result, one more run counts.
        att = bump(att)
        call('HSET', key, ${L.claim} .. task, tok_s .. tail, ${L.attempts} .. task, att)
      else
        call('HSET', key, ${L.claim} .. task, tok_s .. tail)
      end
      emit(id, task, p.score, m[5], input, tok_s, at_s, exp, wake, attempt_of(att), m[6] or '3', m[7] or 'default')
      local lease = leases[p.s]
      if lease == nil then
        lease = {}
        leases[p.s] = lease
      end
      lease[#lease + 1] = lease_score
      lease[#lease + 1] = id
      record[#record + 1] = p.s; record[#record + 1] = id; record[#record + 1] = task
      claimed = claimed + 1
    else
      -- Out of step with the index (only if keys were changed behind the scripts' back): it was
      -- popped; put it where it belongs (never back in the ready set: it was refused as not ready).
      reindex(pre .. p.s .. ${L.tagEnd}, key, id, now_ms)
    end
  end
end
for s, lease in pairs(leases) do call_chunked('ZADD', pre .. s .. ${L.tagEnd} .. ${L.leased}, lease) end
if req ~= '' and #record > 0 then
  call('SET', KEYS[1], table.concat(record, NUL), 'PX', ARGV[6])
end
return reply()
`;
