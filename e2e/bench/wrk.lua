-- wrk script of the wxproxy load benchmark (e2e/bench). It defines only
-- done(), so wrk keeps its fast path (no Lua per request or response) and
-- prints one machine-readable line at the end of the run. Latencies are in
-- microseconds in wrk and printed in milliseconds.
done = function(summary, latency, requests)
  local e = summary.errors
  local secs = summary.duration / 1e6
  local rps = 0
  if secs > 0 then rps = summary.requests / secs end
  io.write(string.format(
    "WXPROXY-BENCH requests=%.0f duration_us=%.0f rps=%.3f p50_ms=%.3f p99_ms=%.3f p999_ms=%.3f errors=%.0f status_errors=%.0f timeouts=%.0f\n",
    summary.requests, summary.duration, rps,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency:percentile(99.9) / 1000,
    e.connect + e.read + e.write + e.status + e.timeout, e.status, e.timeout))
end
