#!/usr/bin/env bash
# Load test of capnagent-gateway, on loopback only: what the capability
# layer adds to a reverse proxy.
#
# Starts two upstreams with no capability layer of their own, the example
# MCP server (`mcp-tool-server --unguarded`, rmcp, Streamable HTTP) and
# `load-server`'s `/unprotected/checkout` (a JSON handler), and two
# gateways per upstream built from the same binary and the same config
# except `layer`: `layer = true` (every request judged, a receipt written
# ahead to the audit log) and `layer = false` (a plain proxy; the switch
# exists for this comparison only). Then runs wrk against each gateway in
# turn, the order alternating every round:
#   mcp:  POST /mcp, a JSON-RPC `tools/call` of checkout_purchase in an
#         initialized session (answered as an SSE stream);
#   http: POST /unprotected/checkout, the 1 KiB JSON order of load.sh.
# Prints per run requests/s and latency percentiles, then per path the
# median p50/p99 of each arm and the median per-round throughput ratio
# (layer / plain).
#
# Usage: benches/gateway.sh [SECONDS_PER_RUN] [CONNECTIONS]
#   env: ROUNDS (default 3), WRK_THREADS (default 1),
#        PROFILE (cargo profile, default release; `bench` for fat LTO)
#
# Installs wrk with apt-get when it is missing. Every process is stopped on
# exit.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_RUN=${1:-5}
CONNECTIONS=${2:-16}
ROUNDS=${ROUNDS:-3}
WRK_THREADS=${WRK_THREADS:-1}
PROFILE=${PROFILE:-release}

# shellcheck source=benches/load-lib.sh
. benches/load-lib.sh
ensure_wrk

echo "== building (profile $PROFILE)"
cargo build --profile "$PROFILE" --quiet -p capnagent-gateway -p capnagent-examples -p capnagent-cli \
  --bin capnagent-gateway --bin load-server --bin mcp-tool-server --bin capnagent
case "$PROFILE" in
  release | bench) bin_dir=target/release ;;
  *) bin_dir=target/$PROFILE ;;
esac

work=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

"$bin_dir/capnagent" keygen >"$work/keys.env"

# Waits for a JSON ready line in $1; prints it.
ready_line() {
  for _ in $(seq 1 200); do
    if grep -q '"event":"ready"' "$1" 2>/dev/null; then
      grep -m1 '"event":"ready"' "$1"
      return
    fi
    sleep 0.05
  done
  echo "no ready line in $1:" >&2
  cat "$1" >&2
  exit 1
}
json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

# Upstreams.
"$bin_dir/mcp-tool-server" --unguarded --port 0 --root-key-file "$work/keys.env" \
  --audit-key-file "$work/keys.env" >"$work/mcp.out" 2>&1 &
PIDS+=($!)
mcp_ready=$(ready_line "$work/mcp.out")
mcp_upstream=$(echo "$mcp_ready" | json '["url"]' | sed 's#/mcp$##')
mcp_token=$(echo "$mcp_ready" | json '["tokens"]["agent"]')

start_load_server "$bin_dir/load-server" "$work/load" --sink none
PIDS+=("$SERVER_PID")
http_upstream=$(sed 's#/$##' "$work/load/url")
http_token=$("$bin_dir/capnagent" issue --root-key-file "$work/keys.env" --id bench \
  --caveat 'tool == "checkout.purchase"' --caveat 'arg.amount_cents <= 5000' \
  --caveat 'now <= @2099-01-01T00:00:00Z')
body_file=$(cat "$work/load/body_file")

# Four gateways: {mcp, http} x {layer, plain}.
start_gateway() { # $1 = name, $2 = mode, $3 = upstream, $4 = layer
  local routes=""
  if [ "$2" = http ]; then
    routes=$'[[http.routes]]\npath = "/unprotected/checkout"\ntool = "checkout.purchase"\nargs = "json"'
  fi
  cat >"$work/$1.toml" <<EOF
listen = "127.0.0.1:0"
upstream = "$3"
mode = "$2"
layer = $4
$routes
[keys]
root_key_file = "$work/keys.env"
audit_key_file = "$work/keys.env"
[audit]
log = "$work/$1.audit.ndjson"
EOF
  RUST_LOG=warn "$bin_dir/capnagent-gateway" --config "$work/$1.toml" >"$work/$1.out" 2>"$work/$1.err" &
  PIDS+=($!)
  ready_line "$work/$1.out" | json '["url"]'
}
mcp_layer=$(start_gateway mcp-layer mcp "$mcp_upstream" true)
mcp_plain=$(start_gateway mcp-plain mcp "$mcp_upstream" false)
http_layer=$(start_gateway http-layer http "$http_upstream" true)/unprotected/checkout
http_plain=$(start_gateway http-plain http "$http_upstream" false)/unprotected/checkout

# One MCP session, opened through the guarded gateway; both gateways reach
# the same upstream session.
accept='application/json, text/event-stream'
session=$(curl -s -D - -o /dev/null -X POST "$mcp_layer" \
  -H "authorization: Bearer $mcp_token" -H 'content-type: application/json' -H "accept: $accept" \
  -d '{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"wrk","version":"1"}}}' |
  sed -n 's/^mcp-session-id: *//Ip' | tr -d '\r')
