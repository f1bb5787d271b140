-- wrk script for the benchmark suite (bench/run.py writes the body files and passes them as arguments).
--
--   wrk -t1 -cN -dDs -s bench/hook.lua URL -- METHOD PATH BODYFILE [MAX_REQUESTS] [SALT]
--
-- BODYFILE is a request body with placeholders that change on every request:
--   @@HOOK_INSTANCE@@  a new UUID-shaped hookInstance (so no cache keyed on it can make a run look faster)
--   @@TOKEN@@          a new access token (so the service's FHIR read cache, keyed by token, never hits)
--   @@SEQ@@            the request counter
-- The body is split once at start-up; each request only concatenates the parts (cheap for wrk).
-- MAX_REQUESTS > 0 stops the run after that many responses (the memory soak); wrk's -d still bounds it.
-- At the end one line "BENCHJSON {...}" carries the counts and latency percentiles (microseconds).

local method, path, parts, vars = "GET", "/", {""}, {}
local max_requests, seen, counter, tid = 0, 0, 0, 0
local headers = { ["Content-Type"] = "application/json", ["Accept"] = "application/json" }

local function split_template(text)
  local p, v, pos = {}, {}, 1
  while true do
    local s, e, name = string.find(text, "@@([A-Z_]+)@@", pos)
    if not s then break end
    p[#p + 1] = string.sub(text, pos, s - 1)
    v[#v + 1] = name
    pos = e + 1
  end
  p[#p + 1] = string.sub(text, pos)
  return p, v
end

function init(args)
  method = args[1] or "GET"
  path = args[2] or "/"
  if args[3] and args[3] ~= "-" then
    local f = assert(io.open(args[3], "rb"))
    local text = f:read("*a")
    f:close()
    parts, vars = split_template(text)
  end
  max_requests = tonumber(args[4] or "0") or 0
  -- SALT (run.py passes a different one per run) keeps hookInstance and tokens unique across runs
  tid = (tonumber(args[5] or "0") or 0) % 0x100000
  if max_requests > 0 then
    response = function(status, hdrs, body)
      seen = seen + 1
      if seen == max_requests then
        -- wrk's main thread sleeps for the whole -d; run.py sends SIGINT when it reads this line
        io.write("BENCHDONE\n")
        io.flush()
        wrk.thread:stop()
      end
    end
  end
end

local function value(name)
  if name == "HOOK_INSTANCE" then
    return string.format("%08x-%04x-4%03x-a%03x-%012x", tid, counter % 0x10000, tid % 0x1000,
      counter % 0x1000, counter)
  elseif name == "TOKEN" then
    return string.format("bench-%05x-%010d", tid, counter)
  elseif name == "SEQ" then
    return tostring(counter)
  end
  return ""
end

function request()
  counter = counter + 1
  if method == "GET" then
    return wrk.format("GET", path, headers)
  end
  local out = {}
  for i = 1, #vars do
    out[#out + 1] = parts[i]
    out[#out + 1] = value(vars[i])
  end
  out[#out + 1] = parts[#parts]
  return wrk.format(method, path, headers, table.concat(out))
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests": %d, "duration_us": %d, "bytes": %d, "connect_errors": %d, "read_errors": %d, '
    .. '"write_errors": %d, "status_errors": %d, "timeouts": %d, "p50_us": %d, "p90_us": %d, "p95_us": %d, '
    .. '"p99_us": %d, "max_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(95), latency:percentile(99),
    latency.max, latency.mean))
end
