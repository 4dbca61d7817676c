-- Records with version > ARGV[1], oldest first, read atomically with the head.
-- In wait mode (ARGV[2] = '1') only those up to the replicated head: what a
-- failover could take back is shown to nobody.
-- ARGV[3] is the caller's epoch: records of another history are not
-- handed to it ('' = not checked).
-- KEYS: 1 head, 2 log, 3 replicated head, 4 epoch
-- Returns {"ok", head, rec...} | {"range", oldest, head} | {"noseed"} |
--         {"epoch"} (another history: the caller re-seeds first)
local head = tonumber(redis.call('GET', KEYS[1]))
if not head then
  return {'noseed'}
end
if ARGV[3] ~= '' and redis.call('GET', KEYS[4]) ~= ARGV[3] then
  return {'epoch'}
end
local after = tonumber(ARGV[1])
local len = redis.call('LLEN', KEYS[2])
local oldest = head - len
if after < oldest or after > head then
  return {'range', string.format('%d', oldest), string.format('%d', head)}
end
local last = -1
if ARGV[2] == '1' then
  local rhead = tonumber(redis.call('GET', KEYS[3])) or 0
  if after >= rhead then
    return {'ok', string.format('%d', head)}
  end
  last = rhead - oldest - 1
end
local recs = redis.call('LRANGE', KEYS[2], after - oldest, last)
table.insert(recs, 1, string.format('%d', head))
table.insert(recs, 1, 'ok')
return recs
