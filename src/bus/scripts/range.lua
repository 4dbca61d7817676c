-- Records with version > ARGV[1], oldest first, read atomically with the head.
-- KEYS: 1 head, 2 log
-- Returns {"ok", head, rec...} | {"range", oldest, head} | {"noseed"}
local head = tonumber(redis.call('GET', KEYS[1]))
if not head then
  return {'noseed'}
end
local after = tonumber(ARGV[1])
local len = redis.call('LLEN', KEYS[2])
local oldest = head - len
if after < oldest or after > head then
  return {'range', string.format('%d', oldest), string.format('%d', head)}
end
local recs = redis.call('LRANGE', KEYS[2], after - oldest, -1)
table.insert(recs, 1, string.format('%d', head))
table.insert(recs, 1, 'ok')
return recs
