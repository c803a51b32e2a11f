#!/usr/bin/env bash
# HTTP load test for capnagent-tower, on loopback only.
#
# Starts `load-server` (examples/src/bin/load-server.rs), which serves the
# same JSON-parsing handler three times: /unprotected/checkout without any
# check; /jwt/checkout behind a hand-written JSON Web Token check, the
# baseline a service would write without capnagent (`jsonwebtoken`, HS256,
# claims sub/tool/max_amount_cents/exp: bearer header, token validated,
# tool claim, body buffered and parsed with serde_json for amount_cents <=
# max, body handed back); and /protected/checkout behind a CapabilityLayer
# (4 caveats, args from the 1 KiB JSON body, a signed receipt per request
# to the audit log). Then runs wrk against each route back to back, the
# order changing every round, and prints per route requests/s, latency
# percentiles and the server's CPU time per request; then, for
# capnagent/unprotected, JWT/unprotected and capnagent/JWT, the median of
# the per-round throughput ratios and of the per-round added server CPU
# per request, each with its 95 % interval (at least 6 rounds), and the
# share of CPU time the hypervisor took during the runs.
#
# Usage: benches/load.sh [SECONDS_PER_RUN] [CONNECTIONS]
#   env: ROUNDS (default 2), WRK_THREADS (default 1),
#        SINK (audit|audit-fail-open|tracing|none, default audit: the audit
#        log written ahead of each allowed call; audit-fail-open queues the
#        receipt and lets the call go on),
#        WORKERS (the server's tokio worker threads, default one per CPU),
#        PROFILE (the cargo profile to build with, default bench: the
#        workspace's production settings, fat LTO and one codegen unit;
#        `release` for the plain release profile)
#
# Installs wrk with apt-get when it is missing. Every run is bounded by its
# duration; the server is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_RUN=${1:-10}
CONNECTIONS=${2:-32}
ROUNDS=${ROUNDS:-2}
WRK_THREADS=${WRK_THREADS:-1}
SINK=${SINK:-audit}
WORKERS=${WORKERS:-}
PROFILE=${PROFILE:-bench}

# shellcheck source=benches/load-lib.sh
. benches/load-lib.sh
ensure_wrk

echo "== building load-server (profile $PROFILE)"
cargo build --profile "$PROFILE" --quiet -p capnagent-examples --bin load-server
case "$PROFILE" in
  release | bench) bin_dir=target/release ;;
  *) bin_dir=target/$PROFILE ;;
esac

work=$(mktemp -d)
SERVER_PID=""
cleanup() {
  if [ -n "$SERVER_PID" ]; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

start_load_server "$bin_dir/load-server" "$work/server" --sink "$SINK" ${WORKERS:+--workers "$WORKERS"}
server_pid=$SERVER_PID
url=$(cat "$work/server/url")
token=$(cat "$work/server/token")
jwt=$(cat "$work/server/jwt")
if [ -z "$jwt" ]; then
  echo "load-server printed no JWT (built from an older commit?)" >&2
  exit 1
fi
body_file=$(cat "$work/server/body_file")

# One wrk Lua script per route: POST the 1 KiB body; the protected and
# JWT routes also send their token. `done` prints one machine-readable line.
write_script() { # $1 = file, $2 = token ("" for none)
  {
    wrk_request_lua "$2" "$body_file" "$([ -n "$2" ] && echo yes || echo no)"
    cat <<'LUA'
done = function(summary, latency, requests)
  local secs = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format("RESULT %.0f %.1f %.1f %.1f %d %d\n",
    summary.requests / secs, latency:percentile(50), latency:percentile(99),
    latency.max, e.status, e.connect + e.read + e.write + e.timeout))
end
LUA
  } >"$1"
}
write_script "$work/protected.lua" "$token"
write_script "$work/jwt.lua" "$jwt"
write_script "$work/unprotected.lua" ""

run() { # $1 = route name, $2 = seconds
  wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"${2}s" --timeout 5s \
    -s "$work/$1.lua" "$url/$1/checkout" | sed -n 's/^RESULT //p'
}

