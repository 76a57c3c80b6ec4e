-- wrk script for bench/api_load. The request comes from the environment:
--   BENCH_METHOD (default GET), BENCH_API_KEY (sent as a Bearer token), BENCH_BODY (JSON),
--   BENCH_CACHE_CONTROL (sent as Cache-Control when set),
--   BENCH_CONNECTION_CLOSE=1 (a new connection for every request).
-- At the end it prints one line, "BENCH_RESULT {json}", with latencies in microseconds.

wrk.method = os.getenv("BENCH_METHOD") or "GET"

local api_key = os.getenv("BENCH_API_KEY") or ""
if api_key ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. api_key
end

local body = os.getenv("BENCH_BODY") or ""
if body ~= "" then
  wrk.body = body
  wrk.headers["Content-Type"] = "application/json"
end

local cache_control = os.getenv("BENCH_CACHE_CONTROL") or ""
if cache_control ~= "" then
  wrk.headers["Cache-Control"] = cache_control
end

if os.getenv("BENCH_CONNECTION_CLOSE") == "1" then
  wrk.headers["Connection"] = "close"
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests": %d, "duration_us": %d, "mean_us": %.1f, "p50_us": %d, ' ..
    '"p90_us": %d, "p99_us": %d, "max_us": %d, "non_2xx": %d, "socket_errors": %d}\n',
    summary.requests, summary.duration, latency.mean,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    errors.status, errors.connect + errors.read + errors.write + errors.timeout))
end
