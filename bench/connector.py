"""Pushing a study into a PACS, measured: the 300-slice CT (512x512 16-bit, ~0.5 MB per slice,
synthetic patient) stored into a fresh Orthanc by dcmtk `storescu` from local files, and by
`ferry-connector run --once` from a release hub (the study was sent to the hub's community first;
the connector claims it, downloads by WADO-RS, checks SHA-256, stores by C-STORE). Both with
TCP_NODELAY. Prints storescu's MB/s, the connector's store phase (first to last PACS
confirmation, from its state database), its whole run (download + checks + store), and its peak
RSS; run with a larger SLICES to see the memory stay flat.

  python3 bench/connector.py [SLICES] [ASSOCIATIONS]
  (after `cargo build --release -p ferry-hub -p ferry-connector`; needs orthanc and dcmtk)
"""
import os
import sqlite3
import subprocess
import sys
import tempfile
import time

import requests

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import ROOT, TOKEN, start_orthanc  # noqa: E402
from send import bench_token, make_folder, prepare_hub  # noqa: E402

RELEASE = os.path.join(ROOT, "target", "release")


def count(orthanc):
    return requests.get(orthanc.dicomweb.rsplit("/dicom-web", 1)[0] + "/statistics").json()["CountInstances"]


def main(n, associations):
    with tempfile.TemporaryDirectory() as tmp:
        cd = os.path.join(tmp, "CD")
        size = make_folder(cd, n)
        env = dict(os.environ, TCP_NODELAY="1")

        pacs = start_orthanc(os.path.join(tmp, "a"))
        try:
            t0 = time.perf_counter()
            subprocess.run(["storescu", "-aec", "ORTHANC", "+sd", "+r", "127.0.0.1", str(pacs.dicom), os.path.join(cd, "DICOM")],
                           env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            storescu = time.perf_counter() - t0
            assert count(pacs) == n
        finally:
            pacs.stop()

        hub, base = prepare_hub(tmp)
        pacs = start_orthanc(os.path.join(tmp, "b"))
        try:
            token = bench_token(base)
            subprocess.run([os.path.join(RELEASE, "ferry-connector"), "send", "--hub", base, "--community", "bNch", "--note", "bench", cd],
                           env=dict(os.environ, FERRY_TOKEN=token), check=True, capture_output=True)
            c = requests.post(f"{base}/api/v1/communities/bNch/connectors", headers={"Authorization": f"Bearer {TOKEN}"}, json={"name": "bench"}).json()
            state = os.path.join(tmp, "connector")
            cfg = os.path.join(tmp, "connector.toml")
            with open(cfg, "w") as f:
                f.write(f'state_dir = "{state}"\n[hub]\nurl = "{base}"\nclient_id = "{c["client_id"]}"\nclient_secret = "{c["client_secret"]}"\n'
                        f'[[pacs]]\nname = "orthanc"\nkind = "dimse"\nhost = "127.0.0.1"\nport = {pacs.dicom}\ncalled_ae = "ORTHANC"\n'
                        f'associations = {associations}\n')
            t0 = time.perf_counter()
            out = subprocess.run(["/usr/bin/time", "-f", "%M", os.path.join(RELEASE, "ferry-connector"), "run", "--once", "--config", cfg],
                                 env=dict(env, FERRY_LOG="warn"), capture_output=True, text=True)
            whole = time.perf_counter() - t0
            assert out.returncode == 0, out.stderr[-2000:]
            rss = int(out.stderr.strip().splitlines()[-1]) / 1024
            assert count(pacs) == n
            db = sqlite3.connect(os.path.join(state, "connector.db"))
            first, last = db.execute("SELECT MIN(stored_at), MAX(stored_at) FROM deliveries").fetchone()
            # The first confirmation comes one image after the store phase began: add one slice's share.
            store = (last - first) / 1000 * n / max(n - 1, 1)
        finally:
            pacs.stop()
            hub.stop()
        mb = size / 1e6
        print(f"{n} slices, {mb:.0f} MB, into Orthanc by C-STORE (TCP_NODELAY):")
        print(f"  storescu from local files       {storescu:6.2f} s = {mb / storescu:5.0f} MB/s")
        print(f"  ferry-connector store phase     {store:6.2f} s = {mb / store:5.0f} MB/s ({associations} association(s))  = {storescu / store:.2f}x storescu")
        print(f"  ferry-connector whole run       {whole:6.2f} s = {mb / whole:5.0f} MB/s (claim, WADO-RS download, SHA-256, store, acks)")
        print(f"  ferry-connector peak RSS        {rss:6.0f} MB")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 300, int(sys.argv[2]) if len(sys.argv) > 2 else 1)
