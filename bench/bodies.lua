-- wrk script: POST pre-built AdmissionReview bodies, cycling through a file.
--
--   wrk -t1 -c32 -d5s -s bench/bodies.lua https://127.0.0.1:PORT/mutate?timeout=10s -- BODIES [STOP_AFTER [PATHS]]
--
-- BODIES holds one JSON body per line (bench/corpus.py writes it). Every request is
-- built once in init(), cut around the 12 digits after each occurrence of UID_TOKEN
-- (the corpus writes uids as UID_TOKEN followed by 12 digits, and the never-seen mix
-- puts the uid in a label too); per request wrk only joins the pieces around a
-- counter, so no two requests carry the same uid (as from an API server) nor, in the
-- never-seen mix, the same pod. A body without the token is sent as it is. Each thread starts at a different offset
-- so threads do not send the same body in lockstep, and numbers its uids from its own
-- range.
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
local sequence = 0
local sequence_base = 0
-- bench/corpus.py's UID_TOKEN: a uid is UID_TOKEN .. 12 digits
local UID_TOKEN = '6b1a0a3e-bench-4000-8000-'
local UID_DIGITS = 12

-- `whole` cut around the digits after each UID_TOKEN: the pieces a number joins
local function cut(whole)
  local pieces, piece_start, search = {}, 1, 1
  while true do
    local _, last = string.find(whole, UID_TOKEN, search, true)
    if not last then
      break
    end
    search = last + 1
    local digits = string.sub(whole, last + 1, last + UID_DIGITS)
    if #digits == UID_DIGITS and string.find(digits, "^%d+$") then
      pieces[#pieces + 1] = string.sub(whole, piece_start, last)
      piece_start = last + UID_DIGITS + 1
      search = piece_start
    end
  end
  pieces[#pieces + 1] = string.sub(whole, piece_start)
  return pieces
end

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
        requests[count] = cut(wrk.format("POST", p, {["Content-Type"] = "application/json"}, line))
      end
    end
  end
  file:close()
  assert(count > 0, "no bodies in " .. path)
  next_index = (((thread_id or 1) - 1) * 7) % count
  -- threads number their uids from separate ranges of 10^11 (at most 9 threads), each
  -- run from a point set by the clock, so that runs one after another differ too
  sequence_base = ((thread_id or 1) % 10) * 1e11 + (os.time() % 100000) * 1e6
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
  local parts = requests[next_index]
  if parts[2] == nil then
    return parts[1]
  end
  sequence = sequence + 1
  return table.concat(parts, string.format("%012d", sequence_base + sequence))
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
