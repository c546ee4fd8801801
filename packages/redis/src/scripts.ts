import type { Cluster, Redis } from "ioredis";

/*
 * Every state change is one Lua script, loaded once and called by SHA (ioredis defineCommand
 * sends EVALSHA and falls back to EVAL on NOSCRIPT). Instance scripts get their keys in KEYS and
 * touch one shard, so one Cluster slot. Shard scripts (peek, claim-next, inputs, completion) get
 * one key of the first shard they touch in KEYS (which routes them to the right node) and build
 * every other key from "{P:" .. shard .. "}:". On a cluster the backend sends them one shard at a
 * time; on a standalone server one call may cover several shards (there is no slot rule there).
 *
 * An instance is one hash (see layout.ts): the snapshot fields, its task outputs ("r:" .. task)
 * and its claims ("c:" .. task), so finishing a task writes one hash, and neither claiming nor
 * finishing creates a key.
 *
 * Time is Redis's own: TIME inside the script (Redis 7 replicates the effects of scripts, so a
 * non-deterministic command before a write is allowed). Numbers pass through Lua as doubles
 * (exact below 2^53) and are turned into strings with %.0f, never tostring (which gives "1e+15").
 *
 * The hot path (claim-next, completion) is written for few Redis commands per task: the Redis
 * thread shares the machine with the workers, and each redis.call costs about as much as a small
 * command from a client.
 */

/** Status codes returned by the scripts (completion replies them as one digit per item). */
export const Status = { ok: 0, claimLost: 1, conflict: 2, notFound: 3, expired: 4 } as const;

const COMMON = `
local call = redis.call
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
  call('HSET', key, 'c:' .. task, format_claim({ token = tok_s, at = at_s, exp = exp, req = req, worker = worker }))
  return tok_s, at_s, exp
end
local function floor_of(floor_key) return tonumber(call('GET', floor_key) or '0') end
local function exists(key) return call('HEXISTS', key, 'f') == 1 end
-- The ready task of an instance: InProgress, at a task that has no result yet (claims aside).
local function ready_task(key)
  local v = call('HMGET', key, 'f', 'p')
  if v[1] ~= '0' or not v[2] then return nil end
  if call('HEXISTS', key, 'r:' .. v[2]) == 1 then return nil end
  return v[2]
end
-- Keeps the instance in step with the shard's indexes: in the ready set (score updatedAt) when
-- its ready task holds no live claim, in the lease set (score = claim expiry, +inf without ttl)
-- when it does, in neither when it has no ready task.
local function reindex(ready_key, leased_key, key, id, now_ms)
  local task = ready_task(key)
  if not task then
    call('ZREM', ready_key, id)
    call('ZREM', leased_key, id)
    return
  end
  local v = call('HMGET', key, 'c:' .. task, 'u')
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
-- Leases that expired by now go back to the ready set (each expiry is handled once).
local function expire_leases(ready_key, leased_key, base, now_ms)
  local due = call('ZRANGEBYSCORE', leased_key, '-inf', now_ms)
  for _, id in ipairs(due) do
    reindex(ready_key, leased_key, base .. 'm:' .. id, id, now_ms)
  end
end
-- Input of the ready task: last completed output, else the initial input, else empty bytes.
local function task_input(key)
  local v = call('HMGET', key, 'l', 'i', 'd')
  if v[1] then
    local out = call('HGET', key, 'r:' .. v[1])
    if out then return out, v[3] end
  end
  if v[2] then return v[2], v[3] end
  return '', v[3]
end
local function fence_ok(key, task, token, now_ms)
  if token == '' then return true end
  local c = parse_claim(call('HGET', key, 'c:' .. task))
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
const WALK = `
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
    local base = pre .. s .. '}:'
    expire_leases(base .. 'ready', base .. 'leased', base, now_ms)
    heads[k] = { s = s, page = call('ZRANGE', base .. 'ready', 0, limit - 1, 'WITHSCORES'), i = 1 }
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

