"""Ferry vs Orthanc on the same synthetic corpus, same machine, loopback only.

  bench/run.sh            (builds the release hub, generates the corpus, runs this)

Starts a release `ferry-hub` (encryption always on) and Orthanc 1.x with its DICOMweb plugin on
free ports, then measures for both: STOW-RS MB/s, QIDO-RS p50/p99, WADO-RS study retrieve MB/s,
study metadata time, rendered p50 and peak RSS; prints a table with ratios and writes it as
Markdown. Bounded: every loop has a fixed count; both servers are stopped at the end.
"""
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import requests

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TOKEN = "bench-token"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_http(url, headers=None, tries=200):
    for _ in range(tries):
        try:
            if requests.get(url, headers=headers, timeout=1).status_code < 500:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


def peak_rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Server:
    def __init__(self, name, proc, dicomweb, headers):
        self.name, self.proc, self.dicomweb, self.headers = name, proc, dicomweb, headers
        self.base = dicomweb.rsplit("/", 1)[0]

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def start_ferry(tmp):
    port = free_port()
    env = dict(os.environ, FERRY_AUTH__ADMIN_TOKEN=TOKEN, FERRY_LOG__FILTER="warn")
    # BENCH_HUB_WRAPPER runs the hub under a profiler, e.g. "heaptrack -o /tmp/hub".
    wrapper = os.environ.get("BENCH_HUB_WRAPPER", "").split()
    proc = subprocess.Popen(
        wrapper + [os.path.join(ROOT, "target", "release", "ferry-hub"), "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", os.path.join(tmp, "ferry")],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    h = {"Authorization": f"Bearer {TOKEN}"}
    wait_http(f"http://127.0.0.1:{port}/readyz")
    return Server("Ferry", proc, f"http://127.0.0.1:{port}/dicomweb", h)


def bind_loopback():
    """tests/peers/bind_loopback.c, built into target/peers (as the tests do)."""
    lib = os.path.join(ROOT, "target", "peers", "bind_loopback.so")
    if not os.path.exists(lib):
        os.makedirs(os.path.dirname(lib), exist_ok=True)
        subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", lib, os.path.join(ROOT, "tests", "peers", "bind_loopback.c"), "-ldl"], check=True)
    return lib


def start_orthanc(tmp):
    http, dicom = free_port(), free_port()
    cfg = {
        "Name": "bench", "StorageDirectory": os.path.join(tmp, "orthanc", "s"), "IndexDirectory": os.path.join(tmp, "orthanc", "i"),
        "HttpPort": http, "DicomPort": dicom, "DicomAet": "ORTHANC", "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
        "Plugins": ["/usr/share/orthanc/plugins/libOrthancDicomWeb.so"],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "Host": f"127.0.0.1:{http}"},
    }
    os.makedirs(os.path.join(tmp, "orthanc"), exist_ok=True)
    path = os.path.join(tmp, "orthanc", "orthanc.json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    binary = "/usr/sbin/Orthanc" if os.path.exists("/usr/sbin/Orthanc") else "Orthanc"
    # Orthanc's DICOM side is dcmtk, which turns Nagle off only when TCP_NODELAY is set. Orthanc
    # has no listen-address option: the tests' LD_PRELOAD shim keeps it on loopback.
    env = dict(os.environ, TCP_NODELAY="1", LD_PRELOAD=bind_loopback())
    proc = subprocess.Popen([binary, path], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_http(f"http://127.0.0.1:{http}/system")
    server = Server("Orthanc", proc, f"http://127.0.0.1:{http}/dicom-web", {})
    server.dicom = dicom
    return server


def files_under(d):
    out = []
    for root, _, names in os.walk(d):
        out += [os.path.join(root, n) for n in sorted(names)]
    return sorted(out)


def make_batches(paths, out_dir, batch=20):
    """Writes multipart/related bodies of `batch` files each (outside any timing)."""
    os.makedirs(out_dir, exist_ok=True)
    bodies = []
    for i in range(0, len(paths), batch):
        body_path = os.path.join(out_dir, f"batch{i:05d}.bin")
        with open(body_path, "wb") as out:
            for p in paths[i:i + batch]:
                out.write(b"--benchboundary\r\nContent-Type: application/dicom\r\n\r\n")
                out.write(open(p, "rb").read())
                out.write(b"\r\n")
            out.write(b"--benchboundary--\r\n")
        bodies.append(body_path)
    return bodies


def curl(args):
    """Runs curl (a fast native client, so the servers are measured, not Python)."""
    out = subprocess.run(["curl", "-sS", "-H", "Expect:", "-o", "/dev/null", "-w", "%{http_code} %{size_download} %{size_upload} %{time_total}"] + args,
                         check=True, capture_output=True, text=True).stdout.split()
    return int(out[0]), int(out[1]), int(out[2]), float(out[3])


def auth_args(server):
    return [x for k, v in server.headers.items() for x in ("-H", f"{k}: {v}")]


def stow(server, bodies):
    """Stores every batch body in turn; returns (bytes, seconds)."""
    total, secs = 0, 0.0
    for b in bodies:
        code, _, up, t = curl(auth_args(server) + ["-H", 'Content-Type: multipart/related; type="application/dicom"; boundary=benchboundary',
                                                    "-H", "Accept: application/dicom+json", "--data-binary", f"@{b}", f"{server.dicomweb}/studies"])
        if code != 200:
            raise SystemExit(f"{server.name} STOW failed: {code}")
        total += up
        secs += t
    return total, secs


def timed(fn, n):
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


def measure(server, bodies, ct_study, ct_series, ct_sops):
    res = {}
    nbytes, secs = stow(server, bodies)
    res["stow_mbps"] = nbytes / secs / 1e6
    queries = [
        {"PatientName": "bench^cr1*"}, {"StudyDate": "20240101-20240630"}, {"ModalitiesInStudy": "MR"},
        {"StudyInstanceUID": ct_study}, {"PatientID": "BENCH-CR-042"}, {"limit": "50"},
    ]
    lat = []
    for i in range(300):
        q = queries[i % len(queries)]
        t0 = time.perf_counter()
        r = requests.get(f"{server.dicomweb}/studies", params=q, headers={**server.headers, "Accept": "application/dicom+json"})
        lat.append((time.perf_counter() - t0) * 1000)
        assert r.status_code == 200, (server.name, r.status_code, r.text[:200])
    res["qido_p50_ms"], res["qido_p99_ms"] = pct(lat, 50), pct(lat, 99)
    accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
    runs = []
    for _ in range(5):
        code, n, _, t = curl(auth_args(server) + ["-H", f"Accept: {accept}", f"{server.dicomweb}/studies/{ct_study}"])
        assert code == 200 and n > 150e6, (server.name, code, n)
        runs.append(n / t / 1e6)
    res["wado_mbps"] = statistics.median(runs)
    m = timed(lambda: requests.get(f"{server.dicomweb}/studies/{ct_study}/metadata", headers={**server.headers, "Accept": "application/dicom+json"}).raise_for_status(), 3)
    res["metadata_ms"] = statistics.median(m)
    rl = []
    for i in range(40):
        sop = ct_sops[(i * 7) % len(ct_sops)]
        t0 = time.perf_counter()
        r = requests.get(f"{server.dicomweb}/studies/{ct_study}/series/{ct_series}/instances/{sop}/rendered", headers={**server.headers, "Accept": "image/jpeg"})
        rl.append((time.perf_counter() - t0) * 1000)
        assert r.status_code == 200, (server.name, r.status_code)
    res["rendered_p50_ms"] = pct(rl, 50)
    res["peak_rss_mb"] = peak_rss_mb(server.proc.pid)
    return res


def main():
    corpus = sys.argv[1]
    out_md = sys.argv[2] if len(sys.argv) > 2 else None
    repeats = int(os.environ.get("BENCH_REPEATS", "3"))
    import pydicom
    ct_files = files_under(os.path.join(corpus, "ct"))
    first = pydicom.dcmread(ct_files[0], stop_before_pixels=True)
    ct_study, ct_series = str(first.StudyInstanceUID), str(first.SeriesInstanceUID)
    ct_sops = [str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in ct_files[::10]]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = files_under(os.path.join(corpus, "ct")) + files_under(os.path.join(corpus, "mr")) + files_under(os.path.join(corpus, "cr"))
        bodies = make_batches(paths, os.path.join(tmp, "bodies"))
        runs = {"Ferry": [], "Orthanc": []}
        for rep in range(repeats):
            # Alternate the order, each run on a fresh server and an empty store.
            order = (start_ferry, start_orthanc) if rep % 2 == 0 else (start_orthanc, start_ferry)
            for start in order:
                run_dir = os.path.join(tmp, f"run{rep}")
                os.makedirs(run_dir, exist_ok=True)
                server = start(run_dir)
                try:
                    runs[server.name].append(measure(server, bodies, ct_study, ct_series, ct_sops))
                finally:
                    server.stop()
        for name, rs in runs.items():
            results[name] = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
    f, o = results["Ferry"], results["Orthanc"]
    rows = [
        ("STOW-RS throughput (MB/s)", "stow_mbps", "higher", 1.5),
        ("QIDO-RS p50 (ms)", "qido_p50_ms", "lower", None),
        ("QIDO-RS p99 (ms)", "qido_p99_ms", "lower", 1.0),
        ("WADO-RS study retrieve (MB/s)", "wado_mbps", "higher", 1.5),
        ("Study metadata, 300 instances (ms)", "metadata_ms", "lower", None),
        ("Rendered JPEG p50 (ms)", "rendered_p50_ms", "lower", None),
        ("Peak RSS (MB)", "peak_rss_mb", "lower", 0.25),
    ]
    lines = ["| measure | Ferry | Orthanc | Ferry vs Orthanc | target |", "|---|---:|---:|---:|---|"]
    for label, key, better, target in rows:
        ratio = f[key] / o[key] if better == "higher" else o[key] / f[key]
        tgt = ""
        if target is not None:
            ok = (f[key] >= target * o[key]) if better == "higher" else (f[key] <= target * o[key] if key == "peak_rss_mb" else f[key] <= o[key])
            want = f"≥ {target}×" if better == "higher" else ("≤ ¼ of Orthanc" if key == "peak_rss_mb" else "≤ Orthanc")
            tgt = f"{want}: {'met' if ok else 'NOT met'}"
        lines.append(f"| {label} | {f[key]:.1f} | {o[key]:.1f} | {ratio:.2f}× better | {tgt} |")
    lines.append(f"\nMedians of {repeats} runs per server (fresh server and store each run, order alternating).")
    table = "\n".join(lines)
    print(table)
    if out_md:
        with open(out_md, "w") as fh:
            fh.write(table + "\n")


if __name__ == "__main__":
    main()
