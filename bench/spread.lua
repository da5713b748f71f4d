-- wrk script of bench/rest.sh: requests go round-robin over the paths in the file given
-- after `--` (one a line), so a run reads pages from all over the catalog instead of one
-- page a cache could hold.
local paths = {}
local next_path = 0

function init(args)
  for line in io.lines(args[1]) do
    if #line > 0 then paths[#paths + 1] = line end
  end
  if #paths == 0 then error("no paths in " .. tostring(args[1])) end
end

function request()
  next_path = next_path % #paths + 1
  return wrk.format("GET", paths[next_path])
end
