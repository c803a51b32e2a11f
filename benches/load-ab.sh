#!/usr/bin/env bash
# A/B load test of two builds of `load-server` (examples/src/bin/load-server.rs),
# on loopback only: for comparing a change to the HTTP layer on a noisy
# machine, where two separate `load.sh` runs can differ by more than the
# change does.
#
# Both servers run at once (an idle one costs nothing). Each round runs wrk
# against A's unprotected route, then A's and B's protected routes (A
# first in odd rounds, B first in even ones), back to back, so that both
# builds see the same machine load; the medians over the rounds are
# printed: A/unprotected, B/unprotected, and B/A, and each server's CPU
# time per protected request (from /proc) with their ratio.
#
# Usage: benches/load-ab.sh BIN_A BIN_B [ROUNDS] [SECONDS_PER_RUN]
#   (defaults: 8 rounds of 3 s; env CONNECTIONS, default 32; SINK_A and
#   SINK_B, each audit|audit-fail-open|tracing|none, default audit: the
#   same binary twice with two sinks compares the sinks; what write-ahead
#   costs: SINK_A=audit-fail-open SINK_B=audit)
#
# Build the two binaries first, for example the working tree against a
# commit:
#   cargo build --release -p capnagent-examples --bin load-server
#   cp target/release/load-server /tmp/load-server-b
#   git worktree add /tmp/base <commit>
#   (cd /tmp/base && cargo build --release -p capnagent-examples --bin load-server)
#   benches/load-ab.sh /tmp/base/target/release/load-server /tmp/load-server-b
#
# Installs wrk with apt-get when it is missing. The servers are stopped on
# exit.
set -euo pipefail

if [ $# -lt 2 ]; then
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
BIN_A=$1
BIN_B=$2
ROUNDS=${3:-8}
SECONDS_PER_RUN=${4:-3}
CONNECTIONS=${CONNECTIONS:-32}

# shellcheck source=benches/load-lib.sh
. "$(dirname "$0")/load-lib.sh"
ensure_wrk

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}" ${SERVER_PID:-}; do
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

start() { # $1 = binary, $2 = name, $3 = sink
  local dir="$work/$2"
  start_load_server "$1" "$dir" --sink "$3"
  pids+=("$SERVER_PID")
  echo "$SERVER_PID" >"$dir/pid"
  wrk_request_lua "$(cat "$dir/token")" "$(cat "$dir/body_file")" yes >"$dir/script.lua"
}

run() { # $1 = server name, $2 = route, $3 = seconds; prints requests/s
  wrk -t1 -c"$CONNECTIONS" -d"${3}s" --timeout 5s -s "$work/$1/script.lua" \
    "$(cat "$work/$1/url")/$2/checkout" | awk '/^Requests\/sec/ { print $2 }'
}

# A server's CPU time so far, in clock ticks (user + system, all threads).
ticks() { awk '{print $14 + $15}' "/proc/$(cat "$work/$1/pid")/stat"; }
ticks_per_sec=$(getconf CLK_TCK)

# `run` for a protected route, also printing the server's CPU time per
# request in microseconds (less sensitive than requests/s to other work on
# the machine): "requests/s us/request".
run_cpu() { # $1 = server name, $2 = seconds
  local before after rps
  before=$(ticks "$1")
  rps=$(run "$1" protected "$2")
  after=$(ticks "$1")
  awk -v t=$((after - before)) -v hz="$ticks_per_sec" -v rps="$rps" -v s="$2" \
    'BEGIN { printf "%s %.1f\n", rps, t / hz * 1e6 / (rps * s) }'
}

start "$BIN_A" a "${SINK_A:-audit}"
start "$BIN_B" b "${SINK_B:-audit}"
echo "== A: $BIN_A (sink ${SINK_A:-audit})"
echo "== B: $BIN_B (sink ${SINK_B:-audit})"
echo "== $ROUNDS rounds of ${SECONDS_PER_RUN}s per run, wrk -t1 -c$CONNECTIONS, $(nproc) CPUs"
for warm in "a protected" "b protected" "a unprotected"; do
  read -r name route <<<"$warm"
  run "$name" "$route" 1 >/dev/null
done

printf '%5s %14s %14s %14s %8s %8s %10s %10s\n' round "A unprotected" "A protected" "B protected" "A/unp" "B/unp" "A us/req" "B us/req"
: >"$work/results"
for round in $(seq 1 "$ROUNDS"); do
  unprotected=$(run a unprotected "$SECONDS_PER_RUN")
  # Odd rounds run A's protected route first, even rounds B's, so that
  # neither build always runs on the warmer machine.
  if [ $((round % 2)) = 1 ]; then
    read -r protected_a cpu_a <<<"$(run_cpu a "$SECONDS_PER_RUN")"
    read -r protected_b cpu_b <<<"$(run_cpu b "$SECONDS_PER_RUN")"
  else
    read -r protected_b cpu_b <<<"$(run_cpu b "$SECONDS_PER_RUN")"
    read -r protected_a cpu_a <<<"$(run_cpu a "$SECONDS_PER_RUN")"
  fi
  echo "$unprotected $protected_a $protected_b $cpu_a $cpu_b" >>"$work/results"
  awk -v n="$round" -v u="$unprotected" -v a="$protected_a" -v b="$protected_b" -v ca="$cpu_a" -v cb="$cpu_b" \
    'BEGIN { printf "%5d %14.0f %14.0f %14.0f %7.1f%% %7.1f%% %10s %10s\n", n, u, a, b, 100 * a / u, 100 * b / u, ca, cb }'
done

# Medians over the rounds.
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
a_ratio=$(awk '{ print $2 / $1 }' "$work/results" | median)
b_ratio=$(awk '{ print $3 / $1 }' "$work/results" | median)
b_over_a=$(awk '{ print $3 / $2 }' "$work/results" | median)
cpu_a=$(awk '{ print $4 }' "$work/results" | median)
cpu_b=$(awk '{ print $5 }' "$work/results" | median)
cpu_b_over_a=$(awk '{ print $5 / $4 }' "$work/results" | median)
echo
awk -v a="$a_ratio" -v b="$b_ratio" -v ba="$b_over_a" -v ca="$cpu_a" -v cb="$cpu_b" -v cba="$cpu_b_over_a" 'BEGIN {
  printf "median protected / unprotected: A %.1f%%, B %.1f%%\n", 100 * a, 100 * b
  printf "median B / A (protected route): %.3f\n", ba
  printf "median server CPU per protected request: A %.1f us, B %.1f us, B / A %.3f\n", ca, cb, cba
}'