/**
 * KEYS: instance hash, ready, ids, leased
 * ARGV: id, header, finished, definitionHash, hasPosition, positionTaskId, hasLast, last,
 *       updatedAt, hasInitial, initialInput, fenceTask, fenceToken ('' = none), then
 *       ("r:" .. task id, output) pairs.
 * Replaces every field of the snapshot and every output; the claims stay.
 */
const SAVE_SNAPSHOT = `${COMMON}
local now_ms = clock()
local key = KEYS[1]
if not fence_ok(key, ARGV[12], ARGV[13], now_ms) then return 1 end
if ARGV[3] == '0' and call('HGET', key, 'f') == '1' then return 2 end
local old = {}
for _, field in ipairs(call('HKEYS', key)) do
  if string.sub(field, 1, 2) ~= 'c:' then old[#old + 1] = field end
end
call_chunked('HDEL', key, old)
local fields = { 'h', ARGV[2], 'f', ARGV[3], 'd', ARGV[4], 'u', ARGV[9] }
if ARGV[5] == '1' then fields[#fields + 1] = 'p'; fields[#fields + 1] = ARGV[6] end
if ARGV[7] == '1' then fields[#fields + 1] = 'l'; fields[#fields + 1] = ARGV[8] end
if ARGV[10] == '1' then fields[#fields + 1] = 'i'; fields[#fields + 1] = ARGV[11] end
call('HSET', key, unpack(fields))
local n = #ARGV
for i = 14, n, 200 do
  local last = i + 199
  if last > n then last = n end
  call('HSET', key, unpack(ARGV, i, last))
end
call('ZADD', KEYS[3], 0, ARGV[1])
reindex(KEYS[2], KEYS[4], key, ARGV[1], now_ms)
return 0
`;

/**
 * KEYS: instance hash, ready, leased
 * ARGV: id, taskId, output, fenceTask, fenceToken ('' = none)
 */
const SAVE_TASK_RESULT = `${COMMON}
local key = KEYS[1]
local m = call('HMGET', key, 'f', 'u')
if not m[1] then return 3 end
local now_ms = clock()
if not fence_ok(key, ARGV[4], ARGV[5], now_ms) then return 1 end
if m[1] == '1' then return 2 end
local u = tonumber(m[2])
if now_ms > u then u = now_ms end
call('HSET', key, 'r:' .. ARGV[2], ARGV[3], 'l', ARGV[2], 'u', fmt(u))
reindex(KEYS[2], KEYS[3], key, ARGV[1], now_ms)
return 0
`;

/** KEYS: instance hash. Returns its fields (claims among them) or nil when there is no snapshot. */
const LOAD_SNAPSHOT = `
if redis.call('HEXISTS', KEYS[1], 'f') == 0 then return false end
return redis.call('HGETALL', KEYS[1])
`;

/**
 * KEYS: instance hash, ready, ids, floor, leased
 * ARGV: id
 * The highest token of the instance (in its claims and tombstones) is kept in the shard's floor,
 * so a re-created instance never issues a token that an old claim already holds.
 */
const DELETE_SNAPSHOT = `${COMMON}
local key = KEYS[1]
if not exists(key) then return 3 end
local hi = floor_of(KEYS[4])
local claims = {}
for _, field in ipairs(call('HKEYS', key)) do
  if string.sub(field, 1, 2) == 'c:' then claims[#claims + 1] = field end
end
for i = 1, #claims, 200 do
  local last = i + 199
  if last > #claims then last = #claims end
  for _, v in ipairs(call('HMGET', key, unpack(claims, i, last))) do
    local n = last_token(v)
    if n > hi then hi = n end
  end
end
call('SET', KEYS[4], fmt(hi))
call('DEL', key)
call('ZREM', KEYS[2], ARGV[1])
call('ZREM', KEYS[3], ARGV[1])
call('ZREM', KEYS[5], ARGV[1])
return 0
`;

