import type { Cluster, Redis } from "ioredis";

/*
 * Every state change is one Lua script, loaded once and called by SHA (ioredis defineCommand
 * sends EVALSHA and falls back to EVAL on NOSCRIPT). Every script touches the keys of one shard
 * only, so of one Cluster slot. Instance scripts get all their keys in KEYS; shard scripts
 * (peek, claim-next, inputs) get the shard's ready set in KEYS (which routes them to the right
 * node) and build the per-instance keys of the same shard from `base` = "{P:K}:".
 *
 * Time is Redis's own: TIME inside the script (Redis 7 replicates the effects of scripts, so a
 * non-deterministic command before a write is allowed). Numbers pass through Lua as doubles
 * (exact below 2^53) and are turned into strings with %.0f, never tostring (which gives "1e+15").
 */

/** Status codes returned by the scripts. */
export const Status = { ok: 0, claimLost: 1, conflict: 2, notFound: 3, expired: 4 } as const;

const COMMON = `
local function clock()
  local t = redis.call('TIME')
  local s, us = tonumber(t[1]), tonumber(t[2])
  return s * 1000 + math.floor(us / 1000), s * 1000000 + us
end
local function fmt(n) return string.format('%.0f', n) end
local function is_live(c, now_ms)
  return c ~= nil and (c.exp == '' or tonumber(c.exp) > now_ms)
end
-- A claim is "token|claimedAt|expiresAt|requestId|workerId" (the worker id last: it may hold "|").
local function parse_claim(v)
  if not v then return nil end
  local tok, at, exp, req, worker = string.match(v, '^(%d+)|(%d+)|(%d*)|(%x*)|(.*)$')
  if not tok then return nil end
  return { token = tok, at = at, exp = exp, req = req, worker = worker }
end
local function format_claim(c)
  return c.token .. '|' .. c.at .. '|' .. c.exp .. '|' .. c.req .. '|' .. c.worker
end
-- The live claim that this very call (same request id, same worker) already made: the call is
-- running a second time (its first reply was lost and the command was sent again).
local function own_retry(c, req, worker, now_ms)
  return is_live(c, now_ms) and req ~= '' and c.req == req and c.worker == worker
end
-- A new claim: token = max(last token of this (instance, task) + 1, shard floor + 1, server
-- time in microseconds), so tokens keep growing after a release, an expiry and a delete.
local function new_claim(claims_key, counters_key, floor_key, task, worker, ttl, req, now_ms, now_us)
  local tok = tonumber(redis.call('HGET', counters_key, task) or '0') + 1
  local floor = tonumber(redis.call('GET', floor_key) or '0') + 1
  if floor > tok then tok = floor end
  if now_us > tok then tok = now_us end
  local exp = ''
  if ttl ~= '' then exp = fmt(now_ms + tonumber(ttl)) end
  local tok_s, at_s = fmt(tok), fmt(now_ms)
  redis.call('HSET', counters_key, task, tok_s)
  redis.call('HSET', claims_key, task, format_claim({ token = tok_s, at = at_s, exp = exp, req = req, worker = worker }))
  return tok_s, at_s, exp
end
-- The ready task of an instance: InProgress, at a task that has no result yet (claims aside).
local function ready_task(meta_key, results_key)
  local v = redis.call('HMGET', meta_key, 'f', 'p')
  if v[1] ~= '0' or not v[2] then return nil end
  if redis.call('HEXISTS', results_key, v[2]) == 1 then return nil end
  return v[2]
end
-- Keeps the instance in step with the shard's indexes: in the ready set (score updatedAt) when
-- its ready task holds no live claim, in the lease set (score = claim expiry, +inf without ttl)
-- when it does, in neither when it has no ready task.
local function reindex(ready_key, leased_key, meta_key, results_key, claims_key, id, now_ms)
  local task = ready_task(meta_key, results_key)
  if not task then
    redis.call('ZREM', ready_key, id)
    redis.call('ZREM', leased_key, id)
    return
  end
  local c = parse_claim(redis.call('HGET', claims_key, task))
  if is_live(c, now_ms) then
    redis.call('ZREM', ready_key, id)
    local score = '+inf'
    if c.exp ~= '' then score = c.exp end
    redis.call('ZADD', leased_key, score, id)
  else
    redis.call('ZREM', leased_key, id)
    redis.call('ZADD', ready_key, redis.call('HGET', meta_key, 'u'), id)
  end
end
-- Leases that expired by now go back to the ready set (each expiry is handled once).
local function expire_leases(ready_key, leased_key, base, now_ms)
  local due = redis.call('ZRANGEBYSCORE', leased_key, '-inf', now_ms)
  for _, id in ipairs(due) do
    reindex(ready_key, leased_key, base .. 'm:' .. id, base .. 'r:' .. id, base .. 'c:' .. id, id, now_ms)
  end
end
-- Input of the ready task: last completed output, else the initial input, else empty bytes.
local function task_input(meta_key, results_key)
  local v = redis.call('HMGET', meta_key, 'l', 'i', 'd')
  if v[1] then
    local out = redis.call('HGET', results_key, v[1])
    if out then return out, v[3] end
  end
  if v[2] then return v[2], v[3] end
  return '', v[3]
end
local function fence_ok(claims_key, task, token, now_ms)
  if token == '' then return true end
  local c = parse_claim(redis.call('HGET', claims_key, task))
  return is_live(c, now_ms) and c.token == token
end
`;

