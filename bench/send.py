"""Sending a 1 GB+ study the way a referrer does, measured: a CD-like folder of ~2,100 CT slices
(512x512 16-bit, ~0.5 MB each, synthetic patient) sent with `ferry-connector send` (a draft
transfer, batched multipart uploads, then send) into a fresh release hub on SQLite + local files.
Prints wall time, throughput and the peak RSS of hub and client.

  python3 bench/send.py [SLICES]     (after `cargo build --release -p ferry-hub -p ferry-connector`)
"""
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import requests

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import ROOT, TOKEN, peak_rss_mb, start_ferry  # noqa: E402
from memory import instance  # noqa: E402


def make_folder(path, n):
    rng = np.random.default_rng(n)
    px = rng.integers(0, 4096, size=(512, 512), dtype=np.uint16).astype("<u2").tobytes()
    study, series = f"2.25.{n}77", f"2.25.{n}78"
    os.makedirs(os.path.join(path, "DICOM"))
    total = 0
    for i in range(n):
        data = instance(study, series, i + 1, px)
        with open(os.path.join(path, "DICOM", f"IM{i:05d}"), "wb") as f:
            f.write(data)
        total += len(data)
    with open(os.path.join(path, "README.TXT"), "w") as f:
        f.write("Patient CD\n")
    return total


def prepare_hub(tmp):
    """A fresh release hub with the community `bNch` and the account bench@example.test."""
    hub = start_ferry(tmp)
    base = hub.base.rsplit("/dicomweb", 1)[0]
    r = requests.post(f"{base}/api/v1/communities", headers=hub.headers, json={"name": "Bench Klinik", "code": "bNch", "city": "Saarbrücken"})
    assert r.status_code == 201, r.text
    subprocess.run([os.path.join(ROOT, "target", "release", "ferry-hub"), "admin", "create-user", "--email", "bench@example.test",
                    "--name", "Bench", "--password-stdin", "--data-dir", os.path.join(tmp, "ferry")],
                   input=b"bench-password-123\n", check=True, stdout=subprocess.DEVNULL)
    return hub, base


def bench_token(base):
    """A personal access token of bench@example.test (made by `prepare_hub`)."""
    s = requests.Session()
    assert s.post(f"{base}/api/v1/auth/login", json={"email": "bench@example.test", "password": "bench-password-123"}).status_code == 200
    return s.post(f"{base}/api/v1/tokens", json={"name": "bench"}).json()["token"]


def main(n):
    with tempfile.TemporaryDirectory() as tmp:
        cd = os.path.join(tmp, "CD")
        size = make_folder(cd, n)
        hub, base = prepare_hub(tmp)
        try:
            token = bench_token(base)
            t0 = time.perf_counter()
            out = subprocess.run(["/usr/bin/time", "-f", "%M", os.path.join(ROOT, "target", "release", "ferry-connector"), "send",
                                  "--hub", base, "--community", "bNch", "--note", "bench", cd],
                                 env=dict(os.environ, FERRY_TOKEN=token), capture_output=True, text=True)
            secs = time.perf_counter() - t0
            assert out.returncode == 0, out.stderr[-2000:]
            client_rss = int(out.stderr.strip().splitlines()[-1]) / 1024
            print(out.stdout.strip())
            print(f"sent {size / 1e9:.2f} GB ({n} files) in {secs:.1f} s = {size / 1e6 / secs:.0f} MB/s; "
                  f"peak RSS hub {peak_rss_mb(hub.proc.pid):.0f} MB, client {client_rss:.0f} MB")
        finally:
            hub.stop()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2100)
