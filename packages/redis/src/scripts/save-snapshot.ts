import { L } from "../layout.js";
import { FINISH } from "./finish.js";
import { FILE, PRELUDE } from "./lua.js";

/** saveSnapshot: the snapshot's fields and outputs, replaced in one step (consuming an event if asked). */
export const SAVE_SNAPSHOT = `--[[ saveSnapshot
  KEYS[1] the instance hash   KEYS[2] the shard's ready set   KEYS[3] its ids set
  KEYS[4] its lease set       KEYS[5] its timer set of queue "default" (the instance's queue's is built in Lua)   KEYS[6] the instance's events hash
  KEYS[7] the instance's event order
  ARGV[1] instance id         ARGV[2] header (toStoredSnapshot's: no outputs, no initial input)
  ARGV[3] finished ('1'/'0')  ARGV[4] definitionHash
  ARGV[5] position task id ('' = none)  ARGV[6] lastCompletedTaskId ('' = none)
  ARGV[7] ready task id ('' = none)     ARGV[8] updatedAt
  ARGV[9] has an initial input ('1'/'0')  ARGV[10] initial input
  ARGV[11] fence task id      ARGV[12] fence token ('' = no fence)
  ARGV[13] status             ARGV[14] the position's task ('' = none; cancel/pause/resume read it)
  ARGV[15] awaited event ('' = not awaiting)   ARGV[16] awaited task   ARGV[17] timeoutAt ('' = none)
  ARGV[18] name of the event consumed ('' = none)   ARGV[19] its sequence
  ARGV[20] request id (hex, one per call; with an event consumed)
  ARGV[21] queue ('' = default)   ARGV[22] priority ('' = 3)   ARGV[23] ready-set offset ('' = 0)
  ARGV[24] due: the later of the position's runAt and its task's retryAt, 'h' = held ('' = none)
  ARGV[25] the position's runAt ('' = none; failTasks reads it)
  ARGV[26..] ("r:" .. task id, output) and ("a:" .. task id, attempts) pairs
  Replaces every field of the snapshot, every output and every task's attempts; the claims stay.
  Outputs and attempts are compared with the stored ones: only those that are new or changed are
  written, only those the snapshot no longer has are deleted (an unchanged output is read back
  in the server, never rewritten). The consumed event is
  deleted with the write, which records "sequence|request id" (so a second run of the same call,
  its first reply lost, answers OK instead of EVENT_NOT_PENDING); a finished write (Completed,
  Failed, Cancelled) drops every pending event. Index: the ready task in its queue's ready (or
  the lease) set, or in its queue's timer set while its due time is to come (none while held); a wait
  in the ready set when an event of its name is pending or its timeout has passed, else in the
  timer set when it has a timeout; anything else (paused, finished) in no set.
  Finish time: a finished write keeps the stored one (field ${L.finishedAt}) when the instance was
  finished already, else records Redis's now (the instance finishes with this write); an
  instance finished before finish times were kept gets its stored updatedAt, as the migration
  gives it (retention.ts). It is filed in the shard's finish-time index at that time.
  Returns OK, FENCE_REJECTED (the fence is not the live claim), CANNOT_REOPEN (a finished
  workflow would go back to InProgress), CANCELLED_IS_FINAL (a cancelled one would become
  anything but Cancelled, a finished Completed or Failed included), PAUSED_CANNOT_MOVE (a paused
  one would become anything but Paused or Cancelled) or EVENT_NOT_PENDING (the event is not the
  oldest pending of its name), checked in that order.
]]
${PRELUDE}${FILE}${FINISH}
local now_ms = clock()
local key, id = KEYS[1], ARGV[1]
if not fence_ok(key, ARGV[11], ARGV[12], now_ms) then return FENCE_REJECTED end
local m = call('HMGET', key, ${L.finished}, ${L.status}, ${L.timeoutAt}, ${L.due}, ${L.queue}, ${L.finishedAt}, ${L.updatedAt})
if ARGV[3] == '0' and m[1] == '1' then return CANNOT_REOPEN end
if m[2] == 'Cancelled' and ARGV[13] ~= 'Cancelled' then return CANCELLED_IS_FINAL end
if m[2] == 'Paused' and ARGV[13] ~= 'Paused' and ARGV[13] ~= 'Cancelled' then return PAUSED_CANNOT_MOVE end
local base = base_of(key, id)
local consumed
if ARGV[18] ~= '' then
  consumed = oldest_event(base, id, ARGV[18])
  if not consumed or tonumber(member_seq(consumed, ARGV[18])) ~= tonumber(ARGV[19]) then
    if call('HGET', key, ${L.consumed}) == ARGV[19] .. '|' .. ARGV[20] then return OK end
    return EVENT_NOT_PENDING
  end
end
-- What the write sets: the snapshot's fields and ARGV[26..], ("r:" / "a:" .. task id, value) pairs.
local fields = { ${L.header}, ARGV[2], ${L.finished}, ARGV[3], ${L.definitionHash}, ARGV[4], ${L.updatedAt}, ARGV[8], ${L.status}, ARGV[13] }
local optional = { ${L.positionTaskId}, ARGV[5], ${L.lastCompletedTaskId}, ARGV[6], ${L.positionTask}, ARGV[14],
  ${L.awaitedEvent}, ARGV[15], ${L.awaitedTask}, ARGV[16], ${L.timeoutAt}, ARGV[17],
  ${L.queue}, ARGV[21], ${L.priority}, ARGV[22], ${L.offset}, ARGV[23], ${L.due}, ARGV[24], ${L.runAt}, ARGV[25] }
for i = 1, #optional, 2 do
  if optional[i + 1] ~= '' then fields[#fields + 1] = optional[i]; fields[#fields + 1] = optional[i + 1] end
end
if ARGV[9] == '1' then fields[#fields + 1] = ${L.initialInput}; fields[#fields + 1] = ARGV[10] end
if consumed then fields[#fields + 1] = ${L.consumed}; fields[#fields + 1] = ARGV[19] .. '|' .. ARGV[20] end
local finished_at
if ARGV[3] == '1' then
  if m[1] ~= '1' then finished_at = fmt(now_ms) else finished_at = m[6] or m[7] or '0' end
  fields[#fields + 1] = ${L.finishedAt}; fields[#fields + 1] = finished_at
end
local sets, value_at = {}, {}
for i = 1, #fields, 2 do sets[fields[i]] = true end
local n = #ARGV
for i = 26, n, 2 do value_at[ARGV[i]] = i + 1 end
-- Stored fields the write does not set go; outputs and attempts it sets again are compared.
local gone, kept = {}, {}
for _, field in ipairs(call('HKEYS', key)) do
  if string.sub(field, 1, ${L.claimLength}) ~= ${L.claim} then
    if value_at[field] then kept[#kept + 1] = field
    elseif not sets[field] then gone[#gone + 1] = field end
  end
end
call_chunked('HDEL', key, gone)
-- Read back in chunks of at most 200 fields or 4 MiB of new values (only equal lengths can match).
local same, i = {}, 1
while i <= #kept do
  local last, size = i, #ARGV[value_at[kept[i]]]
  while last < #kept and last - i < 199 do
    local more = #ARGV[value_at[kept[last + 1]]]
    if size + more > 4194304 then break end
    size = size + more
    last = last + 1
  end
  local values = call('HMGET', key, unpack(kept, i, last))
  for j = i, last do
    if values[j - i + 1] == ARGV[value_at[kept[j]]] then same[kept[j]] = true end
  end
  i = last + 1
end
call('HSET', key, unpack(fields))
local changed = {}
for j = 26, n, 2 do
  if not same[ARGV[j]] then changed[#changed + 1] = ARGV[j]; changed[#changed + 1] = ARGV[j + 1] end
end
call_chunked('HSET', key, changed)
call('ZADD', KEYS[3], 0, id)
if ARGV[3] == '1' then
  index_finish(base, id, finished_at)
  drop_events(base, id)
elseif consumed then
  call('ZREM', KEYS[7], consumed)
  call('HDEL', KEYS[6], member_seq(consumed, ARGV[18]))
end
local function opt(v) if v == '' then return nil end return v end
file_position(base, key, id, m[5], m[3] or m[4], {
  ready = opt(ARGV[7]), wait = opt(ARGV[15]), wait_task = ARGV[16], timeout = opt(ARGV[17]),
  updated = ARGV[8], q = opt(ARGV[21]), z = tonumber(opt(ARGV[23]) or '0'), due = opt(ARGV[24]),
}, now_ms)
return OK
`;