/**
 * KEYS: meta, results, claims, ready, ids, leased
 * ARGV: id, header, finished, definitionHash, hasPosition, positionTaskId, hasLast, last,
 *       updatedAt, hasInitial, initialInput, fenceTask, fenceToken ('' = none), then task/output pairs.
 */
const SAVE_SNAPSHOT = `${COMMON}
local now_ms = clock()
if not fence_ok(KEYS[3], ARGV[12], ARGV[13], now_ms) then return 1 end
if ARGV[3] == '0' and redis.call('HGET', KEYS[1], 'f') == '1' then return 2 end
redis.call('DEL', KEYS[1], KEYS[2])
local fields = { 'h', ARGV[2], 'f', ARGV[3], 'd', ARGV[4], 'u', ARGV[9] }
if ARGV[5] == '1' then fields[#fields + 1] = 'p'; fields[#fields + 1] = ARGV[6] end
if ARGV[7] == '1' then fields[#fields + 1] = 'l'; fields[#fields + 1] = ARGV[8] end
if ARGV[10] == '1' then fields[#fields + 1] = 'i'; fields[#fields + 1] = ARGV[11] end
redis.call('HSET', KEYS[1], unpack(fields))
local n = #ARGV
for i = 14, n, 200 do
  local last = i + 199
  if last > n then last = n end
  redis.call('HSET', KEYS[2], unpack(ARGV, i, last))
end
redis.call('ZADD', KEYS[5], 0, ARGV[1])
reindex(KEYS[4], KEYS[6], KEYS[1], KEYS[2], KEYS[3], ARGV[1], now_ms)
return 0
`;

/**
 * KEYS: meta, results, claims, ready, leased
 * ARGV: id, taskId, output, fenceTask, fenceToken ('' = none)
 */
const SAVE_TASK_RESULT = `${COMMON}
if redis.call('EXISTS', KEYS[1]) == 0 then return 3 end
local now_ms = clock()
if not fence_ok(KEYS[3], ARGV[4], ARGV[5], now_ms) then return 1 end
if redis.call('HGET', KEYS[1], 'f') == '1' then return 2 end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
local u = tonumber(redis.call('HGET', KEYS[1], 'u'))
if now_ms > u then u = now_ms end
redis.call('HSET', KEYS[1], 'l', ARGV[2], 'u', fmt(u))
reindex(KEYS[4], KEYS[5], KEYS[1], KEYS[2], KEYS[3], ARGV[1], now_ms)
return 0
`;

/** KEYS: meta, results. Returns {meta fields, results} as two flat arrays, read at one instant. */
const LOAD_SNAPSHOT = `
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
return { redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2]) }
`;

/**
 * KEYS: meta, results, claims, counters, ready, ids, floor, leased
 * ARGV: id
 * The highest token of the instance is kept in the shard's floor, so a re-created instance
 * never issues a token that an old claim already holds.
 */
