-- Commit a batch of ops to one document, atomically: per-record dedupe on
-- (client, seq), one version check, append all, keep their undo steps,
-- trim (by count and by bytes, never past the durable snapshot, never the
-- newest record), bound the dedupe hash, publish once. stack.lua and
-- bounds.lua are prepended.
-- KEYS: 1 head, 2 log (list of record JSON, oldest first), 3 clients (hash
--       client -> "seq:version"), 4 durable (last durable snapshot version),
--       5 stacks (undo/redo hash), 6 log bytes (the log's total length),
--       7 clients by version (sorted set, socket clients), 8 the same for
--       server-minted clients (ids with '~'), 9 replicated head (in wait
--       mode: records up to it are on the replicas WAIT asked for),
--       10 settle (set by seed.lua: commits wait while it lives),
--       11 epoch, 12 lease (lease.lua: the token of the instance that may
--       commit)
-- ARGV: 1 base, 2 retain (op log tail), 3 channel, 4 stack limit, 5 n,
--       6 retain bytes, 7 most socket clients, 8 most server-minted clients,
--       9 stack limit in bytes, 10 publish command (PUBLISH, SPUBLISH, or
--       '' in wait mode: the caller publishes after WAIT, with release.lua),
--       11 the epoch base belongs to ('' = not checked), 12 the caller's
--       lease token ('' = not checked), 13 lease ms (a commit, a dup and a
--       stale reply prove the holder alive: its lease is extended), then n
--       times 8
--       fields: client, seq, record JSON after its "version"
--       field (starts with '"op":'), undo field ('' = none), undo entry
--       JSON, replace the top at ('' = never), field to clear ('' = none),
--       entry pushed instead when the top is not at that version ('' = none)
-- Returns one of:
--   {"ok", head}              appended as base+1..head, published as one
--                             JSON array of the records (unless ARGV[10]
--                             is '')
--   {"dup", i, version, ...}  these records (1-based) were committed before:
--                             nothing appended
--   {"stale", rec...}         base is behind: the records after base (in
--                             wait mode only those up to the replicated head)
--   {"unrepl"}                wait mode: base is behind, but every record
--                             after it still waits for its replicas
--   {"range", oldest, head}   base is outside the log
--   {"noseed"}                the document is unknown (seed it)
--   {"fenced", token, pttl}   the caller does not hold the lease (token:
--                             who does, '' nobody): nothing appended
--   {"settling", ms}          re-seeded moments ago: try again in ms
--   {"epoch"}                 the log is another history than base's (Redis
--                             lost ours): the caller re-seeds first
local head = tonumber(redis.call('GET', KEYS[1]))
if not head then
  return {'noseed'}
end
local token = ARGV[12]
if token ~= '' then
  local holder = redis.call('GET', KEYS[12])
  if holder ~= token then
    return {'fenced', holder or '', string.format('%d', redis.call('PTTL', KEYS[12]))}
  end
end
-- The holder is alive: its lease runs on from now.
local function extend()
  if token ~= '' then
    redis.call('PEXPIRE', KEYS[12], ARGV[13])
  end
end
local settle = redis.call('PTTL', KEYS[10])
if settle > 0 then
  return {'settling', string.format('%d', settle)}
end
if ARGV[11] ~= '' and redis.call('GET', KEYS[11]) ~= ARGV[11] then
  return {'epoch'}
end
local n, W, A = tonumber(ARGV[5]), 8, 13
local publish = ARGV[10]
local dups = {}
for i = 1, n do
  local j = A + (i - 1) * W
  local last = redis.call('HGET', KEYS[3], ARGV[j + 1])
  if last then
    local lseq, lver = string.match(last, '^(%d+):(%d+)$')
    if tonumber(ARGV[j + 2]) <= tonumber(lseq) then
      table.insert(dups, string.format('%d', i))
      table.insert(dups, lver)
    end
  end
end
if #dups > 0 then
  extend()
  table.insert(dups, 1, 'dup')
  return dups
end
local base = tonumber(ARGV[1])
local len = redis.call('LLEN', KEYS[2])
if base ~= head then
  local oldest = head - len
  if base < oldest or base > head then
    return {'range', string.format('%d', oldest), string.format('%d', head)}
  end
  local last = -1
  if publish == '' then
    -- Show nobody a record a failover could still take back.
    local rhead = tonumber(redis.call('GET', KEYS[9])) or 0
    if base >= rhead then
      return {'unrepl'}
    end
    last = rhead - oldest - 1
  end
  local missed = redis.call('LRANGE', KEYS[2], base - oldest, last)
  extend()
  table.insert(missed, 1, 'stale')
  return missed
end
local limit, stack_bytes = tonumber(ARGV[4]), tonumber(ARGV[9])
local bytes = log_bytes(KEYS[2], KEYS[6])
local recs = {}
for i = 1, n do
  local j = A + (i - 1) * W
  local vs = string.format('%d', head + i)
  recs[i] = '{"version":' .. vs .. ',' .. ARGV[j + 3]
  bytes = bytes + string.len(recs[i])
  client_seen(KEYS[3], KEYS[7], KEYS[8], ARGV[j + 1], ARGV[j + 2], vs)
  if ARGV[j + 4] ~= '' then
    stack_push(KEYS[5], ARGV[j + 4], ARGV[j + 5], ARGV[j + 6], limit, ARGV[j + 7], stack_bytes, ARGV[j + 8])
  end
end
redis.call('RPUSH', KEYS[2], unpack(recs))
head = head + n
local hs = string.format('%d', head)
redis.call('SET', KEYS[1], hs)
len = len + n
trim_log(KEYS[2], KEYS[6], KEYS[4], head, len, bytes, tonumber(ARGV[2]), tonumber(ARGV[6]))
bound_clients(KEYS[3], KEYS[7], tonumber(ARGV[7]))
bound_clients(KEYS[3], KEYS[8], tonumber(ARGV[8]))
if publish ~= '' then
  redis.call(publish, ARGV[3], '[' .. table.concat(recs, ',') .. ']')
end
extend()
return {'ok', hs}
