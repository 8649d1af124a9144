"""QIDO-RS and ingest with many tenants: 10,000 studies spread over 20 communities.

  cargo build --release -p ferry-hub --locked
  python3 bench/tenancy.py [path/to/ferry-hub]      (default: target/release/ferry-hub)

Starts a release hub (SQLite, local files, encryption on) on a free loopback port, creates 20
communities with one member each, and a referrer who sends each community 20 transfers of 25
single-instance studies (10,000 studies, 10,000 instances, all through the referrer's API:
open a draft, upload a folder, send). Then measures, with the same query mix as bench.py:

- QIDO-RS study search as one community's member (sees 500 of the 10,000 studies), p50/p99;
- the same searches with the operator token (sees everything), p50/p99;
- ingest: instances per second and MB/s of the transfer uploads (25 files per request).

Bounded: fixed counts everywhere; the hub is stopped at the end. Prints a Markdown table.
"""
import io
import os
import random
import subprocess
import sys
import tempfile
import time

import requests
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import bench  # noqa: E402  (free_port, wait_http, pct, peak_rss_mb)

COMMUNITIES = 20
TRANSFERS = 20
STUDIES_PER_TRANSFER = 25
PASSWORD = "bench password 123"


def instance(rng, c, t, s):
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    ds = Dataset()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = sop
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.PatientName = f"bench^c{c:02d}t{t:02d}s{s:02d}"
    ds.PatientID = f"BENCH-{c:02d}-{t:02d}-{s:02d}"
    ds.PatientBirthDate = "19700101"
    ds.StudyDate = f"2024{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
    ds.StudyTime = "101500"
    ds.Modality = rng.choice(["CT", "MR", "CR", "US"])
    ds.AccessionNumber, ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = f"A{c}{t}{s}", "1", "1", "1"
    ds.Rows = ds.Columns = 16
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = bytes(512)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return study, buf.getvalue()


def cli(binary, data_dir, *args, stdin=None):
    env = dict(os.environ, FERRY_LOG__FILTER="warn")
    r = subprocess.run([binary, *args, "--data-dir", data_dir], input=stdin, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(f"{args}: {r.stderr}")
    return r.stdout


def signed_in(base, email):
    s = requests.Session()
    r = s.post(f"{base}/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert r.status_code == 200, r.text
    r = s.post(f"{base}/api/v1/tokens", json={"name": "bench"})
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target", "release", "ferry-hub")
    rng = random.Random(20261202)
    keep = os.environ.get("BENCH_KEEP")  # a folder to keep the hub's data in (for profiling)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = keep or os.path.join(tmp, "ferry")
        port = bench.free_port()
        env = dict(os.environ, FERRY_AUTH__ADMIN_TOKEN=bench.TOKEN, FERRY_LOG__FILTER="warn", FERRY_AUTH__RATE_BURST="100000")
        proc = subprocess.Popen([binary, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data_dir],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        admin = {"Authorization": f"Bearer {bench.TOKEN}"}
        try:
            bench.wait_http(f"{base}/readyz")
            cli(binary, data_dir, "admin", "create-user", "--email", "referrer@bench.test", "--name", "Referrer", "--password-stdin", stdin=PASSWORD)
            referrer = signed_in(base, "referrer@bench.test")
            members = []
            for c in range(COMMUNITIES):
                code = f"BN{c:02d}"
                r = requests.post(f"{base}/api/v1/communities", headers=admin, json={"name": f"Bench Clinic {c}", "code": code, "city": "Bench"})
                assert r.status_code == 201, r.text
                email = f"member{c}@bench.test"
                cli(binary, data_dir, "admin", "create-user", "--email", email, "--name", f"Member {c}", "--password-stdin", stdin=PASSWORD)
                r = requests.put(f"{base}/api/v1/communities/{code}/members", headers=admin, json={"email": email, "role": "member"})
                assert r.status_code == 200, r.text
                members.append(signed_in(base, email))
            # Ingest: every transfer through the referrer's API.
            up_bytes, up_secs, n_inst = 0, 0.0, 0
            studies = {}
            for c in range(COMMUNITIES):
                for t in range(TRANSFERS):
                    r = requests.post(f"{base}/api/v1/transfers", headers=referrer, json={"community": f"BN{c:02d}", "reason": "bench"})
                    assert r.status_code == 201, r.text
                    tid = r.json()["id"]
                    files = []
                    for s in range(STUDIES_PER_TRANSFER):
                        study, data = instance(rng, c, t, s)
                        studies.setdefault(c, []).append(study)
                        files.append(("file", (f"IMG{s:03d}.dcm", data, "application/dicom")))
                    size = sum(len(f[1][1]) for f in files)
                    t0 = time.perf_counter()
                    r = requests.post(f"{base}/api/v1/transfers/{tid}/files", headers=referrer, files=files)
                    up_secs += time.perf_counter() - t0
                    assert r.status_code == 200, r.text
                    up_bytes += size
                    n_inst += len(files)
                    r = requests.post(f"{base}/api/v1/transfers/{tid}/send", headers=referrer)
                    assert r.status_code == 200, r.text
            total = sum(len(v) for v in studies.values())
            queries = [
                {"PatientName": "bench^c07t1*"}, {"StudyDate": "20240101-20240630"}, {"ModalitiesInStudy": "MR"},
                {"StudyInstanceUID": studies[7][123]}, {"PatientID": "BENCH-07-03-04"}, {"limit": "50"},
            ]
            results = {}
            for who, headers in [("member (500 of 10,000 studies)", members[7]), ("operator (all 10,000)", admin)]:
                lat = []
                for i in range(300):
                    q = queries[i % len(queries)]
                    t0 = time.perf_counter()
                    r = requests.get(f"{base}/dicomweb/studies", params=q, headers={**headers, "Accept": "application/dicom+json"})
                    lat.append((time.perf_counter() - t0) * 1000)
                    assert r.status_code == 200, r.text[:200]
                # Sanity: the member sees their community's studies only.
                if who.startswith("member"):
                    seen = requests.get(f"{base}/dicomweb/studies", params={"limit": "10000"}, headers={**headers, "Accept": "application/dicom+json"}).json()
                    assert len(seen) == len(studies[7]), len(seen)
                results[who] = (bench.pct(lat, 50), bench.pct(lat, 99))
            rss = bench.peak_rss_mb(proc.pid)
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
    print(f"| {total} studies in {COMMUNITIES} communities | |")
    print("|---|---:|")
    for who, (p50, p99) in results.items():
        print(f"| QIDO-RS as {who}: p50 / p99 (ms) | {p50:.1f} / {p99:.1f} |")
    print(f"| transfer uploads: instances/s | {n_inst / up_secs:.0f} |")
    print(f"| transfer uploads: MB/s | {up_bytes / up_secs / 1e6:.1f} |")
    print(f"| hub peak RSS (MB) | {rss:.0f} |")


if __name__ == "__main__":
    main()
