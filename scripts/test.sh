#!/usr/bin/env bash
# The test command (README "Run the tests"): sets up what the tests need,
# then runs every test in the workspace, including the conformance replay.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test --workspace --locked "$@"
