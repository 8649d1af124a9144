"""A bounded load test: many concurrent clients mixing QIDO-RS searches, WADO-RS retrieves, access-code
redemptions and STOW-RS uploads against one release hub (SQLite + local files, encryption on) for a
few minutes. Reports status counts per kind (anything but 2xx and 429 is an error), p50/p99 latency
per kind, throughput, and the hub's resident memory over the run (is it flat?).

  python3 bench/load.py [CLIENTS=200] [SECONDS=180]     (after `cargo build --release -p ferry-hub`)

Every client is 127.0.0.1, so the per-address rate limit of code redemption answers most
redemptions with 429 at default settings; `LOAD_RATE_LIMIT=off` lifts it to measure the
redemptions themselves (each one an argon2id verification, bounded to one per core by the hub).
The client runs on the same 2 cores as the hub: the figures are a floor, not the hub's ceiling.
"""
import collections
import io
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import requests
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
if os.environ.get("LOAD_RATE_LIMIT") == "off":
    os.environ["FERRY_SHARES__RATE_BURST"] = "100000000"
from bench import start_ferry  # noqa: E402

CT = "1.2.840.10008.5.1.4.1.1.2"
# LOAD_ONLY=qido|wado|redeem|stow runs one kind of request only (to see what a figure comes from).
ONLY = os.environ.get("LOAD_ONLY")
BIRTH = "19700101"


def instance(study, series, patient, n, size=128):
    meta = FileMetaDataset()
    sop = generate_uid()
    meta.MediaStorageSOPClassUID = CT
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CT, sop
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = f"Load^Patient{patient}", f"LOAD-{patient:04d}", BIRTH
    ds.StudyDate, ds.StudyTime, ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "20240115", "101500", "CT", 1, n
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = np.random.default_rng(n).integers(0, 4096, size=(size, size), dtype=np.uint16).astype("<u2").tobytes()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return sop, out.getvalue()


def multipart(parts, boundary="ferry-load"):
    body = b"".join(b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + p + b"\r\n" for p in parts)
    return body + b"--" + boundary.encode() + b"--\r\n", f'multipart/related; type="application/dicom"; boundary={boundary}'


SAMPLER = """
import sys, time
pid, out = sys.argv[1], sys.argv[2]
with open(out, "w") as f:
    while True:
        with open(f"/proc/{pid}/status") as s:
            kb = next(int(line.split()[1]) for line in s if line.startswith("VmRSS:"))
        f.write(f"{time.monotonic()} {kb / 1024}\\n")
        f.flush()
        time.sleep(1)
"""


