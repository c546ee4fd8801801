import { L } from "../layout.js";
import { LUA_CODES } from "./codes.js";

/*
 * Lua shared by the scripts. Every script starts with its own comment (KEYS, ARGV, reply), then
 * the parts it uses of these: PRELUDE (result codes, claim helpers, pending events, the index
 * upkeep: ready, lease and timer sets), WALK (the merge of several shards' ready sets) and
 * CONTROL (the as-read check of cancel, pause and resume). Key and field names come from
 * layout.ts (L).
 *
 * Time is Redis's own: TIME inside the script (Redis 7 replicates the effects of scripts, so a
 * non-deterministic command before a write is allowed). Numbers pass through Lua as doubles
 * (exact below 2^53) and are turned into strings with %.0f, never tostring (which gives "1e+15").
 */

export const PRELUDE = `${LUA_CODES}
local call = redis.call
-- "{P:" .. shard .. "}:", the start of every key of a shard.
local function shard_base(pre, s) return pre .. s .. ${L.tagEnd} end
local function clock()
  local t = call('TIME')
  local s, us = tonumber(t[1]), tonumber(t[2])
  return s * 1000 + math.floor(us / 1000), s * 1000000 + us
end
local function fmt(n) return string.format('%.0f', n) end
-- Redis command with a long list of arguments, in chunks (Lua's unpack has a stack limit).
local function call_chunked(cmd, key, args)
  for i = 1, #args, 400 do
    local last = i + 399
    if last > #args then last = #args end
    call(cmd, key, unpack(args, i, last))
  end
end
local function is_live(c, now_ms)
  return c ~= nil and (c.exp == '' or tonumber(c.exp) > now_ms)
end
-- A claim is "token|claimedAt|expiresAt|requestId|workerId" (the worker id last: it may hold "|").
-- A released claim leaves its bare token behind, a completed one "token|requestId" (tombstones,
-- no claim), so the field also keeps the last token issued for the task.
local function parse_claim(v)
  if not v then return nil end
  local tok, at, exp, req, worker = string.match(v, '^(%d+)|(%d+)|(%d*)|(%x*)|(.*)$')
  if not tok then return nil end
  return { token = tok, at = at, exp = exp, req = req, worker = worker }
end
local function format_claim(c)
  return c.token .. '|' .. c.at .. '|' .. c.exp .. '|' .. c.req .. '|' .. c.worker
end
local function last_token(v)
  if not v then return 0 end
  return tonumber(string.match(v, '^(%d+)') or '0')
end
-- The live claim that this very call (same request id, same worker) already made: the call is
-- running a second time (its first reply was lost and the command was sent again).
local function own_retry(c, req, worker, now_ms)
  return is_live(c, now_ms) and req ~= '' and c.req == req and c.worker == worker
end
-- A new claim over the field's current value \`raw\` (a claim that is not live, a tombstone or
-- nothing): token = max(last token of this (instance, task) + 1, shard floor + 1, server time in
-- microseconds), so tokens keep growing after a release, an expiry and a delete.
local function new_claim(key, task, raw, floor, worker, ttl, req, now_ms, now_us)
  local tok = last_token(raw) + 1
  if floor + 1 > tok then tok = floor + 1 end
  if now_us > tok then tok = now_us end
  local exp = ''
  if ttl ~= '' then exp = fmt(now_ms + tonumber(ttl)) end
  local tok_s, at_s = fmt(tok), fmt(now_ms)
  call('HSET', key, ${L.claim} .. task, format_claim({ token = tok_s, at = at_s, exp = exp, req = req, worker = worker }))
  return tok_s, at_s, exp
end
local function floor_of(floor_key) return tonumber(call('GET', floor_key) or '0') end
local function exists(key) return call('HEXISTS', key, ${L.finished}) == 1 end
local NUL = string.char(0)
-- A shard's base "{P:K}:" from the key "{P:K}:m:<id>" of one of its instances.
local function base_of(key, id) return string.sub(key, 1, #key - #id - ${L.instanceLength}) end
-- The oldest pending event named \`name\` of the instance: its order member
-- "name NUL seq NUL sentAt" (ids hold no NUL, so the range holds that name only), or nil.
local function oldest_event(base, id, name)
  return call('ZRANGEBYLEX', base .. ${L.eventOrder} .. id, '[' .. name .. NUL,
    '(' .. name .. string.char(1), 'LIMIT', 0, 1)[1]
end
-- The sequence (${L.sequenceDigits} digits, the payload's field) of an order member of event \`name\`.
local function member_seq(member, name) return string.sub(member, #name + 2, #name + 1 + ${L.sequenceDigits}) end
local function drop_events(base, id)
  call('DEL', base .. ${L.events} .. id, base .. ${L.eventOrder} .. id)
end
-- A wait for event \`name\` that runs \`task\` next: ready with the oldest pending event of that
-- name (task, score = updatedAt, its order member), or with none once its timeout has passed
-- (task, score = timeoutAt, false); not yet (nil, timeoutAt: its timer's score); never (nil).
local function wait_readiness(base, key, id, name, task, timeout, updated, now_ms)
  if call('HEXISTS', key, ${L.result} .. task) == 1 then return nil end
  local member = oldest_event(base, id, name)
  if member then return task, updated, member end
  if not timeout then return nil end
  if tonumber(timeout) <= now_ms then return task, timeout, false end
  return nil, timeout
end
-- What an instance could run now, claims aside: its task and ready-index score, whether it is a
-- wait (its timer entry is kept in step too) and, for a wait, the event member it carries (false:
-- it timed out). Only InProgress instances have a position task (p) or a wait (w).
local function readiness(base, key, id, now_ms)
  local v = call('HMGET', key, ${L.finished}, ${L.positionTaskId}, ${L.updatedAt}, ${L.awaitedEvent}, ${L.awaitedTask}, ${L.timeoutAt})
  if v[1] ~= '0' then return nil end
  if v[2] then
    if call('HEXISTS', key, ${L.result} .. v[2]) == 1 then return nil end
    return v[2], v[3]
  end
  if not v[4] then return nil end
  local task, score, member = wait_readiness(base, key, id, v[4], v[5], v[6], v[3], now_ms)
  return task, score, true, member
end
-- Keeps the instance in step with its shard's indexes, given its readiness: in the ready set
-- (score) when its task holds no live claim, in the lease set (score = claim expiry, +inf
-- without ttl) when it does, in neither when it has no ready task. A wait whose timeout is still
-- to come is in the timer set (score = timeoutAt), any other wait out of it (other instances
-- never enter it).
local function place(base, key, id, task, score, waiting, now_ms)
  if waiting then
    if not task and score then call('ZADD', base .. ${L.timers}, score, id)
    else call('ZREM', base .. ${L.timers}, id) end
  end
  if not task then
    call('ZREM', base .. ${L.ready}, id)
    call('ZREM', base .. ${L.leased}, id)
    return
  end
  local c = parse_claim(call('HGET', key, ${L.claim} .. task))
  if is_live(c, now_ms) then
    call('ZREM', base .. ${L.ready}, id)
    local lease = '+inf'
    if c.exp ~= '' then lease = c.exp end
    call('ZADD', base .. ${L.leased}, lease, id)
  else
    call('ZREM', base .. ${L.leased}, id)
    call('ZADD', base .. ${L.ready}, score, id)
  end
end
-- place, with the readiness read from the instance.
local function reindex(base, key, id, now_ms)
  local task, score, waiting = readiness(base, key, id, now_ms)
  place(base, key, id, task, score, waiting, now_ms)
end
-- Leases that expired by now go back to the ready set (each expiry is handled once).
local function expire_leases(base, now_ms)
  local due = call('ZRANGEBYSCORE', base .. ${L.leased}, '-inf', now_ms)
  for _, id in ipairs(due) do
    reindex(base, base .. ${L.instance} .. id, id, now_ms)
  end
end
-- Up to \`limit\` timers that came due by now (the oldest timeoutAt first) leave the timer set
-- for the ready set, score = timeoutAt (or for the lease set when their task holds a live claim;
-- an entry out of step with its instance just leaves).
local function promote_timers(base, now_ms, limit)
  local due = call('ZRANGEBYSCORE', base .. ${L.timers}, '-inf', now_ms, 'LIMIT', 0, limit)
  if #due == 0 then return end
  call_chunked('ZREM', base .. ${L.timers}, due)
  for _, id in ipairs(due) do
    reindex(base, base .. ${L.instance} .. id, id, now_ms)
  end
end
-- Input of the ready task: last completed output, else the initial input, else empty bytes.
local function task_input(key)
  local v = call('HMGET', key, ${L.lastCompletedTaskId}, ${L.initialInput}, ${L.definitionHash})
  if v[1] then
    local out = call('HGET', key, ${L.result} .. v[1])
    if out then return out, v[3] end
  end
  if v[2] then return v[2], v[3] end
  return '', v[3]
end
-- A wait's input and wake: the payload of the event it carries (its order member) and
-- "<seq><name>", or, when it timed out (no member), empty bytes and 't'.
local function wait_input(base, id, member)
  if not member then return '', 't' end
  local name = string.sub(member, 1, string.find(member, NUL, 1, true) - 1)
  local seq = member_seq(member, name)
  return call('HGET', base .. ${L.events} .. id, seq) or '', seq .. name
end
-- Input, definition hash and wake ('' unless a wait) of a ready task, given its readiness.
local function offer(base, key, id, waiting, member)
  if not waiting then
    local input, def = task_input(key)
    return input, def, ''
  end
  local input, wake = wait_input(base, id, member)
  return input, call('HGET', key, ${L.definitionHash}), wake
end
local function fence_ok(key, task, token, now_ms)
  if token == '' then return true end
  local c = parse_claim(call('HGET', key, ${L.claim} .. task))
  return is_live(c, now_ms) and c.token == token
end
`;