if [ -z "$session" ]; then
  echo "no MCP session" >&2
  exit 1
fi
curl -s -o /dev/null -X POST "$mcp_layer" \
  -H "authorization: Bearer $mcp_token" -H 'content-type: application/json' -H "accept: $accept" \
  -H "mcp-session-id: $session" -H 'mcp-protocol-version: 2025-06-18' \
  -d '{"jsonrpc":"2.0","method":"notifications/initialized"}'

result_lua() {
  cat <<'LUA'
done = function(summary, latency, requests)
  local secs = summary.duration / 1e6
  local e = summary.errors
  -- wrk measures latency in microseconds; printed in ms
  io.write(string.format("RESULT %.0f %.2f %.2f %.2f %d %d\n",
    summary.requests / secs, latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000, e.status, e.connect + e.read + e.write + e.timeout))
end
LUA
}
{
  echo 'wrk.method = "POST"'
  echo 'wrk.headers["Content-Type"] = "application/json"'
  echo "wrk.headers[\"Accept\"] = \"$accept\""
  echo "wrk.headers[\"Authorization\"] = \"Bearer $mcp_token\""
  echo "wrk.headers[\"Mcp-Session-Id\"] = \"$session\""
  echo 'wrk.headers["Mcp-Protocol-Version"] = "2025-06-18"'
  # A fresh JSON-RPC id per request.
  cat <<'LUA'
local n = 0
request = function()
  n = n + 1
  local body = string.format('{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"checkout_purchase","arguments":{"merchant":"acme","amount_cents":1299}}}', n)
  return wrk.format(nil, nil, nil, body)
end
LUA
  result_lua
} >"$work/mcp.lua"
{
  wrk_request_lua "$http_token" "$body_file" yes
  result_lua
} >"$work/http.lua"

run() { # $1 = path (mcp|http), $2 = url, $3 = seconds
  wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"${3}s" --timeout 5s -s "$work/$1.lua" "$2" | sed -n 's/^RESULT //p'
}

echo "== profile=$PROFILE, wrk -t$WRK_THREADS -c$CONNECTIONS, ${SECONDS_PER_RUN}s per run, $ROUNDS rounds, $(nproc) CPUs"
echo "== load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
# Every arm must answer 200 (and an allowed call) before anything is measured.
for arm in "mcp $mcp_layer" "mcp $mcp_plain" "http $http_layer" "http $http_plain"; do
  read -r path url <<<"$arm"
  read -r _ _ _ _ status_errors socket_errors <<<"$(run "$path" "$url" 1)"
  if [ "$status_errors" != 0 ] || [ "$socket_errors" != 0 ]; then
    echo "$path $url: $status_errors non-2xx, $socket_errors socket errors in the warm-up; aborting" >&2
    exit 1
  fi
done
if grep -q '"isError":true' <(curl -s -X POST "$mcp_layer" -H "authorization: Bearer $mcp_token" \
  -H 'content-type: application/json' -H "accept: $accept" -H "mcp-session-id: $session" \
  -H 'mcp-protocol-version: 2025-06-18' \
  -d '{"jsonrpc":"2.0","id":"check","method":"tools/call","params":{"name":"checkout_purchase","arguments":{"merchant":"acme","amount_cents":1299}}}'); then
  echo "the benchmarked MCP call is denied; aborting" >&2
  exit 1
fi

printf '%-5s %-6s %5s %12s %9s %9s %9s %8s\n' path arm round "requests/s" "p50 ms" "p99 ms" "max ms" errors
: >"$work/results"
for round in $(seq 1 "$ROUNDS"); do
  if [ $((round % 2)) = 1 ]; then order="layer plain"; else order="plain layer"; fi
  for path in mcp http; do
    for arm in $order; do
      url_var="${path}_${arm}"
      read -r rps p50 p99 max status_errors socket_errors <<<"$(run "$path" "${!url_var}" "$SECONDS_PER_RUN")"
      printf '%-5s %-6s %5d %12s %9s %9s %9s %8s\n' "$path" "$arm" "$round" "$rps" "$p50" "$p99" "$max" \
        "$((status_errors + socket_errors))"
      echo "$path $arm $round $rps $p50 $p99" >>"$work/results"
    done
  done
done

echo
echo "== medians over $ROUNDS rounds (latency in ms; ratio = layer / plain requests/s, per round)"
python3 - "$work/results" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
for path in ("mcp", "http"):
    arms = {}
    for p, arm, rnd, rps, p50, p99 in rows:
        if p == path:
            arms.setdefault(arm, {})[rnd] = (float(rps), float(p50), float(p99))
    med = lambda arm, i: statistics.median(v[i] for v in arms[arm].values())
    ratios = [arms["layer"][r][0] / arms["plain"][r][0] for r in arms["layer"] if r in arms["plain"]]
    print(f"{path:5} layer: {med('layer', 0):8.0f} req/s  p50 {med('layer', 1):6.2f}  p99 {med('layer', 2):6.2f}"
          f" | plain: {med('plain', 0):8.0f} req/s  p50 {med('plain', 1):6.2f}  p99 {med('plain', 2):6.2f}"
          f" | ratio {statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f})")
PY