def main(clients, seconds):
    with tempfile.TemporaryDirectory() as tmp:
        hub = start_ferry(tmp)
        base, dw = hub.base, hub.dicomweb
        h = hub.headers
        try:
            # 100 studies of 3 instances to search and retrieve; 20 shares with codes.
            stored = []
            for p in range(100):
                study, series = generate_uid(), generate_uid()
                parts = []
                for n in range(3):
                    sop, data = instance(study, series, p, n + 1)
                    parts.append(data)
                    stored.append((study, series, sop))
                body, ct = multipart(parts)
                r = requests.post(f"{dw}/studies", headers=dict(h, **{"content-type": ct}), data=body)
                assert r.status_code == 200, r.text
            assert requests.post(f"{base}/api/v1/communities", headers=h, json={"name": "Last Klinik", "code": "LOAD", "city": "X"}).status_code == 201
            codes = []
            for p in range(20):
                draft = requests.post(f"{base}/api/v1/shares", headers=h, json={"community": "LOAD"}).json()
                _, data = instance(generate_uid(), generate_uid(), 1000 + p, 1)
                r = requests.post(f"{base}/api/v1/shares/{draft['id']}/files", headers=h, files=[("file", ("a.dcm", data))])
                assert r.status_code == 200, r.text
                codes.append(requests.post(f"{base}/api/v1/shares/{draft['id']}/issue", headers=h, json={}).json()["code"])

            stats = collections.defaultdict(list)        # kind -> [seconds]
            statuses = collections.defaultdict(collections.Counter)
            errors = collections.Counter()
            lock = threading.Lock()
            stop = time.monotonic() + seconds
            uploads = []

            def client(k):
                rng = random.Random(k)
                s = requests.Session()
                s.headers.update(h)
                while time.monotonic() < stop:
                    kind = ONLY or rng.choices(["qido", "wado", "redeem", "stow"], weights=[35, 30, 15, 20])[0]
                    t0 = time.perf_counter()
                    try:
                        if kind == "qido":
                            q = rng.choice([f"/studies?PatientID=LOAD-{rng.randrange(100):04d}", "/studies?PatientName=load*&limit=20",
                                            "/studies?StudyDate=20240101-20241231&limit=50", f"/studies/{rng.choice(stored)[0]}/series"])
                            r = s.get(dw + q)
                        elif kind == "wado":
                            st, se, sop = rng.choice(stored)
                            if rng.random() < 0.5:
                                r = s.get(f"{dw}/studies/{st}/series/{se}/instances/{sop}", headers={"accept": 'multipart/related; type="application/dicom"'})
                            else:
                                r = s.get(f"{dw}/studies/{st}/metadata")
                            r.content
                        elif kind == "redeem":
                            holder = requests.Session()
                            r = holder.post(f"{base}/api/v1/redeem", json={"code": rng.choice(codes), "answer": BIRTH})
                            if r.status_code == 200:
                                r = holder.get(f"{base}/api/v1/share")
                        else:
                            _, data = instance(generate_uid(), generate_uid(), 5000 + k, 1, size=96)
                            body, ct = multipart([data])
                            r = s.post(f"{dw}/studies", data=body, headers={"content-type": ct})
                        dt = time.perf_counter() - t0
                        with lock:
                            statuses[kind][r.status_code] += 1
                            if r.status_code < 300:
                                stats[kind].append(dt)
                                if kind == "stow":
                                    uploads.append(dt)
                    except Exception as e:  # a transport error is an error of the run
                        with lock:
                            errors[f"{kind}: {type(e).__name__}"] += 1

            # Memory is sampled by a separate process: 200 busy client threads starve any thread
            # of this one (the GIL).
            samples = os.path.join(tmp, "rss.txt")
            sampler = subprocess.Popen([sys.executable, "-c", SAMPLER, str(hub.proc.pid), samples])
            threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
            t_start = time.monotonic()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.monotonic() - t_start
            sampler.terminate()
            sampler.wait()
            with open(samples) as f:
                rows = [line.split() for line in f if line.strip()]
            t0 = float(rows[0][0])
            mem = [(float(t) - t0, float(m)) for t, m in rows]

            def pct(v, p):
                v = sorted(v)
                return v[min(len(v) - 1, int(len(v) * p))] * 1000 if v else float("nan")

            bad = {k: {c: n for c, n in v.items() if not (200 <= c < 300 or c == 429)} for k, v in statuses.items()}
            q = lambda f: statistics.median([m for t, m in mem if f[0] <= t / elapsed < f[1]] or [float("nan")])  # noqa: E731
            result = {
                "clients": clients, "seconds": round(elapsed, 1),
                "requests": sum(sum(v.values()) for v in statuses.values()),
                "per_second": round(sum(sum(v.values()) for v in statuses.values()) / elapsed, 1),
                "statuses": {k: dict(v) for k, v in statuses.items()},
                "errors": {**{k: v for k, v in bad.items() if v}, **dict(errors)},
                "latency_ms": {k: {"p50": round(pct(v, 0.5), 1), "p99": round(pct(v, 0.99), 1), "n": len(v)} for k, v in stats.items()},
                "rss_mb": {"first_tenth": round(q((0, 0.1)), 1), "middle": round(q((0.45, 0.55)), 1),
                           "last_tenth": round(q((0.9, 1.01)), 1), "peak": round(max(m for _, m in mem), 1),
                           "every_tenth": [round(q((i / 10, (i + 1) / 10)), 1) for i in range(10)]},
            }
            print(json.dumps(result, indent=2))
            return 1 if result["errors"] else 0
        finally:
            hub.stop()


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 200, int(sys.argv[2]) if len(sys.argv) > 2 else 180))