/**
 * KEYS: instance hash, floor, ready, leased
 * ARGV: taskId, workerId, ttlMs ('' = never expires), instance id, request id (hex, per call)
 * Returns nil when a live claim exists, else {token, claimedAt, expiresAt}. Idempotent per
 * request id: run again, it returns the claim its first run made instead of nil.
 */
const CLAIM_TASK = `${COMMON}
local now_ms, now_us = clock()
local raw = call('HGET', KEYS[1], 'c:' .. ARGV[1])
local c = parse_claim(raw)
if own_retry(c, ARGV[5], ARGV[2], now_ms) then return { c.token, c.at, c.exp } end
if is_live(c, now_ms) then return false end
local tok, at, exp = new_claim(KEYS[1], ARGV[1], raw, floor_of(KEYS[2]), ARGV[2], ARGV[3], ARGV[5], now_ms, now_us)
reindex(KEYS[3], KEYS[4], KEYS[1], ARGV[4], now_ms)
return { tok, at, exp }
`;

/** KEYS: instance hash, ready, leased. ARGV: taskId, workerId, instance id. */
const RELEASE_CLAIM = `${COMMON}
local c = parse_claim(call('HGET', KEYS[1], 'c:' .. ARGV[1]))
if not c then return 3 end
if c.worker ~= ARGV[2] then return 1 end
call('HSET', KEYS[1], 'c:' .. ARGV[1], c.token)
reindex(KEYS[2], KEYS[3], KEYS[1], ARGV[3], clock())
return 0
`;

/**
 * KEYS: instance hash, ready, leased. ARGV: taskId, workerId, durationMs, instance id.
 * Returns {status, token, claimedAt, expiresAt}.
 */
const EXTEND_CLAIM = `${COMMON}
local now_ms = clock()
local c = parse_claim(call('HGET', KEYS[1], 'c:' .. ARGV[1]))
if not c then return { 3 } end
if c.worker ~= ARGV[2] then return { 1 } end
if not is_live(c, now_ms) then return { 4 } end
if c.exp ~= '' then
  c.exp = fmt(now_ms + tonumber(ARGV[3]))
  call('HSET', KEYS[1], 'c:' .. ARGV[1], format_claim(c))
  reindex(KEYS[2], KEYS[3], KEYS[1], ARGV[4], now_ms)
end
return { 0, c.token, c.at, c.exp }
`;

/**
 * KEYS: ready set of the first shard (routing only).
 * ARGV: "{P:", limit, mode, then the shards to walk. Mode '0': the oldest entries of the ready
 *       sets as they are, flat {id, score, ...} (the candidates of a cluster's claim-next, whose
 *       claim scripts check each task themselves); '1': checked tasks, flat {id, taskId, score};
 *       '2': checked tasks with their inputs, flat {id, taskId, score, definitionHash, input}.
 * Oldest first. A checked entry found out of step with its instance (it cannot happen while
 * every write goes through these scripts) is re-indexed and replaced.
 */
const PEEK = `${COMMON}${WALK}
local now_ms = clock()
local pre, limit, mode = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local shards = shard_list(4)
local out = {}
if mode == '0' then
  for _, p in ipairs(oldest(pre, shards, limit, now_ms)) do
    out[#out + 1] = p.id; out[#out + 1] = p.score
  end
  return out
end
for round = 1, 8 do
  out = {}
  local bad = {}
  for _, p in ipairs(oldest(pre, shards, limit, now_ms)) do
    local key = pre .. p.s .. '}:m:' .. p.id
    local task = ready_task(key)
    if task and not is_live(parse_claim(call('HGET', key, 'c:' .. task)), now_ms) then
      out[#out + 1] = p.id; out[#out + 1] = task; out[#out + 1] = p.score
      if mode == '2' then
        local input, def = task_input(key)
        out[#out + 1] = def; out[#out + 1] = input
      end
    else
      bad[#bad + 1] = p
    end
  end
  if #bad == 0 then break end
  -- Not ready after all: re-indexing takes it out of the ready set, and the walk runs again.
  for _, p in ipairs(bad) do
    local base = pre .. p.s .. '}:'
    reindex(base .. 'ready', base .. 'leased', base .. 'm:' .. p.id, p.id, now_ms)
  end
end
return out
`;

