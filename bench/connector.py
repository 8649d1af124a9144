"""Pushing a study into a PACS, measured: the 300-slice CT (512x512 16-bit, ~0.5 MB per slice,
synthetic patient) stored into a fresh Orthanc by dcmtk `storescu` from local files, and by
`ferry-connector run --once` from a release hub (the study was sent to the hub's community first;
the connector claims it, downloads by WADO-RS, checks SHA-256, stores by C-STORE). Both with
TCP_NODELAY. Prints storescu's MB/s, the connector's store phase (first to last PACS
confirmation, from its state database), its whole run (download + checks + store), and its peak
RSS; run with a larger SLICES to see the memory stay flat.

Then the same study twice more with a second, optional target beside Orthanc (an archive:
dcmtk `storescp`), once up and once down (a port where nothing answers): the push rate into
Orthanc must not depend on the archive (issue 19). These runs use `ferry-connector run` until the
hub reports the transfer stored, since a `--once` run ends unfinished while the archive is down.

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
from bench import ROOT, TOKEN, bind_loopback, free_port, start_orthanc  # noqa: E402
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
        for archive_up in (True, False):
            store, whole = with_archive(tmp, cd, n, associations, archive_up)
            label = "up  " if archive_up else "down"
            print(f"  + optional archive {label}: store phase into Orthanc {store:6.2f} s = {mb / store:5.0f} MB/s, stored at the hub after {whole:6.2f} s")


def with_archive(tmp, cd, n, associations, archive_up):
    """Sends the study again and runs the connector with Orthanc (required) and an archive
    (optional) that is up (storescp) or down; returns (store phase into Orthanc, seconds until the
    hub had the transfer stored)."""
    tag = "up" if archive_up else "down"
    hub, base = prepare_hub(os.path.join(tmp, f"hub-{tag}"))
    pacs = start_orthanc(os.path.join(tmp, f"pacs-{tag}"))
    port = free_port()
    scp = None
    if archive_up:
        os.makedirs(os.path.join(tmp, f"archive-{tag}"))
        scp = subprocess.Popen(["storescp", "-aet", "ARCHIVE", "-od", os.path.join(tmp, f"archive-{tag}"), "--fork", str(port)],
                               env=dict(os.environ, TCP_NODELAY="1", LD_PRELOAD=bind_loopback()),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
    connector = None
    try:
        token = bench_token(base)
        subprocess.run([os.path.join(RELEASE, "ferry-connector"), "send", "--hub", base, "--community", "bNch", "--note", "bench", cd],
                       env=dict(os.environ, FERRY_TOKEN=token), check=True, capture_output=True)
        c = requests.post(f"{base}/api/v1/communities/bNch/connectors", headers={"Authorization": f"Bearer {TOKEN}"}, json={"name": "bench"}).json()
        state = os.path.join(tmp, f"connector-{tag}")
        cfg = os.path.join(tmp, f"connector-{tag}.toml")
        with open(cfg, "w") as f:
            f.write(f'state_dir = "{state}"\npoll_secs = 1\n[hub]\nurl = "{base}"\nclient_id = "{c["client_id"]}"\nclient_secret = "{c["client_secret"]}"\n'
                    f'[[pacs]]\nname = "orthanc"\nkind = "dimse"\nhost = "127.0.0.1"\nport = {pacs.dicom}\ncalled_ae = "ORTHANC"\n'
                    f'associations = {associations}\n'
                    f'[[pacs]]\nname = "archive"\nkind = "dimse"\nhost = "127.0.0.1"\nport = {port}\ncalled_ae = "ARCHIVE"\n'
                    f'associations = {associations}\nrequired = false\n')
        t0 = time.perf_counter()
        connector = subprocess.Popen([os.path.join(RELEASE, "ferry-connector"), "run", "--config", cfg],
                                     env=dict(os.environ, TCP_NODELAY="1", FERRY_LOG="warn"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while True:
            # The sender's view: their one sending, stored once Orthanc (the required target) has it.
            items = requests.get(f"{base}/api/v1/transfers", headers={"Authorization": f"Bearer {token}"}).json()
            if items and all(t["state"] == "stored" for t in items):
                break
            if time.perf_counter() - t0 > 600:
                raise SystemExit("the transfer was not stored within 10 minutes")
            time.sleep(0.05)
        whole = time.perf_counter() - t0
        assert count(pacs) == n
        db = sqlite3.connect(os.path.join(state, "connector.db"))
        first, last = db.execute("SELECT MIN(stored_at), MAX(stored_at) FROM deliveries WHERE target = 'orthanc'").fetchone()
        return (last - first) / 1000 * n / max(n - 1, 1), whole
    finally:
        if connector:
            connector.terminate()
            connector.wait()
        if scp:
            scp.terminate()
            scp.wait()
        pacs.stop()
        hub.stop()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 300, int(sys.argv[2]) if len(sys.argv) > 2 else 1)
