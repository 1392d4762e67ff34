-- wrk script of scripts/bench.sh: a runtime fetching its users' tokens,
-- spread at random over the BENCH_TOKENS users seeded.
local n = tonumber(os.getenv("BENCH_TOKENS") or "1000")
local auth = "Bearer bench-credential-acme-prod-0123456789abcdef"
local counter = 0
request = function()
  counter = counter + 1
  local u = math.random(0, n - 1)
  return wrk.format("GET", "/api/v1/runtimes/acme-prod/users/bench-user-" .. u .. "/token", { ["Authorization"] = auth })
end
