-- Read or change one user's undo/redo stack (stack.lua is prepended).
-- KEYS: 1 stacks hash
-- ARGV: 1 action ('pop' | 'push'), 2 field;
--   push: 3 entry, 4 replace the top if its version is this ('' = never),
--         5 limit, 6 field to clear ('' = none), 7 limit in bytes,
--         8 entry pushed instead when the top is not at 4 ('' = 3)
local action, field = ARGV[1], ARGV[2]
if action == 'push' then
  stack_push(KEYS[1], field, ARGV[3], ARGV[4], tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7]), ARGV[8])
  return 1
end
-- pop
local list = stack_load(KEYS[1], field)
local top = list[#list]
if not top then
  return false
end
table.remove(list)
stack_store(KEYS[1], field, list)
return top
