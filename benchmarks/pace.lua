-- wrk script of served.py: a fixed mean request rate, a bounded count, the latency quantiles.
-- wrk -t1 -cN -dD -s pace.lua URL -- RATE COUNT
-- The thread sends at RATE requests per second on average, spread over its N connections (a
-- request waits for a free connection: no catching up on missed slots), and stops after COUNT
-- responses. done() prints one line: BENCH {json}, latencies in microseconds.
-- Arrivals are a Poisson process (exponential gaps, fixed seed), as independent users make:
-- with evenly spaced requests every deferred 100 ms call would end exactly as the request two
-- slots later is being served (the gap divides 100 ms), a collision real traffic does not have.
local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec_t;
int clock_gettime(int clk_id, bench_timespec_t *tp);
]]
local clock = ffi.new("bench_timespec_t")
local CLOCK_MONOTONIC = 1

local function now_ms()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, clock)
  return tonumber(clock.tv_sec) * 1000 + tonumber(clock.tv_nsec) / 1e6
end

local interval, limit, due, answered = 0, 0, nil, 0

function init(args)
  interval = 1000 / tonumber(args[1])
  limit = tonumber(args[2])
  math.randomseed(20261203)
end

function delay()
  local now = now_ms()
  local slot = math.max(due or now, now)
  due = slot - interval * math.log(1 - math.random())
  return math.floor(slot - now + 0.5)
end

function response(status, headers, body)
  answered = answered + 1
  if answered >= limit then
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local quantiles = {}
  for i = 1, 999 do
    quantiles[i] = string.format("%d", latency:percentile(i / 10))
  end
  local errors = summary.errors
  io.write(string.format(
    'BENCH {"requests": %d, "seconds": %.3f, "socket_errors": %d, "timeouts": %d, ' ..
    '"status_errors": %d, "max_us": %d, "quantiles_us": [%s]}\n',
    summary.requests, summary.duration / 1e6, errors.connect + errors.read + errors.write,
    errors.timeout, errors.status, latency.max, table.concat(quantiles, ",")))
end
