#!/usr/bin/env bash
# Runs the cargo-fuzz targets and minimises their corpora.
#
#   fuzz/run.sh [SECONDS] [TARGET...]
#
# Builds every target (nightly toolchain, cargo-fuzz), runs each TARGET
# (default: all of `cargo fuzz list`) for SECONDS (default 600) on its
# corpus fuzz/corpus/<target>, FUZZ_JOBS at a time (default 2) under
# `nice -n 10`, then minimises each corpus with `cargo fuzz cmin`. Logs go
# to fuzz/logs/<target>.log; crashes to fuzz/artifacts/<target>/. Prints
# each target's executions and exits non-zero if any target failed.
# Seed the corpora first with `python3 fuzz/seed.py`.
#
# Environment: FUZZ_JOBS (2), FUZZ_MAX_LEN (largest input, 8192),
# FUZZ_TOOLCHAIN (nightly), FUZZ_CMIN (1; 0 skips minimising).
set -euo pipefail
cd "$(dirname "$0")"

seconds=${1:-600}
[ $# -gt 0 ] && shift
jobs=${FUZZ_JOBS:-2}
max_len=${FUZZ_MAX_LEN:-8192}
cargo=(cargo "+${FUZZ_TOOLCHAIN:-nightly}" fuzz)

if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <("${cargo[@]}" list)
fi

"${cargo[@]}" build
mkdir -p logs

run() {
    local target=$1
    mkdir -p "corpus/$target"
    nice -n 10 "${cargo[@]}" run "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -max_len="$max_len" -rss_limit_mb=4096 \
        -print_final_stats=1 >"logs/$target.log" 2>&1
}

pids=()
names=()
failed=()
for target in "${targets[@]}"; do
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do
        wait -n || true
    done
    echo "fuzzing $target for ${seconds}s (log: fuzz/logs/$target.log)"
    run "$target" &
    pids+=($!)
    names+=("$target")
done
for i in "${!pids[@]}"; do
    if ! wait "${pids[$i]}"; then
        failed+=("${names[$i]}")
    fi
done

if [ "${FUZZ_CMIN:-1}" != 0 ]; then
    for target in "${targets[@]}"; do
        before=$(find "corpus/$target" -type f | wc -l)
        nice -n 10 "${cargo[@]}" cmin "$target" "corpus/$target" -- -max_len="$max_len" \
            >"logs/$target.cmin.log" 2>&1 || failed+=("$target (cmin)")
        after=$(find "corpus/$target" -type f | wc -l)
        echo "cmin $target: $before -> $after inputs, $(du -sh "corpus/$target" | cut -f1)"
    done
fi

for target in "${targets[@]}"; do
    units=$(grep -ho 'stat::number_of_executed_units: *[0-9]*' "logs/$target.log" | grep -o '[0-9]*$' | tail -1)
    done_line=$(grep -h '^Done ' "logs/$target.log" | tail -1)
    echo "$target: ${units:-?} executions; ${done_line:-no Done line (crash? see the log)}"
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "FAILED: ${failed[*]} (see fuzz/logs and fuzz/artifacts)" >&2
    exit 1
fi
