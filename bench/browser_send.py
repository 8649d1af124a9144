"""The send page with a 1 GB+ study in real Chromium: the same CD-like folder as bench/send.py
(2,100 synthetic CT slices, ~1.1 GB), chosen as a folder on the send page, scanned in the browser,
uploaded in batches, sent. Prints scan time, send time, throughput and the hub's peak RSS.

  python3 bench/browser_send.py [SLICES]   (after `cargo build --release -p ferry-hub` and
                                            tests/run.sh, which installs chromium + playwright-core)
"""
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import ROOT, peak_rss_mb  # noqa: E402
from send import make_folder, prepare_hub  # noqa: E402


def main(n):
    with tempfile.TemporaryDirectory() as tmp:
        cd = os.path.join(tmp, "CD")
        size = make_folder(cd, n)
        hub, base = prepare_hub(tmp)
        try:
            env = dict(os.environ, HUB=base, EMAIL="bench@example.test", PASSWORD="bench-password-123", FOLDER=cd, CODE="bNch")
            out = subprocess.run(["node", os.path.join(ROOT, "bench", "browser_send.mjs")], env=env, capture_output=True, text=True)
            assert out.returncode == 0, out.stderr[-2000:]
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{r['found']}: scanned in {r['scan_s']} s, sent {size / 1e9:.2f} GB in {r['send_s']} s "
                  f"= {size / 1e6 / r['send_s']:.0f} MB/s; hub peak RSS {peak_rss_mb(hub.proc.pid):.0f} MB")
        finally:
            hub.stop()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2100)
