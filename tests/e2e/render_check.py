"""Renders test images through the hub and compares them with pydicom's own decoding.

pydicom decodes compressed pixel data with pylibjpeg's plugins (OpenJPEG for JPEG 2000, libjpeg
for JPEG and JPEG-LS, the RLE plugin): other implementations than the hub's (dicom-pixeldata with
openjp2 and CharLS), so an agreement means both decoded the same image.

Each file gets new UIDs (so the same file can be stored twice), is stored by STOW-RS, and its first
frame is fetched from `/rendered` as PNG with an explicit window (the full range of the stored
values after the Modality LUT) for grayscale images. The reference applies the same steps: the
rescale, then PS3.14's linear VOI function with that window, to 8 bits. Colour images are compared
as RGB without a window.

usage: render_check.py BASE_URL TOKEN FILE...
Prints one JSON object per file: {"file", "syntax", "stow": status, "render": status,
"mad": mean absolute difference (0-255), "psnr": dB, "why": text when the hub failed,
"reference": why pydicom itself cannot read or decode it (then nothing is sent)}.
"""
import io
import json
import sys
import os
import uuid

import numpy as np
import pydicom
import requests
from PIL import Image
from pydicom.pixels import apply_modality_lut
from pydicom.uid import generate_uid


def stow(base, token, data):
    boundary = "b" + uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return requests.post(
        f"{base}/dicomweb/studies",
        data=body,
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Accept": "application/dicom+json",
        },
        timeout=120,
    )


def window(values, center, width):
    """PS3.14 C.11.2.1.2.1, linear, to 0..255."""
    lo, hi = center - 0.5 - (width - 1) / 2, center - 0.5 + (width - 1) / 2
    out = ((values - (center - 0.5)) / (width - 1) + 0.5) * 255.0
    out = np.where(values <= lo, 0.0, np.where(values > hi, 255.0, out))
    return np.clip(np.rint(out), 0, 255)


def reference(path):
    """pydicom's reading and decoding of the first frame; raises when pydicom cannot."""
    ds = pydicom.dcmread(path)
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    pixels = ds.pixel_array
    return ds, (pixels[0] if frames > 1 else pixels)


def check(base, token, path):
    result = {"file": path.rsplit("/", 1)[-1]}
    try:
        ds, first = reference(path)
    except Exception as e:  # not an image pydicom decodes: nothing to compare with
        result["reference"] = f"{type(e).__name__}: {e}"[:200]
        return result
    result["syntax"] = str(ds.file_meta.TransferSyntaxUID)
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buf = io.BytesIO()
    try:
        ds.save_as(buf, enforce_file_format=True)
    except Exception as e:  # pydicom cannot write it back with new UIDs: nothing to send
        result["reference"] = f"cannot be written with new UIDs: {type(e).__name__}: {e}"[:200]
        return result
    r = stow(base, token, buf.getvalue())
    result["stow"] = r.status_code
    if r.status_code != 200:
        result["why"] = r.text[:300]
        return result
    color = ds.SamplesPerPixel == 3
    url = f"{base}/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}/rendered"
    params = {}
    if color:
        # pixel_array is RGB already: pydicom converts YCbCr (and JPEG 2000's RCT/ICT) on decoding.
        want = first.astype(np.float64)
        if ds.BitsAllocated > 8:
            want = np.rint(want / (2 ** ds.BitsStored - 1) * 255.0)
    else:
        values = apply_modality_lut(first, ds).astype(np.float64)
        lo, hi = float(values.min()), float(values.max())
        width = max(hi - lo + 1.0, 2.0)
        center = lo + width / 2.0
        params["window"] = f"{center},{width}"
        want = window(values, center, width)
        if ds.PhotometricInterpretation == "MONOCHROME1":
            want = 255.0 - want
    r = requests.get(url, params=params, headers={"Authorization": f"Bearer {token}", "Accept": "image/png"}, timeout=120)
    result["render"] = r.status_code
    if r.status_code != 200:
        result["why"] = r.text[:300]
        return result
    got = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB" if color else "L")).astype(np.float64)
    if got.shape != want.shape:
        result["why"] = f"rendered {got.shape}, expected {want.shape}"
        return result
    diff = np.abs(got - want)
    result["mad"] = float(diff.mean())
    mse = float((diff ** 2).mean())
    result["psnr"] = 99.0 if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))
    return result


