"""Drives a Ferry hub with the Python dicomweb-client, as an outside DICOMweb tool would.

Usage: dicomweb_client_check.py BASE_URL TOKEN
Stores pydicom's bundled test files, searches, retrieves studies/series/instances, metadata,
frames and rendered images, and checks every retrieved instance is byte-identical to the file
that was sent. Exits non-zero with a message on the first difference.
"""
import io
import os
import sys

import pydicom
import pydicom.data
from dicomweb_client.api import DICOMwebClient

base, token = sys.argv[1], sys.argv[2]
files_dir = os.path.join(os.path.dirname(pydicom.data.__file__), "test_files")
# Distinct SOP Instance UIDs (pydicom's MR_small variants share theirs).
names = ["CT_small.dcm", "MR_small_RLE.dcm", "SC_rgb_jpeg_dcmtk.dcm", "JPEG2000.dcm", "examples_ybr_color.dcm", "rtdose.dcm"]
client = DICOMwebClient(base, headers={"Authorization": f"Bearer {token}"})

originals = {}
datasets = []
for n in names:
    raw = open(os.path.join(files_dir, n), "rb").read()
    ds = pydicom.dcmread(io.BytesIO(raw))
    originals[str(ds.SOPInstanceUID)] = (n, raw, ds)
    datasets.append(ds)

result = client.store_instances(datasets)
stored = {str(i.ReferencedSOPInstanceUID) for i in result.ReferencedSOPSequence}
assert stored == set(originals), f"stored {stored}"
assert "FailedSOPSequence" not in result, "unexpected failures"


def fail(msg):
    print(f"FAIL: {msg}")
    sys.exit(1)


studies = client.search_for_studies()
if len(studies) != len({str(d.StudyInstanceUID) for d in datasets}):
    fail(f"expected every study, got {len(studies)}")
ct = originals[next(k for k, v in originals.items() if v[0] == "CT_small.dcm")][2]
hits = client.search_for_studies(search_filters={"PatientName": "cT*"}, fuzzymatching=False)
hits = client.search_for_studies(search_filters={"StudyInstanceUID": str(ct.StudyInstanceUID)})
if len(hits) != 1:
    fail("study search by UID")
series = client.search_for_series(str(ct.StudyInstanceUID))
if len(series) != 1:
    fail("series search")
insts = client.search_for_instances(str(ct.StudyInstanceUID), str(ct.SeriesInstanceUID), fields=["Rows"])
if len(insts) != 1 or insts[0]["00280010"]["Value"][0] != ct.Rows:
    fail("instance search with includefield")
if client.search_for_studies(search_filters={"PatientID": "no-such-patient"}) != []:
    fail("empty search must return []")

for uid, (name, raw, ds) in originals.items():
    st, se = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)
    url = f"{base}/studies/{st}/series/{se}/instances/{uid}"
    # The raw multipart parts, as dicomweb-client receives them before parsing.
    resp = client._session.get(url, headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'})
    resp.raise_for_status()
    parts = list(client._decode_multipart_message(resp, stream=False))
    if len(parts) != 1 or parts[0] != raw:
        fail(f"{name}: retrieved bytes differ")
    back = client.retrieve_instance(st, se, uid, media_types=(("application/dicom", "*"),))
    if back.SOPInstanceUID != ds.SOPInstanceUID or back.PixelData != ds.PixelData:
        fail(f"{name}: retrieve_instance differs")
    study = client.retrieve_study(st, media_types=(("application/dicom", "*"),))
    if not any(d.SOPInstanceUID == ds.SOPInstanceUID for d in study):
        fail(f"{name}: missing from retrieve_study")
    series_ds = client.retrieve_series(st, se, media_types=(("application/dicom", "*"),))
    if len(series_ds) != 1:
        fail(f"{name}: retrieve_series")
    meta = client.retrieve_instance_metadata(st, se, uid)
    if meta["00080018"]["Value"][0] != uid or "BulkDataURI" not in meta["7FE00010"]:
        fail(f"{name}: metadata")
    smeta = client.retrieve_study_metadata(st)
    if not any(m["00080018"]["Value"][0] == uid for m in smeta):
        fail(f"{name}: study metadata")

# Frames: native CT frame 1 equals its pixel data; JPEG frame comes compressed.
ctuid = str(ct.SOPInstanceUID)
frames = client.retrieve_instance_frames(str(ct.StudyInstanceUID), str(ct.SeriesInstanceUID), ctuid, [1])
if frames[0] != ct.PixelData:
    fail("CT frame 1 differs from its pixel data")
us = originals[next(k for k, v in originals.items() if v[0] == "examples_ybr_color.dcm")][2]
frames = client.retrieve_instance_frames(
    str(us.StudyInstanceUID), str(us.SeriesInstanceUID), str(us.SOPInstanceUID), [2, 30],
    media_types=(("image/jpeg", "1.2.840.10008.1.2.4.50"),),
)
if len(frames) != 2 or not all(f[:2] == b"\xff\xd8" for f in frames):
    fail("multi-frame JPEG frames")
png = client.retrieve_instance_rendered(str(ct.StudyInstanceUID), str(ct.SeriesInstanceUID), ctuid, media_types=("image/png",))
if png[:4] != b"\x89PNG":
    fail("rendered PNG")
jpg = client.retrieve_instance_frames_rendered(
    str(us.StudyInstanceUID), str(us.SeriesInstanceUID), str(us.SOPInstanceUID), [5], media_types=("image/jpeg",)
)
if jpg[:2] != b"\xff\xd8":
    fail("rendered JPEG frame")
print("dicomweb-client: all checks passed")
