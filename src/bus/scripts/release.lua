-- Wait mode: the records up to ARGV[1] ('' = the head) are on the replicas
-- WAIT asked for. Raise the replicated head to it and publish, once, every
-- record it newly covers (as one JSON array, as commit.lua publishes).
-- KEYS: 1 replicated head, 2 head, 3 log
-- ARGV: 1 version or '', 2 publish command (PUBLISH or SPUBLISH), 3 channel
-- Returns the replicated head.
local head = tonumber(redis.call('GET', KEYS[2]))
if not head then
  return 0
end
local v = tonumber(ARGV[1]) or head
if v > head then
  v = head
end
local old = tonumber(redis.call('GET', KEYS[1])) or 0
if v <= old then
  return old
end
redis.call('SET', KEYS[1], string.format('%d', v))
local len = redis.call('LLEN', KEYS[3])
local oldest = head - len
local from = math.max(old, oldest)
if v > from then
  local recs = redis.call('LRANGE', KEYS[3], from - oldest, v - oldest - 1)
  redis.call(ARGV[2], ARGV[3], '[' .. table.concat(recs, ',') .. ']')
end
return v
