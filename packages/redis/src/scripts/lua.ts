import { L } from "../layout.js";
import { LUA_CODES } from "./codes.js";

/*
 * Lua shared by the scripts. Every script starts with its own comment (KEYS, ARGV, reply), then
 * the parts it uses of these: PRELUDE (result codes, claim helpers, pending events, the index
 * upkeep: ready, lease and timer sets), WALK (the merge of several shards' ready sets),
 * CONTROL (the as-read check of cancel, pause and resume) and FILE (where saveSnapshot and a
 * step of completeTasks file an instance by its new position). Key and field names come from
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
-- The fence of one item of completeTasks / failTasks: \`finished\` (the instance's finished flag,
-- false when there is no instance) and \`raw\` (the task's claim field) against the caller's token
-- \`tok\`. A dead or other claim is refused unless the field is this very request's tombstone (the
-- script running a second time, after a lost reply): then 'again', answered OK without writing.
local function item_fence(finished, raw, tok, req, now_ms)
  if not finished then return SNAPSHOT_NOT_FOUND end
  local ctok, cexp
  if raw then ctok, cexp = string.match(raw, '^(%d+)|%d+|(%d*)|') end
  if ctok ~= tok or (cexp ~= '' and tonumber(cexp) <= now_ms) then
    if raw ~= tok .. '|' .. req or req == '' then return FENCE_REJECTED end
    return 'again'
  end
  if finished == '1' then return RESULTS_FINAL end
  return OK
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
-- The ready set of queue \`q\` of a shard (nil: "default", whose set is the shard's ${L.ready}).
local function ready_of(base, q)
  if not q or q == 'default' then return base .. ${L.ready} end
  return base .. ${L.queueReady} .. q
end
-- The timer set of queue \`q\` of a shard (nil: "default", whose set is the shard's ${L.timers}).
local function timers_of(base, q)
  if not q or q == 'default' then return base .. ${L.timers} end
  return base .. ${L.queueTimers} .. q
end
-- A task with a due field (${L.due}: runAt or retryAt, or 'h' = held) that would be ready at
-- \`at\`: (task, readyAt) when due by now, (nil, due) when not yet (its timer's score), nil when held.
local function due_readiness(task, due, at, now_ms)
  if not due then return task, at end
  if due == 'h' then return nil end
  if tonumber(due) > now_ms then return nil, due end
  return task, due
end
-- What an instance could run now, claims aside: its task and readyAt, whether it is a wait, for
-- a wait the event member it carries (false: it timed out), and its schedule {q = queue (nil:
-- default), z = ready-set offset, timed = it may be in the timer set}. Only InProgress instances
-- have a position task (p) or a wait (w).
local function readiness(base, key, id, now_ms)
  local v = call('HMGET', key, ${L.finished}, ${L.positionTaskId}, ${L.updatedAt}, ${L.awaitedEvent}, ${L.awaitedTask}, ${L.timeoutAt}, ${L.queue}, ${L.offset}, ${L.due})
  local sched = { q = v[7], z = tonumber(v[8] or '0'), timed = v[9] ~= nil or v[6] ~= nil }
  if v[1] ~= '0' then return nil, nil, false, nil, sched end
  if v[2] then
    if call('HEXISTS', key, ${L.result} .. v[2]) == 1 then return nil, nil, false, nil, sched end
    local task, at = due_readiness(v[2], v[9], v[3], now_ms)
    return task, at, false, nil, sched
  end
  if not v[4] then return nil, nil, false, nil, sched end
  local task, score, member = wait_readiness(base, key, id, v[4], v[5], v[6], v[3], now_ms)
  if task then task, score = due_readiness(task, v[9], score, now_ms) end
  return task, score, true, member, sched
end
-- Wake-ups (wake-ups.ts): a call that files a task into a ready or timer set, or moves it there,
-- publishes the task's queue on the channel "{P:wake}" (built from the shard's base "{P:K}:"),
-- each queue once per call and kind, so idle workers look again: '+' and the queue when the task
-- is in a ready set (claimable now: its waiters need not look first), '~' and the queue when it is
-- in a timer set (its due time moved). \`changed\`: ZADD CH's count (0: the entry was there with
-- that score already, nobody needs to look). Claim scripts set woken to false: taking a task (or
-- promoting a due timer on the way) makes nothing newly claimable.
local woken = {}
local function wake(base, q, changed, kind)
  if changed == 0 or not woken then return end
  q = kind .. (q or 'default')
  if woken[q] then return end
  woken[q] = true
  -- pcall: a user whose ACL does not allow the channel still writes (a wake-up is a hint, and a
  -- failing PUBLISH after the writes above would report a failure for a write that landed).
  redis.pcall('PUBLISH', string.sub(base, 1, string.find(base, ':%d+}:$')) .. ${L.wakeTail}, q)
end
-- Keeps the instance in step with its shard's indexes, given its readiness: in its queue's ready
-- set (score = readyAt + offset) when its task holds no live claim, in the lease set (score =
-- claim expiry, +inf without ttl) when it does, in neither when it has no ready task. An instance
-- that will be ready at a known time (a wait's timeout, a runAt, a retryAt) is in the timer set
-- (score = that time); other timed ones (sched.timed) out of it; the rest never enter it. A new
-- or moved ready or timer entry wakes its queue's listeners.
local function place(base, key, id, task, score, waiting, now_ms, sched)
  if waiting or sched.timed then
    if not task and score then wake(base, sched.q, call('ZADD', timers_of(base, sched.q), 'CH', score, id), '~')
    else call('ZREM', timers_of(base, sched.q), id) end
  end
  local ready = ready_of(base, sched.q)
  if not task then
    call('ZREM', ready, id)
    call('ZREM', base .. ${L.leased}, id)
    return
  end
  local c = parse_claim(call('HGET', key, ${L.claim} .. task))
  if is_live(c, now_ms) then
    call('ZREM', ready, id)
    local lease = '+inf'
    if c.exp ~= '' then lease = c.exp end
    call('ZADD', base .. ${L.leased}, lease, id)
  else
    call('ZREM', base .. ${L.leased}, id)
    if sched.z ~= 0 then score = fmt(tonumber(score) + sched.z) end
    wake(base, sched.q, call('ZADD', ready, 'CH', score, id), '+')
  end
end
-- place, with the readiness read from the instance.
local function reindex(base, key, id, now_ms)
  local task, score, waiting, _, sched = readiness(base, key, id, now_ms)
  place(base, key, id, task, score, waiting, now_ms, sched)
end
-- An instance out of every index of its shard (its queue's ready and timer sets, the lease set).
local function unindex(base, key, id)
  local q = call('HGET', key, ${L.queue})
  call('ZREM', ready_of(base, q), id)
  call('ZREM', base .. ${L.leased}, id)
  call('ZREM', timers_of(base, q), id)
end
-- Attempts "count|lastFailedAt|retryAt|error" (lastFailedAt '' = null; retryAt '' = absent,
-- 'n' = null; error '' = null, else '=' .. text): the attempt number of the next run, and the
-- value after one more run that ended without a result (a takeover: the rest stays).
local function attempt_of(a)
  if not a then return '1' end
  return fmt(tonumber(string.match(a, '^(%d+)')) + 1)
end
local function bump(a)
  if not a then return '1|||' end
  local n, rest = string.match(a, '^(%d+)(|.*)$')
  return fmt(tonumber(n) + 1) .. rest
end
-- Attempt, priority and queue of a ready task, as reply strings.
local function schedule_out(key, task)
  local v = call('HMGET', key, ${L.attempts} .. task, ${L.priority}, ${L.queue})
  return attempt_of(v[1]), v[2] or '3', v[3] or 'default'
end
-- Leases that expired by now go back to the ready set (each expiry is handled once).
local function expire_leases(base, now_ms)
  local due = call('ZRANGEBYSCORE', base .. ${L.leased}, '-inf', now_ms)
  for _, id in ipairs(due) do
    reindex(base, base .. ${L.instance} .. id, id, now_ms)
  end
end
-- Every timer of the queues served that came due by now leaves its queue's timer set for its
-- ready set, score = that time + offset (or for the lease set when its task holds a live claim;
-- an entry out of step with its instance just leaves). All of them, not a page: a due entry's
-- ready score (due + offset) may beat any entry already ready, whatever its priority, so the
-- ready set reads in effective-time order only once none is left behind. Each entry moves once.
local function promote_timers(base, queues, now_ms)
  for _, q in ipairs(queues) do
    local k = timers_of(base, q)
    local due = call('ZRANGEBYSCORE', k, '-inf', now_ms)
    if #due > 0 then
      call_chunked('ZREM', k, due)
      for _, id in ipairs(due) do
        reindex(base, base .. ${L.instance} .. id, id, now_ms)
      end
    end
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
 * Filing an instance after a write that sets its position (after PRELUDE): saveSnapshot and a
 * step of completeTasks. \`pos\` is the new position's index fields: ready = its ready task (nil:
 * none), wait = the awaited event (nil: none) with wait_task and timeout (ms string, nil: none),
 * updated = updatedAt (ms string), q = queue (nil: "default"), z = ready-set offset (number),
 * due = the due field (ms string or 'h', nil: none). \`old_q\` is the queue the instance was in,
 * \`was_timed\` whether it may have been in a timer set (it had a timeoutAt or a due field).
 */
