-- wrk script of bench/graphql.sh: every request is the same GraphQL POST, its JSON body
-- ({"query": ...}) read from the file given after `--`, to the URL's path (/graphql on
-- Brigade's gateway, / on Apollo Server). A GraphQL answer with errors is still a 200,
-- so answers holding "errors" are counted and printed at the end.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  local f = assert(io.open(args[1], "rb"))
  wrk.body = f:read("*a")
  f:close()
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  failed = 0
end

function response(status, headers, body)
  if body:find('"errors"', 1, true) then failed = failed + 1 end
end

function done(summary, latency, requests)
  local n = 0
  for _, thread in ipairs(threads) do n = n + thread:get("failed") end
  io.write(string.format("GraphQL answers with errors: %d\n", n))
end
