-- wrk script: POST the file named by $BIREF_WRK_BODY (an image) to the URL wrk is given, e.g.
--   BIREF_WRK_BODY=img.png wrk -t2 -c8 -d30s --latency -s scripts/wrk-post.lua \
--     'http://127.0.0.1:8080/v1/segment?output=mask'
local path = os.getenv("BIREF_WRK_BODY")
assert(path, "set BIREF_WRK_BODY to the image file to send")
local f = assert(io.open(path, "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/octet-stream"

-- Answers by status over every thread ("statuses 200:812 503:4"); wrk's own summary only
-- counts the non-2xx/3xx ones.
local threads = {}
function setup(thread)
  threads[#threads + 1] = thread
end

function init(args)
  statuses = {}
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    for status, n in pairs(t:get("statuses")) do total[status] = (total[status] or 0) + n end
  end
  local parts = {}
  for status, n in pairs(total) do parts[#parts + 1] = status .. ":" .. n end
  table.sort(parts)
  io.write("statuses " .. table.concat(parts, " ") .. "\n")
end
