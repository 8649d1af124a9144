#!/bin/sh
# Fuzzes the hub's hostile-input paths for a bounded time: the DICOM parse path, the STOW-RS
# multipart path and the ZIP upload path (hub/src/fuzzing.rs). Needs the nightly toolchain;
# installs cargo-fuzz when missing. Seeds come from pydicom's bundled test files.
#   hub/fuzz/run.sh [SECONDS_PER_TARGET]      (default 60)
# One allocation over 256 MB for an input of at most 256 KB counts as a bug (memory amplification).
# A crash, leak or out-of-memory leaves its input in hub/fuzz/artifacts/<target>/ and the script
# exits 1: keep the bytes under hub/fuzz/regressions/ with a test in hub/src/fuzzing.rs, then fix.
set -eu
cd "$(dirname "$0")"
SECS=${1:-60}
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
rm -rf artifacts
mkdir -p corpus/dicom corpus/stow corpus/zip
python3 - <<'PY'
import glob, io, os, zipfile
from pydicom.data import get_testdata_files
files = [f for f in get_testdata_files("*.dcm") if os.path.getsize(f) < 200_000][:40]
for i, f in enumerate(files):
    data = open(f, "rb").read()
    open(f"corpus/dicom/seed{i}", "wb").write(data)
    body = b"--b\r\nContent-Type: application/dicom\r\n\r\n" + data + b"\r\n--b--\r\n"
    open(f"corpus/stow/seed{i}", "wb").write(b'multipart/related; type="application/dicom"; boundary=b\n' + body)
    z = io.BytesIO()
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"CD/IMG{i}", data)
        zf.writestr("DICOMDIR", b"x")
    open(f"corpus/zip/seed{i}", "wb").write(z.getvalue())
PY
for t in dicom stow zip; do
  echo "== fuzzing $t for ${SECS}s"
  cargo +nightly fuzz run "$t" "corpus/$t" -- -max_total_time="$SECS" -rss_limit_mb=2048 -malloc_limit_mb=256 -max_len=262144 -print_final_stats=1 2>&1 \
    | grep -E "^(#[0-9]+ *DONE|stat::number_of_executed_units|stat::peak_rss_mb|==[0-9]+==ERROR|SUMMARY|artifact_prefix|Test unit written)" || true
  if [ -n "$(find "artifacts/$t" -type f 2>/dev/null | head -n 1)" ]; then
    echo "!! $t found a problem: see hub/fuzz/artifacts/$t/"; exit 1
  fi
done
echo "no crashes"
