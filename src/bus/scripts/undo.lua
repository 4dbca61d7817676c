-- Per-user undo/redo stacks of one document: a hash with one field per user
-- and stack ('u:<user>' / 'r:<user>'), each a JSON array of entry strings,
-- newest last. The same rules as src/undo.rs `Stacks`.
-- KEYS: 1 stacks hash
-- ARGV: 1 action ('top' | 'pop' | 'push'), 2 field;
--   push: 3 entry, 4 replace the top if its version is this ('' = never),
--         5 limit, 6 field to clear ('' = none)
local function load(field)
  local raw = redis.call('HGET', KEYS[1], field)
  if not raw then
    return {}
  end
  return cjson.decode(raw)
end

local function store(field, list)
  if #list == 0 then
    redis.call('HDEL', KEYS[1], field)
  else
    redis.call('HSET', KEYS[1], field, cjson.encode(list))
  end
end

local action, field = ARGV[1], ARGV[2]
local list = load(field)
local top = list[#list]
if action == 'top' then
  return top or false
elseif action == 'pop' then
  if not top then
    return false
  end
  table.remove(list)
  store(field, list)
  return top
end
local at = ARGV[4]
if at ~= '' and top and cjson.decode(top).version == tonumber(at) then
  list[#list] = ARGV[3]
else
  table.insert(list, ARGV[3])
end
while #list > tonumber(ARGV[5]) do
  table.remove(list, 1)
end
store(field, list)
if ARGV[6] ~= '' then
  redis.call('HDEL', KEYS[1], ARGV[6])
end
return 1