/**
 * KEYS: the request record {P:K}:q:<request id>, K = the first shard walked.
 * ARGV: "{P:", limit, workerId, ttlMs ('' = none), request id (hex, per call), record ttl (ms),
 *       then the shards to walk.
 * Claims the oldest unclaimed ready tasks of those shards in one step: pops them from the ready
 * sets (ZPOPMIN takes exactly the picks of each shard, the first entries of its ready set) and
 * puts them in the lease sets. Per task 3 commands on the instance hash: its fields read, the
 * task's claim (and output, and the input when it is an output) read, the claim written.
 * Returns {json, input, input, ...}: json = a flat array of strings, 7 per task (id, taskId,
 * score, definitionHash, token, claimedAt, expiresAt), oldest first, then the inputs in the same
 * order as bulk strings (bytes). Idempotent per request id: what a run claimed is recorded in the
 * request record (shard, id, taskId joined by NUL, which ids cannot hold; it expires), and a
 * second run of the same request returns those claims (the ones still live and its own) instead
 * of claiming more.
 */
const CLAIM_NEXT = `${COMMON}${WALK}
local now_ms, now_us = clock()
local pre, limit, worker, ttl, req = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5]
local shards = shard_list(7)
local meta_out, inputs = {}, {}
local nm = 0
local function emit(id, task, score, def, input, tok, at, exp)
  meta_out[nm + 1] = id; meta_out[nm + 2] = task; meta_out[nm + 3] = score; meta_out[nm + 4] = def or ''
  meta_out[nm + 5] = tok; meta_out[nm + 6] = at; meta_out[nm + 7] = exp
  nm = nm + 7
  inputs[#inputs + 1] = input
end
local function reply()
  if nm == 0 then return { '[]' } end
  local out = { cjson.encode(meta_out) }
  for i = 1, #inputs do out[i + 1] = inputs[i] end
  return out
end
if req ~= '' then
  local done = call('GET', KEYS[1])
  if done then
    local parts = split_nul(done)
    for i = 1, #parts - 2, 3 do
      local id, task = parts[i + 1], parts[i + 2]
      local key = pre .. parts[i] .. '}:m:' .. id
      local c = parse_claim(call('HGET', key, 'c:' .. task))
      if own_retry(c, req, worker, now_ms) then
        local input, def = task_input(key)
        emit(id, task, call('HGET', key, 'u') or '0', def, input, c.token, c.at, c.exp)
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
local record, floors, leases, claimed = {}, {}, {}, 0
for round = 1, 8 do
  if claimed >= limit then break end
  local want = limit - claimed
  local picks
  if #shards == 1 then
    local s = shards[1]
    local base = pre .. s .. '}:'
    if round == 1 then expire_leases(base .. 'ready', base .. 'leased', base, now_ms) end
    local page = call('ZPOPMIN', base .. 'ready', want)
    picks = {}
    for i = 1, #page, 2 do picks[#picks + 1] = { s = s, id = page[i], score = page[i + 1] } end
  else
    picks = oldest(pre, shards, want, now_ms)
    local counts = {}
    for _, p in ipairs(picks) do counts[p.s] = (counts[p.s] or 0) + 1 end
    for s, n in pairs(counts) do call('ZPOPMIN', pre .. s .. '}:ready', n) end
  end
  if #picks == 0 then break end
  for _, p in ipairs(picks) do
    local id = p.id
    local key = pre .. p.s .. '}:m:' .. id
    local m = call('HMGET', key, 'f', 'p', 'l', 'i', 'd')
    local task = m[2]
    -- The task's claim, the input when it is an output, and the task's own output (there is
    -- none while the index is in step: the check keeps a stray entry from being claimed).
    local v = task and call('HMGET', key, 'c:' .. task, 'r:' .. (m[3] or ''), 'r:' .. task)
    local raw = v and v[1]
    if m[1] == '0' and task and not v[3] and not is_live(parse_claim(raw), now_ms) then
      local floor = floors[p.s]
      if floor == nil then
        floor = floor_of(pre .. p.s .. '}:floor')
        floors[p.s] = floor
      end
      -- token = max(last token of this (instance, task) + 1, shard floor + 1, now in microseconds)
      local tok_s = now_tok
      local tok = last_token(raw) + 1
      if floor + 1 > tok then tok = floor + 1 end
      if tok > now_us then tok_s = fmt(tok) end
      call('HSET', key, 'c:' .. task, tok_s .. tail)
      local input = m[3] and v[2]
      if not input then input = m[4] or '' end
      emit(id, task, p.score, m[5], input, tok_s, at_s, exp)
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
      local base = pre .. p.s .. '}:'
      reindex(base .. 'ready', base .. 'leased', key, id, now_ms)
    end
  end
end
for s, lease in pairs(leases) do call_chunked('ZADD', pre .. s .. '}:leased', lease) end
if req ~= '' and #record > 0 then
  call('SET', KEYS[1], table.concat(record, NUL), 'PX', ARGV[6])
end
return reply()
`;