/*
 * Shard walk of peek and claim-next over one or several shards. Each shard's expired leases go
 * back to its ready set first, and its timers that came due (up to `limit`) join it; then the
 * oldest entries of the ready sets are merged by
 * (updatedAt, instance id in byte order), which is the order of ZRANGE inside one shard, so the
 * picks of one shard are always the first entries of its ready set. An instance whose ready task
 * holds a live claim is in the lease set, not in the ready set, so nothing is walked past:
 * O(log n + limit + expired + due timers) per shard. Lua's "<" on strings follows the server's locale
 * (strcoll), hence the explicit byte comparison (only reached on equal updatedAt).
 */
export const WALK = `
local function bytes_less(a, b)
  local n = #a
  if #b < n then n = #b end
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end
-- Up to \`limit\` picks {s = shard, id = id, score = score string}, oldest first.
local function oldest(pre, shards, limit, now_ms)
  local heads = {}
  for k, s in ipairs(shards) do
    local base = shard_base(pre, s)
    expire_leases(base, now_ms)
    promote_timers(base, now_ms, limit)
    heads[k] = { s = s, page = call('ZRANGE', base .. ${L.ready}, 0, limit - 1, 'WITHSCORES'), i = 1 }
  end
  local picks = {}
  if #heads == 1 then
    local page = heads[1].page
    for i = 1, #page, 2 do picks[#picks + 1] = { s = heads[1].s, id = page[i], score = page[i + 1] } end
    return picks
  end
  while #picks < limit do
    local best, best_score
    for _, h in ipairs(heads) do
      if h.i < #h.page then
        local score = tonumber(h.page[h.i + 1])
        if best == nil or score < best_score
          or (score == best_score and bytes_less(h.page[h.i], best.page[best.i])) then
          best, best_score = h, score
        end
      end
    end
    if best == nil then break end
    picks[#picks + 1] = { s = best.s, id = best.page[best.i], score = best.page[best.i + 1] }
    best.i = best.i + 2
  end
  return picks
end
local function shard_list(from)
  local shards = {}
  for i = from, #ARGV do shards[#shards + 1] = ARGV[i] end
  return shards
end
local function split_nul(s)
  local parts, start = {}, 1
  while true do
    local at = string.find(s, NUL, start, true)
    if not at then
      parts[#parts + 1] = string.sub(s, start)
      return parts
    end
    parts[#parts + 1] = string.sub(s, start, at - 1)
    start = at + 1
  end
end
`;

