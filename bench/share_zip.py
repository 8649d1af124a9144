"""Access-code downloads and redemptions, measured.

1. The 300-slice CT (512x512 16-bit, ~0.5 MB per slice, synthetic patient) shared through a release
   hub (SQLite + local files, encrypted at rest): the holder's ZIP (IHE PDI with DICOMDIR, announced
   Content-Length) against Orthanc's `/studies/{id}/archive` on the same files. Time to the first
   byte and MB/s of the whole body, median of 5 runs each.
2. Redemption: 100 concurrent clients each redeem the code 5 times (right answer, a new session
   each time); latency p50/p99 and redemptions per second. The per-address rate limit is lifted for
   this run (every client is 127.0.0.1); what is measured is the redemption itself, whose cost is
   one argon2id verification (19 MiB, 2 passes) by design.

  python3 bench/share_zip.py [SLICES]     (after `cargo build --release -p ferry-hub`; needs orthanc)
"""
import concurrent.futures
import os
import statistics
import sys
import tempfile
import time
import zipfile

import requests

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ["FERRY_SHARES__RATE_BURST"] = "1000000"
from bench import start_ferry, start_orthanc  # noqa: E402
from send import make_folder  # noqa: E402


def fetch(url, **kw):
    t0 = time.perf_counter()
    first = None
    n = 0
    with requests.get(url, stream=True, **kw) as r:
        r.raise_for_status()
        length = r.headers.get("content-length")
        for chunk in r.iter_content(1 << 20):
            if first is None:
                first = time.perf_counter() - t0
            n += len(chunk)
    total = time.perf_counter() - t0
    if length is not None:
        assert int(length) == n, "announced length differs"
    return first, total, n


def runs(fn, k):
    out = [fn() for _ in range(k)]
    ttfb = statistics.median(o[0] for o in out)
    secs = statistics.median(o[1] for o in out)
    return ttfb, secs, out[0][2]


def main(n):
    with tempfile.TemporaryDirectory() as tmp:
        cd = os.path.join(tmp, "CD")
        size = make_folder(cd, n)
        files = sorted(os.path.join(cd, "DICOM", f) for f in os.listdir(os.path.join(cd, "DICOM")))
        zpath = os.path.join(tmp, "cd.zip")
        with zipfile.ZipFile(zpath, "w", zipfile.ZIP_STORED) as z:
            for f in files:
                z.write(f, os.path.relpath(f, cd))

        hub = start_ferry(tmp)
        base = hub.base.rsplit("/dicomweb", 1)[0]
        try:
            h = hub.headers
            assert requests.post(f"{base}/api/v1/communities", headers=h, json={"name": "Bench Klinik", "code": "bNch", "city": "X"}).status_code == 201
            draft = requests.post(f"{base}/api/v1/shares", headers=h, json={"community": "bNch"}).json()
            with open(zpath, "rb") as body:
                r = requests.post(f"{base}/api/v1/shares/{draft['id']}/files", headers=dict(h, **{"content-type": "application/zip"}), data=body)
            assert r.status_code == 200, r.text
            issued = requests.post(f"{base}/api/v1/shares/{draft['id']}/issue", headers=h, json={"birth_date": "19700101"}).json()
            code = issued["code"]
            s = requests.Session()
            assert s.post(f"{base}/api/v1/redeem", json={"code": code, "answer": "19700101"}).status_code == 200
            ferry = runs(lambda: fetch(f"{base}/api/v1/share/download", cookies=s.cookies), 5)

            orthanc = start_orthanc(tmp)
            obase = orthanc.dicomweb.rsplit("/dicom-web", 1)[0]
            try:
                with requests.Session() as o:
                    for f in files:
                        with open(f, "rb") as fh:
                            o.post(f"{obase}/instances", data=fh.read()).raise_for_status()
                    study = o.get(f"{obase}/studies").json()[0]
                orth = runs(lambda: fetch(f"{obase}/studies/{study}/archive"), 5)
            finally:
                orthanc.stop()

            # Redemption under load.
            def one_client(_):
                lat = []
                with requests.Session() as c:
                    for _ in range(5):
                        t0 = time.perf_counter()
                        r = c.post(f"{base}/api/v1/redeem", json={"code": code, "answer": "19700101"})
                        lat.append(time.perf_counter() - t0)
                        assert r.status_code == 200, r.status_code
                return lat
            t0 = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(100) as pool:
                lat = sorted(x for l in pool.map(one_client, range(100)) for x in l)
            wall = time.perf_counter() - t0
        finally:
            hub.stop()

    mb = size / 1e6
    print(f"study: {n} slices, {mb:.0f} MB of DICOM")
    print("| | first byte | whole body | MB/s | ZIP size |")
    print("|---|---|---|---|---|")
    for name, (ttfb, secs, zsize) in (("Ferry /api/v1/share/download", ferry), ("Orthanc /studies/{id}/archive", orth)):
        print(f"| {name} | {ttfb * 1000:.0f} ms | {secs:.2f} s | {mb / secs:.0f} | {zsize / 1e6:.0f} MB |")
    print(f"ratio (Ferry MB/s / Orthanc MB/s): {orth[1] / ferry[1]:.1f}x")
    p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000  # noqa: E731
    print(f"redemption, 100 concurrent clients x 5: p50 {p(0.5):.0f} ms, p99 {p(0.99):.0f} ms, {len(lat) / wall:.0f} per second")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 300)