const DELETE_SNAPSHOT = `${COMMON}
if redis.call('EXISTS', KEYS[1]) == 0 then return 3 end
local hi = tonumber(redis.call('GET', KEYS[7]) or '0')
for _, v in ipairs(redis.call('HVALS', KEYS[4])) do
  local n = tonumber(v)
  if n and n > hi then hi = n end
end
redis.call('SET', KEYS[7], fmt(hi))
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
redis.call('ZREM', KEYS[5], ARGV[1])
redis.call('ZREM', KEYS[6], ARGV[1])
redis.call('ZREM', KEYS[8], ARGV[1])
return 0
`;

/**
 * KEYS: claims, counters, floor, meta, results, ready, leased
 * ARGV: taskId, workerId, ttlMs ('' = never expires), instance id, request id (hex, per call)
 * Returns nil when a live claim exists, else {token, claimedAt, expiresAt}. Idempotent per
 * request id: run again, it returns the claim its first run made instead of nil.
 */
const CLAIM_TASK = `${COMMON}
local now_ms, now_us = clock()
local c = parse_claim(redis.call('HGET', KEYS[1], ARGV[1]))
if own_retry(c, ARGV[5], ARGV[2], now_ms) then return { c.token, c.at, c.exp } end
if is_live(c, now_ms) then return false end
local tok, at, exp = new_claim(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3], ARGV[5], now_ms, now_us)
reindex(KEYS[6], KEYS[7], KEYS[4], KEYS[5], KEYS[1], ARGV[4], now_ms)
return { tok, at, exp }
`;

/** KEYS: claims, meta, results, ready, leased. ARGV: taskId, workerId, instance id. */
const RELEASE_CLAIM = `${COMMON}
local c = parse_claim(redis.call('HGET', KEYS[1], ARGV[1]))
if not c then return 3 end
if c.worker ~= ARGV[2] then return 1 end
redis.call('HDEL', KEYS[1], ARGV[1])
reindex(KEYS[4], KEYS[5], KEYS[2], KEYS[3], KEYS[1], ARGV[3], clock())
return 0
`;

/**
 * KEYS: claims, meta, results, ready, leased. ARGV: taskId, workerId, durationMs, instance id.
 * Returns {status, token, claimedAt, expiresAt}.
 */
const EXTEND_CLAIM = `${COMMON}
local now_ms = clock()
local c = parse_claim(redis.call('HGET', KEYS[1], ARGV[1]))
if not c then return { 3 } end
if c.worker ~= ARGV[2] then return { 1 } end
if not is_live(c, now_ms) then return { 4 } end
if c.exp ~= '' then
  c.exp = fmt(now_ms + tonumber(ARGV[3]))
  redis.call('HSET', KEYS[1], ARGV[1], format_claim(c))
  reindex(KEYS[4], KEYS[5], KEYS[2], KEYS[3], KEYS[1], ARGV[4], now_ms)
end
return { 0, c.token, c.at, c.exp }
`;

/*
 * Shard walk shared by peek and claim-next. Expired leases go back to the ready set first; then
 * the oldest `limit` entries of the ready set are the answer (an instance whose ready task holds
 * a live claim is in the lease set, not here, so nothing is skipped: O(log n + limit + expired)).
 * The claim check stays as a safeguard. Returns {id, task, score} triples.
 */
const WALK = `
local function walk(ready_key, leased_key, base, limit, now_ms)
  expire_leases(ready_key, leased_key, base, now_ms)
  local hits, offset = {}, 0
  while #hits < limit do
    local page = redis.call('ZRANGE', ready_key, offset, offset + limit - 1, 'WITHSCORES')
    if #page == 0 then break end
    for i = 1, #page, 2 do
      local id = page[i]
      local task = redis.call('HGET', base .. 'm:' .. id, 'p')
      if task and not is_live(parse_claim(redis.call('HGET', base .. 'c:' .. id, task)), now_ms) then
        hits[#hits + 1] = { id, task, page[i + 1] }
        if #hits >= limit then break end
      end
    end
    offset = offset + limit
  end
  return hits
end
`;

/**
 * KEYS: ready set, lease set of the shard. ARGV: base, limit.
 * Returns flat {id, taskId, score, ...} of the oldest unclaimed ready tasks of the shard.
 */