/**
 * KEYS: ready set of the shard. ARGV: base, then instance ids.
 * For each id still ready and unclaimed: {id, taskId, definitionHash, input}.
 */
const SHARD_INPUTS = `${COMMON}
local now_ms = clock()
local base = ARGV[1]
local out = {}
for i = 2, #ARGV do
  local id = ARGV[i]
  local key = base .. 'm:' .. id
  local task = ready_task(key)
  if task and not is_live(parse_claim(call('HGET', key, 'c:' .. task)), now_ms) then
    local input, def = task_input(key)
    for _, v in ipairs({ id, task, def, input }) do out[#out + 1] = v end
  end
end
return out
`;

/**
 * KEYS: the ready set of the shard of the first completion (routing only).
 * ARGV: "{P:", request id (hex, per call), then a JSON array of strings, 4 per completion
 *       (shard, instance id, taskId, token), then the outputs in the same order (bytes).
 * Per completion, in order, the fenced saveTaskResult (NOT_FOUND, then CLAIM_LOST unless the live
 * claim on the task carries that token, then CONFLICT for a finished workflow; result,
 * lastCompletedTaskId, updatedAt = max(old, now), index) and the release of that claim: it
 * becomes a tombstone "token|request id". A refused completion writes nothing. Per completion 2
 * commands on the instance hash (one read, one write); per shard 2 (its finished tasks leave
 * both index sets at once).
 * Returns one status digit per completion. Repeat-safe per request id: run a second time (its
 * first reply lost, the command sent again), a completion whose claim is gone but whose tombstone
 * is this call's own answers 0 again, not CLAIM_LOST.
 */
