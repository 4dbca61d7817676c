-- Bounds shared by commit.lua and seed.lua (prepended to both): the op
-- log's byte total and trimming, and the dedupe hash's size.

-- The log's total length in bytes, kept in `bkey`; counted once from the
-- log itself for a log from before the total was kept.
local function log_bytes(log, bkey)
  local b = redis.call('GET', bkey)
  if b then
    return tonumber(b)
  end
  local total, len, at = 0, redis.call('LLEN', log), 0
  while at < len do
    for _, r in ipairs(redis.call('LRANGE', log, at, at + 63)) do
      total = total + string.len(r)
    end
    at = at + 64
  end
  return total
end

-- Drop the oldest records while the log holds more than `retain` records
-- or `retain_bytes` bytes, but never a record after the durable snapshot
-- (the store may not have it yet) and never the newest; store the total.
local function trim_log(log, bkey, durable_key, head, len, bytes, retain, retain_bytes)
  if len > retain or bytes > retain_bytes then
    local durable = tonumber(redis.call('GET', durable_key) or '0')
    local most = math.min(durable - (head - len), len - 1)
    local drop = 0
    while drop < most and (len - drop > retain or bytes > retain_bytes) do
      local chunk = redis.call('LRANGE', log, drop, drop + 63)
      for _, r in ipairs(chunk) do
        if drop >= most or (len - drop <= retain and bytes <= retain_bytes) then
          break
        end
        bytes = bytes - string.len(r)
        drop = drop + 1
      end
      if #chunk == 0 then
        break
      end
    end
    if drop > 0 then
      redis.call('LTRIM', log, drop, -1)
    end
  end
  redis.call('SET', bkey, string.format('%d', bytes))
end

-- Record a client's committed seq in the dedupe hash, and its version in
-- the sorted set of its kind (server-minted ids contain '~').
local function client_seen(clients, kept, minted, client, seq, version)
  redis.call('HSET', clients, client, seq .. ':' .. version)
  local order = kept
  if string.find(client, '~', 1, true) then
    order = minted
  end
  redis.call('ZADD', order, version, client)
end

-- Keep at most `most` clients of one kind: those whose last commit is oldest
-- leave the hash.
local function bound_clients(clients, order, most)
  local extra = redis.call('ZCARD', order) - most
  if extra > 0 then
    local gone = redis.call('ZPOPMIN', order, extra)
    for i = 1, #gone, 2 do
      redis.call('HDEL', clients, gone[i])
    end
  end
end