const PEEK_SHARD = `${COMMON}${WALK}
local out = {}
for _, hit in ipairs(walk(KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[2]), clock())) do
  out[#out + 1] = hit[1]; out[#out + 1] = hit[2]; out[#out + 1] = hit[3]
end
return out
`;

/**
 * KEYS: ready set, lease set, floor of the shard.
 * ARGV: base, limit, workerId, ttlMs ('' = none), request id (hex, per call), request record ttl (ms).
 * Claims the oldest unclaimed ready tasks of the shard in one step (each moves to the lease set).
 * Returns flat {id, taskId, score, definitionHash, input, token, claimedAt, expiresAt, ...}.
 * Idempotent per request id: what a run claimed is recorded in {P:K}:q:<request id> (a list of
 * id, taskId pairs that expires), and a second run of the same request returns those claims
 * (the ones still live and its own) instead of claiming more.
 */
const CLAIM_SHARD = `${COMMON}${WALK}
local now_ms, now_us = clock()
local base, worker, req = ARGV[1], ARGV[3], ARGV[5]
local req_key = base .. 'q:' .. req
local out = {}
local function emit(id, task, score, tok, at, exp)
  local input, def = task_input(base .. 'm:' .. id, base .. 'r:' .. id)
  for _, v in ipairs({ id, task, score, def, input, tok, at, exp }) do out[#out + 1] = v end
end
if req ~= '' and redis.call('EXISTS', req_key) == 1 then
  local done = redis.call('LRANGE', req_key, 0, -1)
  for i = 1, #done - 1, 2 do
    local id, task = done[i], done[i + 1]
    local c = parse_claim(redis.call('HGET', base .. 'c:' .. id, task))
    if own_retry(c, req, worker, now_ms) then
      emit(id, task, redis.call('HGET', base .. 'm:' .. id, 'u') or '0', c.token, c.at, c.exp)
    end
  end
  return out
end
local record = {}
for _, hit in ipairs(walk(KEYS[1], KEYS[2], base, tonumber(ARGV[2]), now_ms)) do
  local id, task, score = hit[1], hit[2], hit[3]
  local meta, results, claims = base .. 'm:' .. id, base .. 'r:' .. id, base .. 'c:' .. id
  local tok, at, exp = new_claim(claims, base .. 'n:' .. id, KEYS[3], task, worker, ARGV[4], req, now_ms, now_us)
  reindex(KEYS[1], KEYS[2], meta, results, claims, id, now_ms)
  emit(id, task, score, tok, at, exp)
  record[#record + 1] = id; record[#record + 1] = task
end
if req ~= '' and #record > 0 then
  for i = 1, #record, 200 do
    local last = i + 199
    if last > #record then last = #record end
    redis.call('RPUSH', req_key, unpack(record, i, last))
  end
  redis.call('PEXPIRE', req_key, ARGV[6])
end
return out
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
  local meta, results = base .. 'm:' .. id, base .. 'r:' .. id
  local task = ready_task(meta, results)
  if task and not is_live(parse_claim(redis.call('HGET', base .. 'c:' .. id, task)), now_ms) then
    local input, def = task_input(meta, results)
    for _, v in ipairs({ id, task, def, input }) do out[#out + 1] = v end
  end
end
return out
`;

export const SCRIPTS = {
  sayiirSaveSnapshot: { numberOfKeys: 6, lua: SAVE_SNAPSHOT },
  sayiirSaveTaskResult: { numberOfKeys: 5, lua: SAVE_TASK_RESULT },
  sayiirLoadSnapshot: { numberOfKeys: 2, lua: LOAD_SNAPSHOT },
  sayiirDeleteSnapshot: { numberOfKeys: 8, lua: DELETE_SNAPSHOT },
  sayiirClaimTask: { numberOfKeys: 7, lua: CLAIM_TASK },
  sayiirReleaseClaim: { numberOfKeys: 5, lua: RELEASE_CLAIM },
  sayiirExtendClaim: { numberOfKeys: 5, lua: EXTEND_CLAIM },
  sayiirPeekShard: { numberOfKeys: 2, lua: PEEK_SHARD },
  sayiirClaimShard: { numberOfKeys: 3, lua: CLAIM_SHARD },
  sayiirShardInputs: { numberOfKeys: 1, lua: SHARD_INPUTS },
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
