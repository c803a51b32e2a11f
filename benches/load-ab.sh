#!/usr/bin/env bash
# A/B load test of two builds of `load-server` (examples/src/bin/load-server.rs),
# on loopback only: for comparing a change to the HTTP layer on a noisy
# machine, where two separate `load.sh` runs can differ by more than the
# change does.
#
# Both servers run at once (an idle one costs nothing). Each round runs wrk
# against A's unprotected route, then A's protected route, then B's
# protected route, back to back, so that both builds see the same machine
# load; the medians over the rounds are printed: A/unprotected,
# B/unprotected, and B/A.
#
# Usage: benches/load-ab.sh BIN_A BIN_B [ROUNDS] [SECONDS_PER_RUN]
#   (defaults: 8 rounds of 3 s; env CONNECTIONS, default 32; SINK_A and
#   SINK_B, each audit|tracing|none, default audit: the same binary twice
#   with two sinks compares the sinks)
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
  wrk_request_lua "$(cat "$dir/token")" "$(cat "$dir/body_file")" yes >"$dir/script.lua"
}

run() { # $1 = server name, $2 = route, $3 = seconds; prints requests/s
  wrk -t1 -c"$CONNECTIONS" -d"${3}s" --timeout 5s -s "$work/$1/script.lua" \
    "$(cat "$work/$1/url")/$2/checkout" | awk '/^Requests\/sec/ { print $2 }'
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

printf '%5s %14s %14s %14s %8s %8s\n' round "A unprotected" "A protected" "B protected" "A/unp" "B/unp"
: >"$work/results"
for round in $(seq 1 "$ROUNDS"); do
  unprotected=$(run a unprotected "$SECONDS_PER_RUN")
  protected_a=$(run a protected "$SECONDS_PER_RUN")
  protected_b=$(run b protected "$SECONDS_PER_RUN")
  echo "$unprotected $protected_a $protected_b" >>"$work/results"
  awk -v n="$round" -v u="$unprotected" -v a="$protected_a" -v b="$protected_b" \
    'BEGIN { printf "%5d %14.0f %14.0f %14.0f %7.1f%% %7.1f%%\n", n, u, a, b, 100 * a / u, 100 * b / u }'
done

# Medians over the rounds.
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
a_ratio=$(awk '{ print $2 / $1 }' "$work/results" | median)
b_ratio=$(awk '{ print $3 / $1 }' "$work/results" | median)
b_over_a=$(awk '{ print $3 / $2 }' "$work/results" | median)
echo
awk -v a="$a_ratio" -v b="$b_ratio" -v ba="$b_over_a" 'BEGIN {
  printf "median protected / unprotected: A %.1f%%, B %.1f%%\n", 100 * a, 100 * b
  printf "median B / A (protected route): %.3f\n", ba
}'
