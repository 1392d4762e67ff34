#!/usr/bin/env bash
# The performance benchmark, one command, over real loopback HTTP:
#
#   scripts/bench.sh
#
# Builds release, starts Redis, the mock provider (examples/bench_driver.rs
# `mock`), the real `gitbroker serve` binary on each store, the bare axum
# baseline (examples/bare_axum.rs) and the Node peer (grant +
# express-session + connect-redis, pinned in benches/peer/package.json,
# installed into target/bench/peer), and measures in one run:
#
# - the runtime token fetch with wrk at each of BENCH_CONNECTIONS, against
#   the bare axum endpoint right after it (the ratio is of the same run);
# - the token page of a user with tokens on 50 runtimes (wrk, 1 connection:
#   server CPU per render and latency);
# - whole OAuth flows, 32 users (page → start → mock provider → callback →
#   code exchange → stored → page), for gitbroker and for the peer, with the
#   Redis commands per flow (INFO commandstats delta).
#
# Figures: throughput, p50/p90/p99 (wrk --latency), CPU per request (the
# server's utime+stime from /proc over the run, divided by the requests) and
# RSS. The load average is printed: the machine may be shared.
#
# Environment: BENCH_SECS (10), BENCH_CONNECTIONS ("16 64"), BENCH_TOKENS
# (tokens stored for the fetch; 1000), BENCH_STORES ("redis embedded"),
# BENCH_BINARIES (gitbroker binaries to compare, `label=path` pairs; default
# this tree's release build as `this`), BENCH_FLOW_USERS (32),
# BENCH_PAGE_GRANTS (authorizations behind the page user's 50 tokens; 5),
# BENCH_PARTS ("fetch page flow peer"), BENCH_PORT_BASE (18000: ports
# 18080 broker, 18081 mock, 18082 peer, 18090 bare axum, 18379 Redis).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SECS=${BENCH_SECS:-10}
CONNS=${BENCH_CONNECTIONS:-"16 64"}
TOKENS=${BENCH_TOKENS:-1000}
STORES=${BENCH_STORES:-"redis embedded"}
FLOW_USERS=${BENCH_FLOW_USERS:-32}
PAGE_GRANTS=${BENCH_PAGE_GRANTS:-5}
PARTS=${BENCH_PARTS:-"fetch page flow peer"}
OUT=$ROOT/target/bench
mkdir -p "$OUT"

