import { L } from "../layout.js";

/** loadTaskResult: one task's output, never the header or another output. */
export const LOAD_TASK_RESULT = `--[[ loadTaskResult
  KEYS[1] the instance hash
  ARGV[1] task id
  Reads the finished flag and the status, then (unless the workflow is Completed or Failed,
  whose state carries no results) the one output field "${"r:"}" .. task id: nothing else of the
  hash, whatever its size.
  Returns nil when there is no snapshot, {} when the task has no result to show, {output}.
]]
local v = redis.call('HMGET', KEYS[1], ${L.finished}, ${L.status})
if not v[1] then return false end
-- Records written before the status was kept have none, and are never Cancelled.
if v[1] == '1' and v[2] ~= 'Cancelled' then return {} end
local out = redis.call('HGET', KEYS[1], ${L.result} .. ARGV[1])
if not out then return {} end
return { out }
`;
