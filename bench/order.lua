-- wrk script of bench/orders.sh: every request places a new order (a fresh
-- Idempotency-Key: the run's prefix, the thread and a counter) for one of the demo
-- users and one unit of one of the bench's products (ids first..first+count-1, made with
-- ample stock so every order can be paid), as a shop's checkout would.
local counter = 0
local prefix = ""
local users, first, count = 1000, 1, 100

function setup(thread)
  thread:set("tid", tostring(math.random(1, 1e9)))
end

function init(args)
  prefix = (args[1] or "run") .. "-" .. (tid or "0") .. "-"
  users = tonumber(args[2] or users)
  first = tonumber(args[3] or first)
  count = tonumber(args[4] or count)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  counter = counter + 1
  local user = (counter * 7919) % users + 1
  local product = (counter * 104729) % count + first
  local body = string.format('{"user_id":%d,"items":[{"product_id":%d,"quantity":1}]}', user, product)
  wrk.headers["Idempotency-Key"] = prefix .. counter
  return wrk.format(nil, "/v1/orders", nil, body)
end
