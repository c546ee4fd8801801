import { L } from "../layout.js";
import { FINISH } from "./finish.js";
import { FILE, PRELUDE } from "./lua.js";

/** Fields per step in the JSON argument of completeSteps (see its comment). */
export const STEP_FIELDS = 23;

/** completeTasks with `next`: per step, the fenced result, the new header and position, the consumed event, the release. */
export const COMPLETE_STEPS = `--[[ completeSteps (completeTasks with next)
  KEYS[1] the ready set of the shard of the first step (routing only)
  ARGV[1] "{P:"   ARGV[2] request id (hex, one per call)
  ARGV[3] a JSON array of strings, ${STEP_FIELDS} per step:
    [1] shard  [2] instance id  [3] task id  [4] token
    as read by loadSteps: [5] SHA-1 (hex) of the header  [6] the next task asked about ('' =
    none)  [7] whether it had a result ('1'/'0')
    [8] the event to consume ('' = none)  [9] its sequence
    the step, computed by the kit's advanceHeader: [10] updatedAt  [11] status
    [12] finished ('1': Completed or Failed, no results kept)  [13] position task id (p)
    [14] the position's task (k)  [15] ready task id  [16] awaited event  [17] awaited task
    [18] timeoutAt  [19] queue  [20] priority  [21] ready-set offset  [22] runAt
    (each '' = none or the default)  [23] the ARGV index of the initial input to store when the
    instance has no field of its own for it ('' = none: the header read did not carry one)
  ARGV[4 + 2(k-1)] step k's output   ARGV[5 + 2(k-1)] step k's new header   ARGV[4 + 2n ..] initial inputs
  Per step, in order, one atomic step: the fence as completeTasks (SNAPSHOT_NOT_FOUND,
  FENCE_REJECTED, RESULTS_FINAL; this call's own tombstone: OK, a second run after a lost
  reply), then the instance must be as read (same header, same answer about the next task's
  result; else CHANGED, nothing written: read again), then the event must be the oldest pending
  of its name (EVENT_NOT_PENDING). Then, InProgress: the task's output, the header, status, l =
  the task, u = max(stored, [10]), the position, wait and schedule fields (those given empty are
  deleted), v = the due time (the later of runAt and the retryAt of the position task's attempts,
  'h' when that retryAt is null, as saveSnapshot computes it), the event consumed, the claim
  released to the tombstone "token|request id", and the instance filed (FILE) by its ready task
  or wait. Completed or Failed: every field but the claims, attempts, definition hash and
  initial input deleted (every output with them), then header, status, f = 1, u and the
  tombstone, and the finish time ${L.finishedAt} = Redis's now (the step is what finishes the
  workflow: a finished one was refused above), filed in the shard's finish-time index; the
  events dropped; out of every set. Other outputs are never read: the instance
  hash is read by HMGET of named fields, HEXISTS of the next task's output, and HKEYS (field
  names) when the workflow finishes.
  Returns one code per step, joined by ',': OK, SNAPSHOT_NOT_FOUND, FENCE_REJECTED,
  RESULTS_FINAL, CHANGED or EVENT_NOT_PENDING, checked in that order.
]]
${PRELUDE}${FILE}${FINISH}
local pre, req = ARGV[1], ARGV[2]
local items = cjson.decode(ARGV[3])
local now_ms = clock()
-- The due field of a position: its runAt, or the later of it and the retryAt of its task's
-- attempts \`a\` ("count|lastFailedAt|retryAt|error"), 'h' when that retryAt is null (held).
local function due_of(run_at, a)
  local r = a and string.match(a, '^%d+|%d*|([^|]*)|')
  if r == 'n' then return 'h' end
  if r and r ~= '' then
    if run_at and tonumber(run_at) > tonumber(r) then return run_at end
    return r
  end
  return run_at
end
local function opt(v) if v == '' then return nil end return v end
-- nil when the step may be written, else its code (the event: its order member in \`consumed\`).
local function check(key, base, id, m, f)
  local code = item_fence(m[1], m[2], f[4], req, now_ms)
  if code == 'again' then return OK end
  if code ~= OK then return code end
  if redis.sha1hex(m[3]) ~= f[5] then return CHANGED end
  if f[6] ~= '' and tostring(call('HEXISTS', key, ${L.result} .. f[6])) ~= f[7] then return CHANGED end
  if f[8] ~= '' then
    local member = oldest_event(base, id, f[8])
    if not member or tonumber(member_seq(member, f[8])) ~= tonumber(f[9]) then return EVENT_NOT_PENDING end
    return nil, member
  end
  return nil
end
-- InProgress: this output, the header and the position's fields; the instance filed again.
local function advance(key, base, id, m, f, k, tomb, consumed)
  local u = tonumber(f[10])
  if m[4] and tonumber(m[4]) > u then u = tonumber(m[4]) end
  local due = due_of(opt(f[22]), m[8])
  local set = { ${L.result} .. f[3], ARGV[2 + 2 * k], ${L.header}, ARGV[3 + 2 * k], ${L.status}, f[11],
    ${L.finished}, '0', ${L.lastCompletedTaskId}, f[3], ${L.updatedAt}, fmt(u), ${L.claim} .. f[3], tomb }
  -- The position's fields (m[j] as stored): set when given, deleted when stored and now empty.
  local del = {}
  local named = { ${L.positionTaskId}, f[13], 9, ${L.positionTask}, f[14], 10, ${L.awaitedEvent}, f[16], 11,
    ${L.awaitedTask}, f[17], 12, ${L.timeoutAt}, f[18], 6, ${L.queue}, f[19], 5, ${L.priority}, f[20], 13,
    ${L.offset}, f[21], 14, ${L.runAt}, f[22], 15, ${L.due}, due or '', 7 }
  for i = 1, #named, 3 do
    if named[i + 1] ~= '' then
      set[#set + 1] = named[i]; set[#set + 1] = named[i + 1]
    elseif m[named[i + 2]] then
      del[#del + 1] = named[i]
    end
  end
  if f[23] ~= '' and call('HEXISTS', key, ${L.initialInput}) == 0 then
    set[#set + 1] = ${L.initialInput}; set[#set + 1] = ARGV[tonumber(f[23])]
  end
  if #del > 0 then call('HDEL', key, unpack(del)) end
  call('HSET', key, unpack(set))
  if consumed then
    call('ZREM', base .. ${L.eventOrder} .. id, consumed)
    call('HDEL', base .. ${L.events} .. id, member_seq(consumed, f[8]))
  end
  file_position(base, key, id, m[5], m[6] or m[7], {
    ready = opt(f[15]), wait = opt(f[16]), wait_task = f[17], timeout = opt(f[18]), updated = fmt(u),
    q = opt(f[19]), z = tonumber(opt(f[21]) or '0'), due = due,
  }, now_ms)
end
-- Completed or Failed: as a finished saveSnapshot, no results, no events, in no set.
local function finish(key, base, id, m, f, k, tomb)
  local u = tonumber(f[10])
  if m[4] and tonumber(m[4]) > u then u = tonumber(m[4]) end
  local gone = {}
  for _, field in ipairs(call('HKEYS', key)) do
    if string.sub(field, 1, #${L.claim}) ~= ${L.claim} and string.sub(field, 1, #${L.attempts}) ~= ${L.attempts}
      and field ~= ${L.definitionHash} and field ~= ${L.initialInput} then
      gone[#gone + 1] = field
    end
  end
  call_chunked('HDEL', key, gone)
  local at = fmt(now_ms)
  local set = { ${L.header}, ARGV[3 + 2 * k], ${L.status}, f[11], ${L.finished}, '1', ${L.updatedAt}, fmt(u),
    ${L.claim} .. f[3], tomb, ${L.finishedAt}, at }
  if f[23] ~= '' and call('HEXISTS', key, ${L.initialInput}) == 0 then
    set[#set + 1] = ${L.initialInput}; set[#set + 1] = ARGV[tonumber(f[23])]
  end
  call('HSET', key, unpack(set))
  index_finish(base, id, at)
  drop_events(base, id)
  file_position(base, key, id, m[5], m[6] or m[7], { updated = fmt(u), z = 0 }, now_ms)
end
local out = {}
for k = 1, #items / ${STEP_FIELDS} do
  local j = ${STEP_FIELDS} * (k - 1)
  local f = {}
  for i = 1, ${STEP_FIELDS} do f[i] = items[j + i] end
  local base = pre .. f[1] .. ${L.tagEnd}
  local id = f[2]
  local key = base .. ${L.instance} .. id
  local m = call('HMGET', key, ${L.finished}, ${L.claim} .. f[3], ${L.header}, ${L.updatedAt}, ${L.queue},
    ${L.timeoutAt}, ${L.due}, ${L.attempts} .. f[14], ${L.positionTaskId}, ${L.positionTask}, ${L.awaitedEvent},
    ${L.awaitedTask}, ${L.priority}, ${L.offset}, ${L.runAt})
  local code, consumed = check(key, base, id, m, f)
  if code == nil then
    local tomb = f[4] .. '|' .. req
    if f[12] == '1' then finish(key, base, id, m, f, k, tomb)
    else advance(key, base, id, m, f, k, tomb, consumed) end
    code = OK
  end
  out[k] = code
end
return table.concat(out, ',')
`;
