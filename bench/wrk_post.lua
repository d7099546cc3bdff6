-- wrk script for bench/ingest.py: POSTs one sync event per request.
-- Args after "--": TAG PATH [TOKEN]. Every request gets its own record id (TAG-thread-n), so
-- no two requests fight over the same job row and each one stores a new event.
-- done() prints one "BENCH_JSON {...}" line that bench/loadgen.py parses.

local threads = {}
local path = "/v1/sync/"
local tag = "run"
local headers = {}
local counter = 0
bad = 0  -- responses other than 202, read back per thread in done()

function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_id", #threads)
end

function init(args)
  tag = args[1] or tag
  path = args[2] or path
  headers["Content-Type"] = "application/json"
  headers["Accept"] = "application/json"
  if args[3] ~= nil and args[3] ~= "" then
    headers["Authorization"] = "Token " .. args[3]
  end
end

function request()
  counter = counter + 1
  local id = string.format("%s-%d-%d", tag, thread_id, counter)
  local body = string.format(
    '{"operation":"create","record_id":"%s","object_type":"contact","data":{"email":"%s@example.com"}}', id, id)
  return wrk.format("POST", path, headers, body)
end

function response(status, headers, body)
  if status ~= 202 then
    bad = bad + 1
  end
end

function done(summary, latency, requests)
  local not_202 = 0
  for _, thread in ipairs(threads) do
    not_202 = not_202 + thread:get("bad")
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"not_202":%d,"socket_errors":%d,"timeouts":%d,' ..
    '"p50_us":%d,"p99_us":%d,"mean_us":%.1f,"max_us":%d}\n',
    summary.requests, summary.duration, not_202, e.connect + e.read + e.write, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.mean, latency.max))
end
