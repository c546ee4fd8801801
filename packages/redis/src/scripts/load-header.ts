import { L } from "../layout.js";

/** Cancel, pause and resume read the state with this before they compute the new header. */
export const LOAD_HEADER = `--[[ loadHeader (the read of cancelWorkflow, pauseWorkflow, resumeWorkflow)
  KEYS[1] the instance hash
  Returns nil when there is no snapshot, else {header, lastCompletedTaskId ('' = none), the
  position's task ('' = none), whether it has a result ('1'/'0'), whether the initial input has
  a field of its own ('1'/'0'), Redis time in ms}. The position's task is the field written by
  saveSnapshot, or for records written before it existed the AtTask position's (they can be
  neither Paused nor waiting).
]]
local call = redis.call
local v = call('HMGET', KEYS[1], ${L.header}, ${L.lastCompletedTaskId}, ${L.positionTask}, ${L.positionTaskId}, ${L.finished})
if not v[5] then return false end
local task = v[3] or v[4] or ''
local had = '0'
if task ~= '' and call('HEXISTS', KEYS[1], ${L.result} .. task) == 1 then had = '1' end
local input = tostring(call('HEXISTS', KEYS[1], ${L.initialInput}))
local t = call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return { v[1], v[2] or '', task, had, input, string.format('%.0f', now_ms) }
`;
