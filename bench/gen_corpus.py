"""Generates Ferry's benchmark corpus, deterministic by seed, synthetic patients only.

  python3 bench/gen_corpus.py OUT_DIR

- ct/: one CT study, 300 slices 512x512 16-bit (about 157 MB)
- mr/: one MR study, 4 series x 60 slices 256x256 16-bit
- cr/: 200 CR studies of one 256x256 16-bit image each
"""
import os
import sys

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

SEED = 20261123
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
CR_IMAGE = "1.2.840.10008.5.1.4.1.1.1"


def uid(rng):
    return "2.25." + str(int(rng.integers(0, 2**63)) * 2**60 + int(rng.integers(0, 2**60)))


def write(path, sop_class, study, series, sop, patient, modality, inum, pixels, date):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop
    ds.StudyDate = date
    ds.StudyTime = "101500"
    ds.AccessionNumber = "ACC" + patient[1][-4:]
    ds.Modality = modality
    ds.StudyDescription = f"Bench {modality}"
    ds.PatientName = patient[0]
    ds.PatientID = patient[1]
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.SeriesNumber = 1
    ds.InstanceNumber = inum
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.WindowCenter = 1024
    ds.WindowWidth = 2048
    ds.PixelData = pixels.astype("<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)


def main(out):
    rng = np.random.default_rng(SEED)
    base = rng.integers(0, 4096, size=(512, 512), dtype=np.uint16)
    os.makedirs(os.path.join(out, "ct"), exist_ok=True)
    study = uid(rng)
    series = uid(rng)
    for i in range(300):
        px = np.roll(base, i, axis=0)
        write(os.path.join(out, "ct", f"{i:04d}.dcm"), CT_IMAGE, study, series, uid(rng), ("Bench^CT", "BENCH-CT"), "CT", i + 1, px, "20250101")
    study = uid(rng)
    small = base[:256, :256]
    for s in range(4):
        series = uid(rng)
        d = os.path.join(out, "mr", f"s{s}")
        os.makedirs(d, exist_ok=True)
        for i in range(60):
            write(os.path.join(d, f"{i:04d}.dcm"), MR_IMAGE, study, series, uid(rng), ("Bench^MR", "BENCH-MR"), "MR", i + 1, np.roll(small, i + s, axis=1), "20250201")
    for k in range(200):
        d = os.path.join(out, "cr", f"{k:03d}")
        os.makedirs(d, exist_ok=True)
        write(os.path.join(d, "0001.dcm"), CR_IMAGE, uid(rng), uid(rng), uid(rng), (f"Bench^CR{k:03d}", f"BENCH-CR-{k:03d}"), "CR", 1, np.roll(small, k, axis=0), f"2024{(k % 12) + 1:02d}{(k % 28) + 1:02d}")


if __name__ == "__main__":
    main(sys.argv[1])