need() { command -v "$1" >/dev/null 2>&1; }
missing=()
need wrk || missing+=(wrk)
need redis-server || missing+=(redis-server)
need node || missing+=(nodejs)
need npm || missing+=(npm)
if ((${#missing[@]})); then
  echo "installing ${missing[*]}" >&2
  apt-get install -y "${missing[@]}" >&2
fi

nice cargo build --release --bin gitbroker --example bare_axum --example bench_driver >&2
DRIVER=$ROOT/target/release/examples/bench_driver
BARE=$ROOT/target/release/examples/bare_axum
BINARIES=${BENCH_BINARIES:-"this=$ROOT/target/release/gitbroker"}

if [[ $PARTS == *peer* ]] && ! cmp -s benches/peer/package.json "$OUT/peer/package.json"; then
  mkdir -p "$OUT/peer"
  cp benches/peer/package.json "$OUT/peer/"
  (cd "$OUT/peer" && npm install --no-audit --no-fund >&2)
fi
cp benches/peer/server.js "$OUT/peer/" 2>/dev/null || true

# BENCH_PORT_BASE (18000) moves every port, for two runs on one machine
PORT_BASE=${BENCH_PORT_BASE:-18000}
REDIS_PORT=$((PORT_BASE + 379))
MOCK_PORT=$((PORT_BASE + 81))
BROKER_PORT=$((PORT_BASE + 80))
BARE_PORT=$((PORT_BASE + 90))
PEER_PORT=$((PORT_BASE + 82))
REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
MOCK="http://127.0.0.1:$MOCK_PORT"
BROKER="http://127.0.0.1:$BROKER_PORT"

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

wait_http() {
  for _ in $(seq 1 200); do
    curl -s -o /dev/null "$1" && return 0
    sleep 0.05
  done
  echo "nothing answers on $1" >&2
  return 1
}

# CPU ticks (utime + stime) and RSS (KiB) of a process
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
HZ=$(getconf CLK_TCK)

config() { # $1 store
  local store
  if [[ $1 == redis ]]; then
    store="backend = \"redis\"
redis_url = \"$REDIS_URL\""
  else
    store="backend = \"embedded\"
path = \"$OUT/store.redb\""
  fi
  cat <<EOF
public_url = "$BROKER"
listen = "127.0.0.1:$BROKER_PORT"
secure_cookies = false
allow_insecure_http = true
[log]
format = "json"
level = "info"
[store]
$store
[lifecycle]
background = false
# 32 users on one loopback address run flow after flow: far above any limit
[rate_limit]
sign_in_per_ip = 0
flow_start_per_ip = 0
flow_start_per_user = 0
token_check_per_ip = 0
token_check_per_user = 0
[encryption]
keys = [{ id = "bench", key = "YmVuY2gta2V5LWJlbmNoLWtleS1iZW5jaC1rZXktMDE=" }]
[oidc]
issuer = "$MOCK/idp"
client_id = "gitbroker-bench"
client_secret = "bench-oidc-client-secret"
[admin]
group = "gitbroker-admins"
api_token = "bench-admin-api-token-0123456789abcdef"
[[accounts]]
id = "acme"
name = "Acme"
groups = ["acme-devs"]
[[oauth_apps]]
id = "github-app"
name = "gitbroker bench"
provider = "github"
base_url = "$MOCK"
client_id = "bench-github-client"
client_secret = "bench-github-client-secret"
scopes = ["repo"]
[[runtimes]]
id = "acme-prod"
account = "acme"
git_host = "github.com"
oauth_app = "github-app"
credential = "bench-credential-acme-prod-0123456789abcdef"
EOF
  for i in $(seq 1 49); do
    cat <<EOF
[[runtimes]]
id = "rt-$i"
account = "acme"
git_host = "github.com"
oauth_app = "github-app"
credential = "bench-credential-rt-$i-0123456789abcdef"
EOF
  done
}

PAGE_RUNTIMES=acme-prod$(printf ',rt-%s' $(seq 1 49))

echo "# scripts/bench.sh $(date -u +%FT%TZ), $(nproc) cores, commit $(git rev-parse --short HEAD)"
echo "# load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"

redis-server --port $REDIS_PORT --bind 127.0.0.1 --save "" --appendonly no --dir "$OUT" \
  >"$OUT/redis.log" 2>&1 &
PIDS+=($!)
config redis >"$OUT/redis.toml"
config embedded >"$OUT/embedded.toml"
"$DRIVER" mock 127.0.0.1:$MOCK_PORT "$OUT/redis.toml" \
  "http://127.0.0.1:$PEER_PORT/connect/github/callback" "$FLOW_USERS" >"$OUT/mock.log" 2>&1 &
PIDS+=($!)
"$BARE" 127.0.0.1:$BARE_PORT &
PIDS+=($!)
wait_http "$MOCK/idp/.well-known/openid-configuration"
until redis-cli -p $REDIS_PORT ping >/dev/null 2>&1; do sleep 0.05; done
# the mock approves at once for `alice`, as GitHub does for an app granted before
curl -sf -X POST -H 'content-type: application/json' -d '{"auto_approve":"alice"}' \
  "$MOCK/__mock/switches" >/dev/null

# wrk run: prints "req/s p50 p90 p99 cpu_us_per_req rss_mib" for process $1
wrk_run() { # pid conns secs url [wrk args…]
  local pid=$1 conns=$2 secs=$3 url=$4
  shift 4
  local t0 t1 out
  t0=$(ticks "$pid")
  out=$(BENCH_TOKENS=$TOKENS wrk -t"$((conns < 2 ? conns : 2))" -c"$conns" -d"${secs}s" --latency "$@" "$url")
  t1=$(ticks "$pid")
  if grep -q "Non-2xx" <<<"$out"; then
    echo "wrk saw errors on $url:" >&2
    echo "$out" >&2
    return 1
  fi
  awk -v dt=$((t1 - t0)) -v hz="$HZ" -v rss="$(rss "$pid")" '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
    /^ +50%/ { p50 = ms($2) } /^ +90%/ { p90 = ms($2) } /^ +99%/ { p99 = ms($2) }
    /requests in/ { n = $1 }
    /^Requests\/sec/ { rps = $2 }
    END { printf "%.0f req/s | %.2f / %.2f / %.2f ms | %.0f µs | %.0f MiB", rps, p50, p90, p99, dt / hz * 1e6 / n, rss / 1024 }' <<<"$out"
}

redis_calls() { redis-cli -p $REDIS_PORT info commandstats | awk -F'[=,:]' '/^cmdstat/ {s += $3} END {print s}'; }

# a flow run: prints "flows/s | p50 / p90 / p99 | CPU per flow | RSS | Redis commands per flow"
flow_run() { # kind url pid
  local kind=$1 url=$2 pid=$3 t0 t1 c0 c1 out flows
  c0=$(redis_calls)
  t0=$(ticks "$pid")
  out=$("$DRIVER" flow "$kind" "$url" "$FLOW_USERS" "$SECS")
  t1=$(ticks "$pid")
  c1=$(redis_calls)
  flows=$(sed -n 's/.*flows=\([0-9]*\) .*/\1/p' <<<"$out")
  # the warm-up flows (one per user) and sign-ins count in the Redis total
  awk -v o="$out" -v dt=$((t1 - t0)) -v hz="$HZ" -v rss="$(rss "$pid")" -v dc=$((c1 - c0)) -v n="$flows" -v u="$FLOW_USERS" 'BEGIN {
    split(o, f, " "); for (i in f) { split(f[i], kv, "="); v[kv[1]] = kv[2] }
    printf "%s flows/s (%s failed) | %s / %s / %s ms | %.0f µs | %.0f MiB | %.1f", v["flows_per_s"], v["failed"], v["p50_ms"], v["p90_ms"], v["p99_ms"], dt / hz * 1e6 / n, rss / 1024, dc / (n + u) }'
}

start_broker() { # binary store
  rm -f "$OUT/store.redb"
  redis-cli -p $REDIS_PORT flushall >/dev/null
  "$DRIVER" seed "$OUT/$2.toml" acme-prod bench-user- "$TOKENS" 2>>"$OUT/seed.log"
  # the token page's user (mock user bench-0) has a token on all 50
  # runtimes, from BENCH_PAGE_GRANTS authorizations
  "$DRIVER" seed-page "$OUT/$2.toml" sub-bench-0 "$PAGE_RUNTIMES" "$PAGE_GRANTS" 2>>"$OUT/seed.log"
  "$1" serve --config "$OUT/$2.toml" 2>"$OUT/broker-$2.log" &
  BROKER_PID=$!
  PIDS+=($BROKER_PID)
  wait_http "$BROKER/healthz"
}

FETCH_URL="$BROKER/api/v1/runtimes/acme-prod/users/bench-user-0/token"
BARE_URL="http://127.0.0.1:$BARE_PORT/api/v1/runtimes/acme-prod/users/bench-user-0/token"
LUA=$ROOT/benches/peer/fetch.lua
BARE_PID=${PIDS[2]}

echo
echo "| binary | store | what | throughput | p50 / p90 / p99 | CPU per request | RSS | Redis cmds | ratio |"
echo "|---|---|---|---|---|---|---|---|---|"
for pair in $BINARIES; do
  label=${pair%%=*}
  bin=${pair#*=}
  for store in $STORES; do
    start_broker "$bin" "$store"
    if [[ $PARTS == *fetch* ]]; then
      # warm-up
      wrk -t2 -c16 -d2s -s "$LUA" "$FETCH_URL" >/dev/null
      for c in $CONNS; do
        g=$(wrk_run "$BROKER_PID" "$c" "$SECS" "$FETCH_URL" -s "$LUA")
        b=$(wrk_run "$BARE_PID" "$c" "$SECS" "$BARE_URL" -H "Authorization: Bearer bench-credential-acme-prod-0123456789abcdef")
        ratio=$(awk -v g="${g%% *}" -v b="${b%% *}" 'BEGIN { printf "%.2f", g / b }')
        echo "| $label | $store | fetch, $c conn, $TOKENS tokens | $g | | $ratio |"
        echo "| | | bare axum, $c conn | $b | | |"
      done
    fi
    if [[ $PARTS == *page* ]]; then
      cookie=$("$DRIVER" session "$BROKER" bench-0)
      p=$(wrk_run "$BROKER_PID" 1 5 "$BROKER/tokens" -H "Cookie: $cookie")
      echo "| $label | $store | token page, 50 runtimes ($PAGE_GRANTS grants), 1 conn | $p | | |"
    fi
    if [[ $PARTS == *flow* ]]; then
      f=$(flow_run gitbroker "$BROKER" "$BROKER_PID")
      [[ $store == redis ]] || f="${f% | *} | –"
      echo "| $label | $store | whole flow, $FLOW_USERS users | $f | |"
    fi
    kill "$BROKER_PID"
    wait "$BROKER_PID" 2>/dev/null || true
  done
done

if [[ $PARTS == *peer* ]]; then
  redis-cli -p $REDIS_PORT flushall >/dev/null
  node "$OUT/peer/server.js" $PEER_PORT "$MOCK" "$REDIS_URL" >"$OUT/peer.log" 2>&1 &
  PEER_PID=$!
  PIDS+=($PEER_PID)
  wait_http "http://127.0.0.1:$PEER_PORT/page"
  f=$(flow_run peer "http://127.0.0.1:$PEER_PORT" "$PEER_PID")
  echo "| grant + express-session + connect-redis | redis | whole flow, $FLOW_USERS users | $f | |"
fi
echo
echo "# load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