export const FILE = `
-- Out of the old queue's sets when it moved; then in its queue's ready (or the lease) set, or in
-- its queue's timer set while its due time (or a wait's timeout, with no event pending) is to
-- come, or in none (paused, finished, held, a wait with nothing to wake it).
local function file_position(base, key, id, old_q, was_timed, pos, now_ms)
  local sched = { q = pos.q, z = pos.z, timed = pos.due ~= nil or pos.timeout ~= nil }
  if (old_q or 'default') ~= (pos.q or 'default') then
    call('ZREM', ready_of(base, old_q), id)
    call('ZREM', timers_of(base, old_q), id)
  end
  if pos.ready then
    local task, at = due_readiness(pos.ready, pos.due, pos.updated, now_ms)
    place(base, key, id, task, at, false, now_ms, sched)
  elseif pos.wait then
    local task, score = wait_readiness(base, key, id, pos.wait, pos.wait_task, pos.timeout, pos.updated, now_ms)
    if task then task, score = due_readiness(task, pos.due, score, now_ms) end
    place(base, key, id, task, score, true, now_ms, sched)
  else
    place(base, key, id, nil, nil, false, now_ms, sched)
  end
  -- It was timed and is not now.
  if was_timed and not sched.timed then call('ZREM', timers_of(base, pos.q), id) end
end
`;

