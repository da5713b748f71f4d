-- wrk script of bench/writes.sh: every request is a new product created with a fresh
-- Idempotency-Key (the thread's id, a per-thread counter and the run's seed), as a client
-- that means each write would send it.
local counter = 0
local prefix = ""

function setup(thread)
  thread:set("tid", tostring(math.random(1, 1e9)))
end

function init(args)
  prefix = (args[1] or "run") .. "-" .. (tid or "0") .. "-"
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  counter = counter + 1
  local body = string.format('{"name":"Bench %d","price":%d.99,"stock":%d}', counter, counter % 1000, counter % 500)
  wrk.headers["Idempotency-Key"] = prefix .. counter
  return wrk.format(nil, "/v1/products", nil, body)
end
