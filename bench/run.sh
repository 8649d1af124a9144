#!/usr/bin/env bash
# Benchmark: Ferry vs Orthanc on a generated corpus (see bench/README.md). Not part of the test
# suite; results go to bench/out/ (ignored by git) and are summarised by hand in bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -c 'import pydicom, numpy, requests' 2>/dev/null || python3 -m pip install --quiet pydicom numpy requests
[ -x /usr/sbin/Orthanc ] || { echo "Orthanc missing: run tests/run.sh first (it installs the peers)"; exit 1; }
cargo build --release -p ferry-hub --locked
CORPUS=${FERRY_BENCH_CORPUS:-bench/out/corpus}
[ -d "$CORPUS/ct" ] || python3 bench/gen_corpus.py "$CORPUS"
mkdir -p bench/out
python3 bench/bench.py "$CORPUS" bench/out/results.md