def transcode_check(base, token, path):
    """Stores the file, retrieves it decoded to Explicit VR Little Endian (single part and
    multipart) and compares the pixels with pydicom's decoding of the original."""
    result = {"file": path.rsplit("/", 1)[-1]}
    ds, _ = reference(path)
    want = ds.pixel_array.astype(np.float64)
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    result["stow"] = stow(base, token, buf.getvalue()).status_code
    url = f"{base}/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    auth = {"Authorization": f"Bearer {token}"}
    r = requests.get(url, headers=dict(auth, Accept="application/dicom; transfer-syntax=1.2.840.10008.1.2.1"), timeout=120)
    result["single"] = r.status_code
    result["content_type"] = r.headers.get("content-type", "")
    if r.status_code == 200:
        got = pydicom.dcmread(io.BytesIO(r.content))
        result["syntax"] = str(got.file_meta.TransferSyntaxUID)
        result["max_diff"] = float(np.abs(got.pixel_array.astype(np.float64) - want).max())
    r = requests.get(url, headers=dict(auth, Accept='multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.1'), timeout=120)
    result["multipart"] = r.status_code
    if r.status_code == 200:
        boundary = r.headers["content-type"].split("boundary=")[1].strip('"')
        part = r.content.split(f"--{boundary}".encode())[1]
        body = part.split(b"\r\n\r\n", 1)[1][:-2]
        got = pydicom.dcmread(io.BytesIO(body))
        result["multipart_syntax"] = str(got.file_meta.TransferSyntaxUID)
        result["multipart_max_diff"] = float(np.abs(got.pixel_array.astype(np.float64) - want).max())
    # The first frame decoded as native little-endian octets.
    r = requests.get(f"{url}/frames/1", headers=dict(auth, Accept="multipart/related; type=application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"), timeout=120)
    result["frame"] = r.status_code
    if r.status_code == 200:
        boundary = r.headers["content-type"].split("boundary=")[1].strip('"')
        part = r.content.split(f"--{boundary}".encode())[1]
        head, body = part.split(b"\r\n\r\n", 1)
        result["frame_type"] = head.decode(errors="replace").strip()
        dtype = {(8, 0): "<u1", (8, 1): "<i1", (16, 0): "<u2", (16, 1): "<i2", (32, 0): "<u4", (32, 1): "<i4"}[(ds.BitsAllocated, ds.PixelRepresentation)]
        frame0 = want[0] if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1 else want
        got = np.frombuffer(body[:-2], dtype=dtype).astype(np.float64)
        result["frame_max_diff"] = float(np.abs(got - frame0.reshape(-1)).max()) if got.size == frame0.size else None
    # A syntax the hub neither has nor makes: 406, naming what it has.
    r = requests.get(url, headers=dict(auth, Accept="application/dicom; transfer-syntax=1.2.840.10008.1.2.4.201"), timeout=120)
    result["unavailable"] = r.status_code
    result["unavailable_says"] = r.text[:300]
    return result


def main():
    if sys.argv[3:4] == ["--transcode"]:
        for f in sys.argv[4:]:
            print(json.dumps(transcode_check(sys.argv[1], sys.argv[2], f)), flush=True)
        return
    base, token, files = sys.argv[1], sys.argv[2], sys.argv[3:]
    if files == ["--all"]:
        # Every file of pydicom's test set (and pydicom-data's, when installed).
        dirs = [os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files")]
        files = sorted(os.path.join(d, f) for d in dirs for f in os.listdir(d) if f.endswith(".dcm"))
    for f in files:
        try:
            print(json.dumps(check(base, token, f)), flush=True)
        except Exception as e:  # one file's failure is reported, the others still run
            print(json.dumps({"file": f.rsplit("/", 1)[-1], "why": f"{type(e).__name__}: {e}"}), flush=True)


if __name__ == "__main__":
    main()