/*
 * What cancel, pause and resume share (after PRELUDE). Their TypeScript side read the header,
 * lastCompletedTaskId and the position's task (whether it has a result) with loadHeader, checked
 * the state (controlRefusal) and computed the new header with the kit's transitionHeader; the
 * script applies it only if those are still as read, else answers CHANGED (read again). Common
 * ARGV:
 *   [1] instance id   [2] request id (hex, one per call)   [3] header as read
 *   [4] lastCompletedTaskId as read ('' = none)   [5] the position's task as read ('' = none)
 *   [6] whether that task had a result ('1'/'0')   [7] new header   [8] updatedAt
 *   [9] status   [10] finished ('1'/'0')   [11] position task id ('' = none)
 *   [12] awaited event ('' = none)   [13] awaited task   [14] timeoutAt ('' = none)
 *   [15] store the initial input ('1': the header read carried it and no field of its own held it)
 *   [16] that initial input
 */
export const CONTROL = `
local key, id = KEYS[1], ARGV[1]
-- nil when the instance is as read; else what to answer: OK when this very call already applied
-- (a second run: its first reply was lost), SNAPSHOT_NOT_FOUND or CHANGED.
local function as_read()
  local v = call('HMGET', key, ${L.header}, ${L.lastCompletedTaskId}, ${L.controlRequest})
  if not v[1] then return SNAPSHOT_NOT_FOUND end
  if v[3] == ARGV[2] then return OK end
  if v[1] ~= ARGV[3] or (v[2] or '') ~= ARGV[4] then return CHANGED end
  if ARGV[5] ~= '' then
    local had = '0'
    if call('HEXISTS', key, ${L.result} .. ARGV[5]) == 1 then had = '1' end
    if had ~= ARGV[6] then return CHANGED end
  end
  return nil
end
-- The new header, status and index fields (those given empty are deleted), updatedAt and the
-- request id of this call.
local function apply()
  local set = { ${L.header}, ARGV[7], ${L.updatedAt}, ARGV[8], ${L.status}, ARGV[9], ${L.finished}, ARGV[10], ${L.controlRequest}, ARGV[2] }
  local del = {}
  local named = { ${L.positionTaskId}, ARGV[11], ${L.awaitedEvent}, ARGV[12], ${L.awaitedTask}, ARGV[13], ${L.timeoutAt}, ARGV[14] }
  for i = 1, #named, 2 do
    if named[i + 1] ~= '' then
      set[#set + 1] = named[i]; set[#set + 1] = named[i + 1]
    else
      del[#del + 1] = named[i]
    end
  end
  if ARGV[15] == '1' then set[#set + 1] = ${L.initialInput}; set[#set + 1] = ARGV[16] end
  if #del > 0 then call('HDEL', key, unpack(del)) end
  call('HSET', key, unpack(set))
end
`;
