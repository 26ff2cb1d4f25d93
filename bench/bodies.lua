-- wrk script: POST pre-built AdmissionReview bodies, cycling through a file.
--
--   wrk -t1 -c32 -d5s -s bench/bodies.lua https://127.0.0.1:PORT/mutate?timeout=10s -- BODIES [STOP_AFTER [PATHS]]
--
-- BODIES holds one JSON body per line (bench/corpus.py writes it). Every request is
-- built once in init(), so the per-request work in wrk is a table lookup. Each thread
-- starts at a different offset so threads do not send the same body in lockstep.
-- With STOP_AFTER > 0 each thread stops after that many responses (the soak run) and
-- prints BENCH_THREAD_STOPPED. PATHS, comma-separated (e.g. /mutate,/validate), sends
-- each body to each path in turn instead of to the URL's path.
-- done() prints one line `BENCH_RESULT {json}` that bench/run.py parses.

local requests = {}
local count = 0
local next_index = 0
local stop_after = 0
local responses = 0
local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("thread_id", thread_count)
end

function init(args)
  local path = args[1]
  stop_after = tonumber(args[2] or "0") or 0
  local paths = {}
  for p in string.gmatch(args[3] or "", "[^,]+") do
    paths[#paths + 1] = p
  end
  if #paths == 0 then
    paths[1] = wrk.path
  end
  local file = assert(io.open(path, "rb"), "cannot open bodies file " .. tostring(path))
  for line in file:lines() do
    if #line > 0 then
      for _, p in ipairs(paths) do
        count = count + 1
        requests[count] = wrk.format("POST", p, {["Content-Type"] = "application/json"}, line)
      end
    end
  end
  file:close()
  assert(count > 0, "no bodies in " .. path)
  next_index = (((thread_id or 1) - 1) * 7) % count
  if stop_after > 0 then
    -- defined only for the soak run: a response() callback makes wrk parse every answer
    response = function(status, headers, body)
      responses = responses + 1
      if responses == stop_after then
        -- wrk's main thread sleeps for the whole -d; bench/run.py sends SIGINT once every
        -- thread has said this, which ends the run early with the usual report
        io.write("BENCH_THREAD_STOPPED\n")
        io.stdout:flush()
        wrk.thread:stop()
      end
    end
  end
end

function request()
  next_index = next_index % count + 1
  return requests[next_index]
end

function done(summary, latency, requests_stats)
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors_connect":%d,"errors_read":%d,"errors_write":%d,"errors_status":%d,"errors_timeout":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