/*
 * Shard walk of peek and claim-next over one or several shards. Each shard's expired leases go
 * back to its ready set first, and the due timers of the queues served join theirs; then the
 * oldest entries of the ready sets are merged by
 * (updatedAt, instance id in byte order), which is the order of ZRANGE inside one shard, so the
 * picks of one shard are always the first entries of its ready set. An instance whose ready task
 * holds a live claim is in the lease set, not in the ready set, so nothing is walked past:
 * O(log n + limit + expired + due timers of the queues served) per shard. Lua's "<" on strings follows the server's locale
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
-- Up to \`limit\` picks {s = shard, k = ready set, id = id, score = score string}, first by
-- (score, id) first, over the ready sets of \`queues\` in \`shards\`.
local function oldest(pre, shards, queues, limit, now_ms)
  local heads = {}
  for _, s in ipairs(shards) do
    local base = shard_base(pre, s)
    expire_leases(base, now_ms)
    promote_timers(base, queues, now_ms)
    for _, q in ipairs(queues) do
      local k = ready_of(base, q)
      heads[#heads + 1] = { s = s, k = k, page = call('ZRANGE', k, 0, limit - 1, 'WITHSCORES'), i = 1 }
    end
  end
  local picks = {}
  if #heads == 1 then
    local h = heads[1]
    for i = 1, #h.page, 2 do picks[#picks + 1] = { s = h.s, k = h.k, id = h.page[i], score = h.page[i + 1] } end
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
    picks[#picks + 1] = { s = best.s, k = best.k, id = best.page[best.i], score = best.page[best.i + 1] }
    best.i = best.i + 2
  end
  return picks
end
-- ARGV[from] = n, ARGV[from + 1 .. from + n] = the queues served, ARGV[from + n + 1 ..] = the shards.
local function queues_and_shards(from)
  local n, queues, shards = tonumber(ARGV[from]), {}, {}
  for i = from + 1, from + n do queues[#queues + 1] = ARGV[i] end
  for i = from + n + 1, #ARGV do shards[#shards + 1] = ARGV[i] end
  return queues, shards
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
