-- Commit one op to one document, atomically.
-- KEYS: 1 head, 2 log (list of record JSON, oldest first), 3 clients (hash
--       client -> "seq:version"), 4 durable (last durable snapshot version)
-- ARGV: 1 base, 2 client, 3 seq, 4 record JSON after its "version" field
--       (starts with '"op":'), 5 retain (op log tail), 6 channel
-- Returns one of:
--   {"ok", version, record}   appended, trimmed, published
--   {"dup", version}          (client, seq) was committed before
--   {"stale", rec...}         base is behind: the records after base
--   {"range", oldest, head}   base is outside the log
--   {"noseed"}                the document is unknown (seed it)
local head = tonumber(redis.call('GET', KEYS[1]))
if not head then
  return {'noseed'}
end
local client, seq = ARGV[2], tonumber(ARGV[3])
local last = redis.call('HGET', KEYS[3], client)
if last then
  local lseq, lver = string.match(last, '^(%d+):(%d+)$')
  if seq <= tonumber(lseq) then
    return {'dup', lver}
  end
end
local base = tonumber(ARGV[1])
local len = redis.call('LLEN', KEYS[2])
if base ~= head then
  local oldest = head - len
  if base < oldest or base > head then
    return {'range', string.format('%d', oldest), string.format('%d', head)}
  end
  local missed = redis.call('LRANGE', KEYS[2], base - oldest, -1)
  table.insert(missed, 1, 'stale')
  return missed
end
local v = head + 1
local vs = string.format('%d', v)
local rec = '{"version":' .. vs .. ',' .. ARGV[4]
redis.call('SET', KEYS[1], vs)
redis.call('RPUSH', KEYS[2], rec)
redis.call('HSET', KEYS[3], client, ARGV[3] .. ':' .. vs)
len = len + 1
-- Trim to the retained tail, never past the last durable snapshot.
local retain = tonumber(ARGV[5])
if len > retain then
  local durable = tonumber(redis.call('GET', KEYS[4]) or '0')
  local oldest = v - len
  local drop = math.min(len - retain, durable - oldest)
  if drop > 0 then
    redis.call('LTRIM', KEYS[2], drop, -1)
  end
end
redis.call('PUBLISH', ARGV[6], rec)
return {'ok', vs, rec}
