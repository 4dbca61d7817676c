-- Wait mode: the records up to ARGV[3] are on the replicas WAIT asked for.
-- Raise the replicated head to it and publish, once, every record it newly
-- covers (as one JSON array, as commit.lua publishes).
-- KEYS: 1 replicated head, 2 head, 3 log
-- ARGV: 1 publish command (PUBLISH or SPUBLISH), 2 channel, 3 version,
--       4 client of the record expected at that version ('' = no check),
--       5 its seq
-- Returns the replicated head, or -1 when the record at the version is not
-- the one expected (a failover took the batch back: it must not be acked).
local expect = ARGV[4] ~= ''
local head = tonumber(redis.call('GET', KEYS[2]))
if not head then
  return expect and -1 or 0
end
local v = tonumber(ARGV[3])
local len = redis.call('LLEN', KEYS[3])
local oldest = head - len
if expect then
  if v > head or v <= oldest then
    return -1
  end
  local rec = cjson.decode(redis.call('LINDEX', KEYS[3], v - oldest - 1))
  if rec.client ~= ARGV[4] or rec.seq ~= tonumber(ARGV[5]) then
    return -1
  end
end
if v > head then
  v = head
end
local old = tonumber(redis.call('GET', KEYS[1])) or 0
if v <= old then
  return old
end
redis.call('SET', KEYS[1], string.format('%d', v))
local from = math.max(old, oldest)
if v > from then
  local recs = redis.call('LRANGE', KEYS[3], from - oldest, v - oldest - 1)
  redis.call(ARGV[1], ARGV[2], '[' .. table.concat(recs, ',') .. ']')
end
return v
