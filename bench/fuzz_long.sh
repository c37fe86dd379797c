#!/bin/sh
# The fuzzing suite's long profile (issue 14): 300 examples per property instead of CI's 10.
# Usage: bench/fuzz_long.sh [pytest args]; writes bench/logs/fuzz_long.log (git-ignored).
set -e
cd "$(dirname "$0")/.."
mkdir -p bench/logs
export STURDYNET_FUZZ_PROFILE=bench OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
export STURDYNET_CACHE=${STURDYNET_CACHE:-$(mktemp -d)}
python -m pytest tests/fuzz -q -p no:cacheprovider "$@" 2>&1 | tee bench/logs/fuzz_long.log
