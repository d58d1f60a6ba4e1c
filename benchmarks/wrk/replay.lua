-- Shared by the per-kind wrk scripts beside it (benchmarks/run.py runs them; see benchmarks/README.md).
--
--   wrk -t1 -c8 -d5s -s benchmarks/wrk/pod-validate.lua https://127.0.0.1:PORT/validate?timeout=5s -- BODIES
--
-- BODIES (the argument after `--`) is a file of pre-built AdmissionReview bodies, one JSON document
-- per line (benchmarks/reviews.py writes them). Every request is a keep-alive POST of the next body
-- in turn to the URL's path and query. There is no response() callback, so wrk does not hand each
-- answer to Lua (the guard counts its own decisions in /metrics; wrk counts non-2xx answers).
-- done() prints one line, `wrk-json {...}`, that the harness parses (latencies in microseconds).

local requests, index = {}, 0

function init(args)
  local file = assert(args[1], "usage: wrk -s KIND.lua URL -- BODIES_FILE")
  local headers = {
    ["Content-Type"] = "application/json",
    ["Accept"] = "application/json, */*",
    ["User-Agent"] = "kube-apiserver-admission",
  }
  for body in io.lines(file) do
    if #body > 0 then
      requests[#requests + 1] = wrk.format("POST", wrk.path, headers, body)
    end
  end
  assert(#requests > 0, "no request bodies in " .. file)
end

function request()
  index = index % #requests + 1
  return requests[index]
end

function done(summary, latency, _)
  local e = summary.errors
  io.write(string.format(
    'wrk-json {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"mean":%.1f,"stdev":%.1f,"min":%d,"max":%d,"p50":%d,"p90":%d,"p99":%d,"p999":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.stdev, latency.min, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9)))
end
