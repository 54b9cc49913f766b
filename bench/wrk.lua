-- One API endpoint under load, for wrk (https://github.com/wg/wrk), driven by bench/api.py:
--
--   wrk -t1 -c8 -d10s -s bench/wrk.lua http://127.0.0.1:PORT -- METHOD PATH TOKENS_FILE IDS_FILE|- [BODY]
--
-- Each request carries the next API token of TOKENS_FILE (one a line; "Authorization: Bearer <token>") and,
-- when PATH contains "{id}", the next task id of IDS_FILE. "X-Forwarded-Proto: https" is what the README's
-- TLS-terminating proxy sends (DJANGO_SECURE_PROXY_SSL_HEADER=true), so the production HTTPS redirect stays on.
-- At the end one line "WRK_JSON {...}" gives the counts, the latency percentiles (microseconds, from wrk's
-- own histogram) and every HTTP status seen.

local threads = {}

function setup(thread)
    thread:set("offset", #threads * 7919) -- threads start at different tokens and ids
    table.insert(threads, thread)
end

local function read_lines(path)
    local items = {}
    for line in io.lines(path) do
        if line ~= "" then
            items[#items + 1] = line
        end
    end
    return items
end

function init(args)
    method, path, body = args[1], args[2], args[5]
    tokens = read_lines(args[3])
    ids = (args[4] ~= "-") and read_lines(args[4]) or { "0" }
    counter = offset or 0
    statuses = {}
end

function request()
    counter = counter + 1
    local headers = {
        ["Authorization"] = "Bearer " .. tokens[counter % #tokens + 1],
        ["X-Forwarded-Proto"] = "https",
        ["Accept"] = "application/json",
    }
    if body then
        headers["Content-Type"] = "application/json"
    end
    local target = path:gsub("{id}", ids[counter % #ids + 1])
    return wrk.format(method, target, headers, body)
end

function response(status, headers, body)
    statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
    local counts = {}
    for _, thread in ipairs(threads) do
        for status, n in pairs(thread:get("statuses")) do
            counts[status] = (counts[status] or 0) + n
        end
    end
    local parts = {}
    for status, n in pairs(counts) do
        parts[#parts + 1] = string.format('"%d": %d', status, n)
    end
    local e = summary.errors
    io.write(string.format(
        'WRK_JSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, '
            .. '"mean_us": %.1f, "errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d, "status": %d}, '
            .. '"statuses": {%s}}\n',
        summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
        latency:percentile(99), latency.max, latency.mean, e.connect, e.read, e.write, e.timeout, e.status,
        table.concat(parts, ", ")
    ))
end
