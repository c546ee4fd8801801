import { L } from "../layout.js";
import { LUA_CODES } from "./codes.js";

/*
 * Lua shared by the scripts. Every script starts with its own comment (KEYS, ARGV, reply), then
 * the parts it uses of these: PRELUDE (result codes, claim helpers, the index upkeep) and WALK
 * (the merge of several shards' ready sets). Key and field names come from layout.ts (L).
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
-- The ready task of an instance: InProgress, at a task that has no result yet (claims aside).
local function ready_task(key)
  local v = call('HMGET', key, ${L.finished}, ${L.positionTaskId})
  if v[1] ~= '0' or not v[2] then return nil end
  if call('HEXISTS', key, ${L.result} .. v[2]) == 1 then return nil end
  return v[2]
end
-- Keeps the instance in step with the shard's indexes, given its ready task (nil: none): in the
-- ready set (score updatedAt) when that task holds no live claim, in the lease set (score = claim
-- expiry, +inf without ttl) when it does, in neither when it has no ready task.
local function place(ready_key, leased_key, key, id, task, now_ms)
  if not task then
    call('ZREM', ready_key, id)
    call('ZREM', leased_key, id)
    return
  end
  local v = call('HMGET', key, ${L.claim} .. task, ${L.updatedAt})
  local c = parse_claim(v[1])
  if is_live(c, now_ms) then
    call('ZREM', ready_key, id)
    local score = '+inf'
    if c.exp ~= '' then score = c.exp end
    call('ZADD', leased_key, score, id)
  else
    call('ZREM', leased_key, id)
    call('ZADD', ready_key, v[2], id)
  end
end
-- place, with the ready task read from the instance.
local function reindex(ready_key, leased_key, key, id, now_ms)
  place(ready_key, leased_key, key, id, ready_task(key), now_ms)
end
-- Leases that expired by now go back to the ready set (each expiry is handled once).
local function expire_leases(ready_key, leased_key, base, now_ms)
  local due = call('ZRANGEBYSCORE', leased_key, '-inf', now_ms)
  for _, id in ipairs(due) do
    reindex(ready_key, leased_key, base .. ${L.instance} .. id, id, now_ms)
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
local function fence_ok(key, task, token, now_ms)
  if token == '' then return true end
  local c = parse_claim(call('HGET', key, ${L.claim} .. task))
  return is_live(c, now_ms) and c.token == token
end
-- Redis command with a long list of arguments, in chunks (Lua's unpack has a stack limit).
local function call_chunked(cmd, key, args)
  for i = 1, #args, 400 do
    local last = i + 399
    if last > #args then last = #args end
    call(cmd, key, unpack(args, i, last))
  end
end
`;

/*
 * Shard walk of peek and claim-next over one or several shards. Each shard's expired leases go
 * back to its ready set first; then the oldest entries of the ready sets are merged by
 * (updatedAt, instance id in byte order), which is the order of ZRANGE inside one shard, so the
 * picks of one shard are always the first entries of its ready set. An instance whose ready task
 * holds a live claim is in the lease set, not in the ready set, so nothing is walked past:
 * O(log n + limit + expired) per shard. Lua's "<" on strings follows the server's locale
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
    expire_leases(base .. ${L.ready}, base .. ${L.leased}, base, now_ms)
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
local NUL = string.char(0)
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
