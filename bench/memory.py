"""Peak memory of the hub versus upload size: one STOW-RS request of ~10 MB, then one of ~2 GB,
each into a freshly started release hub; prints the hub's peak RSS (VmHWM) after each.

  python3 bench/memory.py            (after `cargo build --release -p ferry-hub`)

The request body is generated on the fly (chunked transfer), so the client holds one instance at
a time: 512x512 16-bit synthetic CT slices of ~0.5 MB each, synthetic patient.
"""
import io
import os
import sys
import tempfile
import time

import numpy as np
import requests
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import TOKEN, peak_rss_mb, start_ferry  # noqa: E402


def instance(study, series, i, pixels):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = f"{series}.{i}"
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.PatientName, ds.PatientID, ds.Modality = "Memory^Bench", "MEM-1", "CT"
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = 512, 512, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def body(n, seed):
    rng = np.random.default_rng(seed)
    px = rng.integers(0, 4096, size=(512, 512), dtype=np.uint16).astype("<u2").tobytes()
    study, series = f"2.25.{seed}1", f"2.25.{seed}2"
    for i in range(n):
        yield b"--membench\r\nContent-Type: application/dicom\r\n\r\n" + instance(study, series, i + 1, px) + b"\r\n"
    yield b"--membench--\r\n"


def run(n, seed):
    with tempfile.TemporaryDirectory() as tmp:
        hub = start_ferry(tmp)
        try:
            t0 = time.perf_counter()
            r = requests.post(f"{hub.dicomweb}/studies", data=body(n, seed), headers={
                "Authorization": f"Bearer {TOKEN}", "Content-Type": 'multipart/related; type="application/dicom"; boundary=membench'})
            secs = time.perf_counter() - t0
            assert r.status_code == 200, (r.status_code, r.text[:300])
            return n * 524_288 / 1e6, secs, peak_rss_mb(hub.proc.pid)
        finally:
            hub.stop()


if __name__ == "__main__":
    for n in (20, 4000):
        mb, secs, rss = run(n, n)
        print(f"upload of {mb:.0f} MB ({n} instances, one request): {secs:.1f} s, hub peak RSS {rss:.1f} MB")