const COMPLETE_TASKS = `${COMMON}
local pre, req = ARGV[1], ARGV[2]
local items = cjson.decode(ARGV[3])
local now_ms = clock()
local out, gone = {}, {}
for k = 1, #items / 4 do
  local j = 4 * k - 3
  local s, id, task, tok = items[j], items[j + 1], items[j + 2], items[j + 3]
  local key = pre .. s .. '}:m:' .. id
  local cfield = 'c:' .. task
  local m = call('HMGET', key, 'f', 'u', 'p', cfield)
  local status = '0'
  if not m[1] then
    status = '3'
  else
    local raw = m[4]
    local ctok, cexp
    if raw then ctok, cexp = string.match(raw, '^(%d+)|%d+|(%d*)|') end
    local tomb = tok .. '|' .. req
    if ctok ~= tok or (cexp ~= '' and tonumber(cexp) <= now_ms) then
      if raw ~= tomb or req == '' then status = '1' end
    elseif m[1] == '1' then
      status = '2'
    else
      local u = tonumber(m[2])
      if now_ms > u then u = now_ms end
      call('HSET', key, 'r:' .. task, ARGV[3 + k], 'l', task, 'u', fmt(u), cfield, tomb)
      if m[3] == task then
        -- Its position task has a result now: the instance is in neither index set.
        local ids = gone[s]
        if ids == nil then
          ids = {}
          gone[s] = ids
        end
        ids[#ids + 1] = id
      else
        local base = pre .. s .. '}:'
        reindex(base .. 'ready', base .. 'leased', key, id, now_ms)
      end
    end
  end
  out[k] = status
end
for s, ids in pairs(gone) do
  call_chunked('ZREM', pre .. s .. '}:leased', ids)
  call_chunked('ZREM', pre .. s .. '}:ready', ids)
end
return table.concat(out)
`;

/**
 * KEYS: the layout record {P:layout}.
 * ARGV: shard count given in the options ('' = none), default count, former default count, then
 *       keys whose existence shows a store written with the former default before the record
 *       existed.
 * Returns the shard count of the store, recording it on first use.
 */
const LAYOUT = `
local stored = redis.call('HGET', KEYS[1], 'shards')
if stored then return stored end
local n = ARGV[1]
if n == '' then
  n = ARGV[2]
  for i = 4, #ARGV do
    if redis.call('EXISTS', ARGV[i]) == 1 then
      n = ARGV[3]
      break
    end
  end
end
redis.call('HSET', KEYS[1], 'shards', n)
return n
`;

export const SCRIPTS = {
  sayiirSaveSnapshot: { numberOfKeys: 4, lua: SAVE_SNAPSHOT },
  sayiirSaveTaskResult: { numberOfKeys: 3, lua: SAVE_TASK_RESULT },
  sayiirLoadSnapshot: { numberOfKeys: 1, lua: LOAD_SNAPSHOT },
  sayiirDeleteSnapshot: { numberOfKeys: 5, lua: DELETE_SNAPSHOT },
  sayiirClaimTask: { numberOfKeys: 4, lua: CLAIM_TASK },
  sayiirReleaseClaim: { numberOfKeys: 3, lua: RELEASE_CLAIM },
  sayiirExtendClaim: { numberOfKeys: 3, lua: EXTEND_CLAIM },
  sayiirPeek: { numberOfKeys: 1, lua: PEEK },
  sayiirClaimNext: { numberOfKeys: 1, lua: CLAIM_NEXT },
  sayiirShardInputs: { numberOfKeys: 1, lua: SHARD_INPUTS },
  sayiirCompleteTasks: { numberOfKeys: 1, lua: COMPLETE_TASKS },
  sayiirLayout: { numberOfKeys: 1, lua: LAYOUT },
} as const;

export type ScriptName = keyof typeof SCRIPTS;

type Arg = string | Buffer | Uint8Array | number;
/** The client with the scripts defined on it (and their Buffer-returning variants). */
export type ScriptClient = {
  [K in ScriptName]: (...args: Arg[]) => Promise<unknown>;
} & {
  [K in ScriptName as `${K}Buffer`]: (...args: Arg[]) => Promise<unknown>;
};

/** Defines every script on the client (defining one again replaces it; the SHA stays the same). */
export function defineScripts(client: Redis | Cluster): ScriptClient {
  for (const [name, script] of Object.entries(SCRIPTS)) {
    client.defineCommand(name, { numberOfKeys: script.numberOfKeys, lua: script.lua });
  }
  return client as unknown as ScriptClient;
}