# The server's CPU time so far, in clock ticks (user + system).
server_ticks() { awk '{print $14 + $15}' "/proc/$server_pid/stat"; }
# The machine's stolen and total CPU time so far (/proc/stat): time the
# hypervisor gave to other guests while this one wanted to run.
steal_ticks() { awk '/^cpu / { print $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat; }
ticks_per_sec=$(getconf CLK_TCK)

echo "== server $url, profile=$PROFILE, sink=$SINK, workers=${WORKERS:-default}, wrk -t$WRK_THREADS -c$CONNECTIONS, ${SECONDS_PER_RUN}s per run, $ROUNDS rounds, $(nproc) CPUs"
echo "== load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
# Every route must answer 200 before anything is measured.
for route in protected jwt unprotected; do
  read -r _ _ _ _ status_errors _ <<<"$(run "$route" 1)"
  if [ "$status_errors" != 0 ]; then
    echo "$route: $status_errors non-2xx responses in the warm-up; aborting" >&2
    exit 1
  fi
done

# One line per run; the server's CPU per request is less sensitive than
# requests/s to other work on the machine (wrk shares the CPUs).
printf '%-12s %5s %12s %9s %9s %9s %8s %14s\n' route round "requests/s" "p50 ms" "p99 ms" "max ms" non-2xx "server us/req"
: >"$work/results"
steal_before=$(steal_ticks)
for round in $(seq 1 "$ROUNDS"); do
  # The six orders in turn, so that no route always runs first or last,
  # nor always just before another one.
  case $(((round - 1) % 6)) in
    0) order="unprotected jwt protected" ;;
    1) order="protected jwt unprotected" ;;
    2) order="jwt protected unprotected" ;;
    3) order="unprotected protected jwt" ;;
    4) order="protected unprotected jwt" ;;
    5) order="jwt unprotected protected" ;;
  esac
  for route in $order; do
    before=$(server_ticks)
    read -r rps p50 p99 max status_errors socket_errors <<<"$(run "$route" "$SECONDS_PER_RUN")"
    after=$(server_ticks)
    cpu_us=$(awk -v t=$((after - before)) -v hz="$ticks_per_sec" -v rps="$rps" -v s="$SECONDS_PER_RUN" \
      'BEGIN { printf "%.1f", t / hz * 1e6 / (rps * s) }')
    echo "$route $rps $p99 $cpu_us $round" >>"$work/results"
    awk -v r="$route" -v n="$round" -v rps="$rps" -v p50="$p50" -v p99="$p99" -v max="$max" \
      -v errs=$((status_errors + socket_errors)) -v cpu="$cpu_us" \
      'BEGIN { printf "%-12s %5s %12.0f %9.2f %9.2f %9.2f %8d %14s\n", r, n, rps, p50/1000, p99/1000, max/1000, errs, cpu }'
  done
done

echo
awk '
  { rps[$1] += $2; p99[$1] += $3; cpu[$1] += $4; n[$1]++ }
  END {
    for (r in n) { rps[r] /= n[r]; p99[r] /= n[r]; cpu[r] /= n[r] }
    split("unprotected jwt protected", routes, " ")
    split("unprotected: |JWT:         |capnagent:   ", names, "|")
    for (i = 1; i <= 3; i++)
      printf "%s %8.0f requests/s   p99 %6.2f ms   server %6.1f us/request\n", names[i], rps[routes[i]], p99[routes[i]] / 1000, cpu[routes[i]]
    printf "capnagent / unprotected throughput: %.1f%% (target >= 80%%), JWT / unprotected: %.1f%%, capnagent / JWT: %.1f%%\n",
      100 * rps["protected"] / rps["unprotected"], 100 * rps["jwt"] / rps["unprotected"], 100 * rps["protected"] / rps["jwt"]
  }' "$work/results"
# Each round's run of one route against the same round's run of another:
# on a shared machine the median of these paired figures moves less than
# the ratio of the averages when the machine's speed drifts. The 95 %
# interval for that median is distribution-free (order statistics: the
# k-th lowest and k-th highest, k from the binomial distribution), so it
# holds however unevenly the machine's speed moves, as long as the rounds
# are independent.
paired() { # $1 = route A, $2 = route B, $3 = ratio|added: per round, A/B requests/s or A-B server us/request
  awk -v a="$1" -v b="$2" -v what="$3" '
    $1 == a { ra[$5] = $2; ca[$5] = $4 }
    $1 == b { rb[$5] = $2; cb[$5] = $4 }
    END {
      for (n in ra)
        if (n in rb && rb[n] > 0)
          printf "%.4f\n", what == "ratio" ? ra[n] / rb[n] : ca[n] - cb[n]
    }' "$work/results" | sort -g
}
summarize() { # stdin: sorted figures; $1 = label, $2 = ratio|added
  awk -v label="$1" -v what="$2" '{ r[NR] = $1 }
    END {
      if (NR == 0) exit
      scale = what == "ratio" ? 100 : 1
      unit = what == "ratio" ? "%" : " us"
      fmt = what == "ratio" ? "%.1f" : "%+.1f"
      mid = (NR % 2) ? r[(NR + 1) / 2] : (r[NR / 2] + r[NR / 2 + 1]) / 2
      # Largest k with P(Binomial(NR, 1/2) <= k - 1) <= 2.5 %.
      k = 0; term = 0.5 ^ NR; cum = term
      while (cum <= 0.025) { k++; term *= (NR - k + 1) / k; cum += term }
      interval = "95% interval needs at least 6 rounds"
      if (k >= 1)
        interval = sprintf("95%% interval " fmt "%s to " fmt "%s", scale * r[k], unit, scale * r[NR - k + 1], unit)
      printf "  %-36s median " fmt "%s, %s (%d rounds)\n", label, scale * mid, unit, interval, NR
    }'
}
echo "per-round paired throughput ratios:"
paired protected unprotected ratio | summarize "capnagent / unprotected" ratio
paired jwt unprotected ratio | summarize "JWT / unprotected" ratio
paired protected jwt ratio | summarize "capnagent / JWT" ratio
echo "per-round added server CPU per request:"
paired protected unprotected added | summarize "capnagent - unprotected" added
paired jwt unprotected added | summarize "JWT - unprotected" added
paired protected jwt added | summarize "capnagent - JWT" added
read -r steal0 total0 <<<"$steal_before"
read -r steal1 total1 <<<"$(steal_ticks)"
awk -v s=$((steal1 - steal0)) -v t=$((total1 - total0)) \
  'BEGIN { if (t > 0) printf "== CPU time stolen by the hypervisor during the runs: %.1f%%\n", 100 * s / t }'
echo "== load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
