// Tests for hub/assets/scan.js against pydicom's bundled test files; the expected values come from
// pydicom itself (python3 + pydicom must be installed). Run: node --test tests/node/scan_test.mjs
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { openAsBlob, mkdtempSync, writeFileSync, readdirSync, statSync, rmSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, basename, relative } from 'node:path';
import { scanFiles, REASONS } from '../../hub/assets/scan.js';

const python = (code, args = []) =>
  execFileSync('python3', ['-c', code, ...args], { encoding: 'utf8', maxBuffer: 64 << 20, stdio: ['ignore', 'pipe', 'pipe'] });

const PYDICOM_DATA = join(python('import pydicom, os; print(os.path.dirname(pydicom.__file__))').trim(), 'data');
const TEST_FILES = join(PYDICOM_DATA, 'test_files');
const CHARSET_FILES = join(PYDICOM_DATA, 'charset_files');
const tmp = mkdtempSync(join(tmpdir(), 'ferry-scan-'));
process.on('exit', () => rmSync(tmp, { recursive: true, force: true }));

// What pydicom reads from each file (null when pydicom cannot read it at all).
const EXPECT_PY = String.raw`
import sys, json, warnings, pydicom
warnings.simplefilter('ignore')
from pydicom.uid import UID
def s(v): return '' if v is None else str(v).strip(' \0')
out = {}
for p in sys.argv[1:]:
    try:
        ds = pydicom.dcmread(p, force=True)
        list(ds.keys())
    except Exception:
        out[p] = None
        continue
    def g(k):
        try: return s(ds.get(k))
        except Exception: return ''
    pn = ds.get('PatientName')
    meta = getattr(ds, 'file_meta', None)
    ts = str(meta.get('TransferSyntaxUID', '')) if meta is not None else ''
    truncated = False
    try:
        if 'PixelData' in ds and ts and not UID(ts).is_compressed:
            want = ds.Rows * ds.Columns * ds.SamplesPerPixel * ds.BitsAllocated // 8 * int(ds.get('NumberOfFrames', 1) or 1)
            if str(ds.get('PhotometricInterpretation', '')) == 'YBR_FULL_422':
                want = want // 3 * 2
            truncated = len(ds.PixelData) < want
    except Exception:
        pass
    sn = g('SeriesNumber')
    out[p] = dict(
        patientName=s(str(pn).split('=')[0]) if pn is not None else '',
        patientId=g('PatientID'), birthDate=g('PatientBirthDate'), sex=g('PatientSex'),
        studyUid=g('StudyInstanceUID'), studyDate=g('StudyDate'), studyDescription=g('StudyDescription'),
        accession=g('AccessionNumber'), seriesUid=g('SeriesInstanceUID'), modality=g('Modality'),
        seriesDescription=g('SeriesDescription'), seriesNumber=int(float(sn)) if sn else None,
        sopUid=g('SOPInstanceUID'), sopClass=g('SOPClassUID'),
        mediaClass=s(meta.get('MediaStorageSOPClassUID')) if meta is not None else '',
        truncated=truncated)
print(json.dumps(out))
`;
const pydicomRead = (paths) => JSON.parse(python(EXPECT_PY, paths));

// pydicom reads this one silently although it is cut inside a sequence; the hub refuses it.
const KNOWN_TRUNCATED = new Set(['rtplan_truncated.dcm']);
const validUid = (u) => !!u && u.length <= 64 && /^[0-9.]+$/.test(u);
const acceptable = (e) =>
  e && !e.truncated && e.mediaClass !== '1.2.840.10008.1.3.10' && [e.sopClass, e.sopUid, e.studyUid, e.seriesUid].every(validUid);

async function fileOf(path, name = basename(path), relPath) {
  const f = new File([await openAsBlob(path)], name);
  if (relPath) Object.defineProperty(f, 'webkitRelativePath', { value: relPath });
  return f;
}
const bytesFile = (bytes, name) => new File([bytes], name);

// A Blob that records how many bytes were read from it.
function countingBlob(blob, name) {
  const counter = { bytes: 0, reads: 0 };
  const wrap = (b, from) => ({
    size: b.size,
    name,
    slice(a = 0, z = b.size) {
      const s = b.slice(a, z);
      return {
        size: s.size,
        arrayBuffer() { counter.bytes += s.size; counter.reads++; return s.arrayBuffer(); },
        stream() { counter.reads++; return s.stream(); },
        slice: (c, d) => wrap(s, from + a).slice(c, d),
      };
    },
  });
  return { blob: wrap(blob, 0), counter };
}

function assertMatches(study, e, label) {
  assert.equal(study.studyUid, e.studyUid, `${label} studyUid`);
  assert.equal(study.patientName, e.patientName, `${label} patientName`);
  assert.equal(study.patientId, e.patientId, `${label} patientId`);
  assert.equal(study.birthDate, e.birthDate, `${label} birthDate`);
  assert.equal(study.date, e.studyDate, `${label} studyDate`);
  assert.equal(study.description, e.studyDescription, `${label} studyDescription`);
  assert.equal(study.accession, e.accession, `${label} accession`);
  const se = study.series.find((x) => x.seriesUid === e.seriesUid);
  assert.ok(se, `${label} series ${e.seriesUid}`);
  assert.equal(se.modality, e.modality, `${label} modality`);
  assert.equal(se.description, e.seriesDescription, `${label} seriesDescription`);
  assert.equal(se.number, e.seriesNumber, `${label} seriesNumber`);
}

test('every pydicom test file: values match pydicom, unusable files are skipped', async () => {
  const paths = [
    ...readdirSync(TEST_FILES).filter((n) => n.endsWith('.dcm')).map((n) => join(TEST_FILES, n)),
    ...readdirSync(CHARSET_FILES).filter((n) => n.endsWith('.dcm')).map((n) => join(CHARSET_FILES, n)),
  ];
  const expected = pydicomRead(paths);
  let accepted = 0;
  for (const p of paths) {
    const e = expected[p];
    const r = await scanFiles([await fileOf(p)]);
    const label = basename(p);
    if (e && (e.truncated || KNOWN_TRUNCATED.has(label))) {
      assert.deepEqual(r.skipped, [{ name: label, reason: REASONS.truncated }], label);
    } else if (acceptable(e)) {
      accepted++;
      assert.equal(r.skipped.length, 0, `${label} skipped: ${JSON.stringify(r.skipped)}`);
      assert.equal(r.dicomFiles, 1, label);
      assert.equal(r.studies.length, 1, label);
      assertMatches(r.studies[0], e, label);
      assert.deepEqual(r.patients, [{ name: e.patientName, birthDate: e.birthDate, id: e.patientId, sex: e.sex }], label);
      assert.equal(r.studies[0].bytes, statSync(p).size, label);
    } else {
      assert.equal(r.dicomFiles, 0, `${label} should be skipped`);
      assert.equal(r.skipped.length, 1, label);
    }
  }
  assert.ok(accepted > 60, `only ${accepted} files accepted`);
});

test('specific transfer syntaxes, sequences, charsets', async () => {
  const names = {
    'CT_small.dcm': 'explicit VR LE',
    'MR_small_implicit.dcm': 'implicit VR LE',
    'MR_small_bigendian.dcm': 'explicit VR BE',
    'JPEG-lossy.dcm': 'JPEG, sequence before the patient tags',
    'MR_small_RLE.dcm': 'RLE',
    'SC_rgb_small_odd_big_endian.dcm': 'BE with sequence before patient tags',
    'liver_1frame.dcm': 'SEG with sequences',
    'image_dfl.dcm': 'deflated',
    'ExplVR_LitEndNoMeta.dcm': 'no preamble, explicit LE',
    'ExplVR_BigEndNoMeta.dcm': 'no preamble, explicit BE',
    'rtstruct.dcm': 'no preamble, implicit LE',
  };
  const paths = Object.keys(names).map((n) => join(TEST_FILES, n));
  paths.push(...['chrFren.dcm', 'chrX1.dcm', 'chrH31.dcm', 'chrI2.dcm', 'chrX2.dcm'].map((n) => join(CHARSET_FILES, n)));
  const expected = pydicomRead(paths);
  for (const p of paths) {
    const r = await scanFiles([await fileOf(p)]);
    assert.equal(r.studies.length, 1, `${basename(p)}: ${JSON.stringify(r.skipped)}`);
    assertMatches(r.studies[0], expected[p], basename(p));
  }
  const fr = await scanFiles([await fileOf(join(CHARSET_FILES, 'chrFren.dcm'))]);
  assert.equal(fr.patients[0].name, 'Buc^Jérôme'); // ISO_IR 100
  const x1 = await scanFiles([await fileOf(join(CHARSET_FILES, 'chrX1.dcm'))]);
  assert.equal(x1.patients[0].name, 'Wang^XiaoDong'); // ISO_IR 192, first component group only
});

test('DICOMDIR is skipped by content and by name', async () => {
  const dd = join(TEST_FILES, 'dicomdirtests', 'DICOMDIR');
  const r1 = await scanFiles([await fileOf(dd)]);
  assert.deepEqual(r1.skipped, [{ name: 'DICOMDIR', reason: REASONS.dicomdir }]);
  const r2 = await scanFiles([await fileOf(dd, 'index.dcm')]); // by MediaStorageSOPClassUID
  assert.deepEqual(r2.skipped, [{ name: 'index.dcm', reason: REASONS.dicomdir }]);
});

function walk(dir) {
  const out = [];
  for (const n of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, n.name);
    if (n.isDirectory()) out.push(...walk(p));
    else out.push(p);
  }
  return out;
}

test('a CD folder with garbage: counts match pydicom, garbage skipped', async () => {
  const root = join(TEST_FILES, 'dicomdirtests');
  const paths = walk(root);
  const expected = pydicomRead(paths);
  const files = [];
  for (const p of paths) files.push(await fileOf(p, basename(p), `CD/${relative(root, p)}`));
  const ct = join(TEST_FILES, 'CT_small.dcm');
  files.push(await fileOf(ct, 'a.dcm', 'CD/extra/a.dcm'), await fileOf(ct, 'b.dcm', 'CD/extra/b.dcm')); // same instance twice
  const ctBytes = readFileSync(ct);
  const rnd = new Uint8Array(100_000).map((_, i) => (i * 7919 + 13) & 0xff);
  const garbage = {
    'README.TXT': new TextEncoder().encode('This CD contains DICOM images.\r\n'),
    'AUTORUN.INF': new TextEncoder().encode('[autorun]\r\nopen=viewer.exe\r\n'),
    'viewer.exe': new Uint8Array([0x4d, 0x5a, ...rnd.subarray(0, 5000)]),
    'index.html': new TextEncoder().encode('<!doctype html><title>Viewer</title>'),
    '.DS_Store': rnd.subarray(0, 300),
    'empty.dcm': new Uint8Array(0),
    'noise.bin': rnd,
    'IM0001': new Uint8Array([0x08, 0x00, 0x16, 0x00, 0xff, 0xff, 0xff, 0x7f, ...rnd.subarray(0, 500)]), // looks like group 0008
    'cut.dcm': ctBytes.subarray(0, 1000), // meta fine, data set cut in the header
    'bad.dcm': Buffer.concat([Buffer.alloc(128), Buffer.from('DICM'), Buffer.from(rnd.subarray(0, 2000))]),
  };
  for (const [n, b] of Object.entries(garbage)) files.push(bytesFile(b, n));
  const progress = [];
  const r = await scanFiles(files, (p) => progress.push(p));

  const uniq = new Map();
  for (const p of paths) {
    const e = expected[p];
    if (acceptable(e) && !uniq.has(e.sopUid)) uniq.set(e.sopUid, { ...e, size: statSync(p).size });
  }
  const ctE = pydicomRead([ct])[ct];
  uniq.set(ctE.sopUid, { ...ctE, size: ctBytes.length });
  assert.equal(r.instances, uniq.size);
  assert.equal(r.duplicates, paths.filter((p) => acceptable(expected[p])).length + 2 - uniq.size);
  const studies = new Map();
  for (const e of uniq.values()) {
    const s = studies.get(e.studyUid) ?? { n: 0, bytes: 0, series: new Map() };
    s.n++;
    s.bytes += e.size;
    s.series.set(e.seriesUid, (s.series.get(e.seriesUid) ?? 0) + 1);
    studies.set(e.studyUid, s);
  }
  assert.equal(r.studies.length, studies.size);
  for (const st of r.studies) {
    const s = studies.get(st.studyUid);
    assert.ok(s, st.studyUid);
    assert.equal(st.instances, s.n);
    assert.equal(st.bytes, s.bytes);
    assert.deepEqual(new Map(st.series.map((x) => [x.seriesUid, x.instances])), s.series);
  }
  assert.equal(r.bytes, [...uniq.values()].reduce((a, e) => a + e.size, 0));
  const pkeys = new Set([...uniq.values()].map((e) => `${e.patientId}|${e.patientName}|${e.birthDate}`));
  assert.equal(r.patients.length, pkeys.size);

  const reason = (n) => r.skipped.find((s) => s.name === n || s.name.endsWith(`/${n}`))?.reason;
  assert.equal(reason('DICOMDIR'), REASONS.dicomdir);
  for (const n of ['README.TXT', 'AUTORUN.INF', 'viewer.exe', 'index.html', 'noise.bin', 'IM0001']) assert.equal(reason(n), REASONS.notDicom, n);
  assert.equal(reason('.DS_Store'), REASONS.hidden);
  assert.equal(reason('empty.dcm'), REASONS.empty);
  assert.equal(reason('cut.dcm'), REASONS.damaged);
  assert.equal(reason('bad.dcm'), REASONS.damaged);
  assert.ok(progress.length >= 2);
  assert.deepEqual(progress.at(-1), { done: files.length, total: files.length });
});

test('ZIP with stored and deflated entries', async () => {
  const zipPath = join(tmp, 'cd.zip');
  const members = ['CT_small.dcm', 'MR_small_implicit.dcm', 'MR_small_bigendian.dcm', 'JPEG-lossy.dcm', 'examples_overlay.dcm', 'image_dfl.dcm'];
  python(String.raw`
import sys, zipfile, io, os
src, out = sys.argv[1], sys.argv[2]
inner = io.BytesIO()
with zipfile.ZipFile(inner, 'w') as z: z.writestr('x.txt', 'hi')
with zipfile.ZipFile(out, 'w') as z:
    z.writestr('CD/', '')
    z.write(os.path.join(src, 'CT_small.dcm'), 'CD/IMAGES/IM1', compress_type=zipfile.ZIP_STORED)
    z.write(os.path.join(src, 'MR_small_implicit.dcm'), 'CD/IMAGES/IM2', compress_type=zipfile.ZIP_DEFLATED)
    z.write(os.path.join(src, 'MR_small_bigendian.dcm'), 'CD/IMAGES/IM3', compress_type=zipfile.ZIP_DEFLATED)
    z.write(os.path.join(src, 'JPEG-lossy.dcm'), 'CD/IMAGES/IM4', compress_type=zipfile.ZIP_STORED)
    z.write(os.path.join(src, 'examples_overlay.dcm'), 'CD/IMAGES/IM5', compress_type=zipfile.ZIP_DEFLATED)
    z.write(os.path.join(src, 'image_dfl.dcm'), 'CD/IMAGES/IM6', compress_type=zipfile.ZIP_DEFLATED)
    z.write(os.path.join(src, 'CT_small.dcm'), 'CD/COPY/IM1', compress_type=zipfile.ZIP_DEFLATED)
    z.write(os.path.join(src, 'dicomdirtests', 'DICOMDIR'), 'CD/DICOMDIR', compress_type=zipfile.ZIP_STORED)
    z.writestr('CD/README.TXT', 'Patient CD\n' * 50, compress_type=zipfile.ZIP_DEFLATED)
    z.writestr('__MACOSX/CD/._IM1', b'\0' * 100)
    z.writestr('CD/inner.zip', inner.getvalue())
`, [TEST_FILES, zipPath]);
  const paths = members.map((n) => join(TEST_FILES, n));
  const expected = pydicomRead(paths);
  const { blob, counter } = countingBlob(await openAsBlob(zipPath), 'cd.zip');
  const r = await scanFiles([blob]);
  // Archive order: the members, then CT_small again. MR_small_implicit and _bigendian are the
  // same instance in two transfer syntaxes: the first one counts.
  const firstSize = new Map();
  for (const p of paths) if (!firstSize.has(expected[p].sopUid)) firstSize.set(expected[p].sopUid, statSync(p).size);
  assert.equal(r.zips, 1);
  assert.equal(r.dicomFiles, 7);
  assert.equal(r.instances, firstSize.size);
  assert.equal(r.duplicates, 7 - firstSize.size);
  for (const p of paths) {
    const e = expected[p];
    const st = r.studies.find((s) => s.studyUid === e.studyUid);
    assert.ok(st, basename(p));
    assertMatches(st, e, `zip:${basename(p)}`);
  }
  assert.equal(r.bytes, [...firstSize.values()].reduce((a, b) => a + b, 0)); // uncompressed sizes
  const reason = (n) => r.skipped.find((s) => s.name === `cd.zip/${n}`)?.reason;
  assert.equal(reason('CD/DICOMDIR'), REASONS.dicomdir);
  assert.equal(reason('CD/README.TXT'), REASONS.notDicom);
  assert.equal(reason('__MACOSX/CD/._IM1'), REASONS.hidden);
  assert.equal(reason('CD/inner.zip'), REASONS.nestedZip);
  assert.equal(r.skipped.length, 4);
  assert.ok(counter.bytes < statSync(zipPath).size, 'zip should not be read completely');
});

test('ZIP64 end of central directory (more than 65535 entries)', async () => {
  const zipPath = join(tmp, 'many.zip');
  python(String.raw`
import sys, zipfile
with zipfile.ZipFile(sys.argv[2], 'w') as z:
    z.write(sys.argv[1] + '/CT_small.dcm', 'IM1')
    for i in range(65536):
        z.writestr('d/.h%d' % i, b'')
`, [TEST_FILES, zipPath]);
  const r = await scanFiles([new File([await openAsBlob(zipPath)], 'many.zip')]);
  assert.equal(r.instances, 1);
  assert.equal(r.skipped.length, 65536);
  assert.equal(r.skipped[0].reason, REASONS.hidden);
});

test('large files: only the head is read; long headers are re-read', async () => {
  const big = join(tmp, 'big.dcm');
  const long = join(tmp, 'long.dcm');
  const longImplicit = join(tmp, 'long_implicit.dcm');
  python(String.raw`
import sys, os, pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
src, big, long, longi = sys.argv[1:5]
raw = open(os.path.join(src, 'CT_small.dcm'), 'rb').read()
i = raw.rindex(b'\xe0\x7f\x10\x00OW')
size = 200 * 1024 * 1024
with open(big, 'wb') as f:
    f.write(raw[:i] + b'\xe0\x7f\x10\x00OW\0\0' + (size - i - 12).to_bytes(4, 'little'))
    f.truncate(size)
ds = pydicom.dcmread(os.path.join(src, 'CT_small.dcm'))
ds.add_new(0x00090010, 'LO', 'FERRY TEST')
ds.add_new(0x00091001, 'OB', b'\x01' * 300000)
items = []
for k in range(4000):
    it = Dataset(); it.ReferencedSOPClassUID = '1.2.840.10008.5.1.4.1.1.2'; it.ReferencedSOPInstanceUID = '1.2.3.%d' % k
    items.append(it)
ds.ReferencedImageSequence = Sequence(items)
ds.save_as(long, enforce_file_format=True)  # defined lengths: skipped by jumping
# implicit VR, undefined-length sequence and items with nested undefined-length sequences
for it in items:
    it.is_undefined_length_sequence_item = True
    code = Dataset(); code.CodeValue = '121311'; code.is_undefined_length_sequence_item = True
    it.PurposeOfReferenceCodeSequence = Sequence([code])
    it['PurposeOfReferenceCodeSequence'].is_undefined_length = True
ds['ReferencedImageSequence'].is_undefined_length = True
ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
ds.save_as(longi, enforce_file_format=True)
`, [TEST_FILES, big, long, longImplicit]);
  const ct = join(TEST_FILES, 'CT_small.dcm');
  const e = pydicomRead([ct])[ct];

  const { blob, counter } = countingBlob(await openAsBlob(big), 'big.dcm');
  const t0 = performance.now();
  const r = await scanFiles([blob]);
  const ms = performance.now() - t0;
  assert.equal(r.instances, 1, JSON.stringify(r.skipped));
  assertMatches(r.studies[0], e, 'big');
  assert.equal(r.bytes, 200 * 1024 * 1024);
  assert.ok(counter.bytes <= 64 * 1024, `read ${counter.bytes} bytes`);
  assert.ok(ms < 2000, `${ms} ms`);

  for (const p of [long, longImplicit]) {
    const { blob: b, counter: c } = countingBlob(await openAsBlob(p), basename(p));
    const r2 = await scanFiles([b]);
    assert.equal(r2.instances, 1, `${basename(p)}: ${JSON.stringify(r2.skipped)}`);
    assertMatches(r2.studies[0], e, basename(p));
    assert.ok(c.bytes < 4 * 1024 * 1024, `${basename(p)} read ${c.bytes}`);
  }
});

test('never throws on odd input', async () => {
  const rnd = (n, seed) => new Uint8Array(n).map((_, i) => ((i + seed) * 2654435761) >>> 24);
  const ct = readFileSync(join(TEST_FILES, 'CT_small.dcm'));
  const files = [];
  for (let cut = 0; cut < 2000; cut += 37) files.push(bytesFile(ct.subarray(0, cut), `cut${cut}.dcm`));
  for (let k = 0; k < 20; k++) {
    const b = Buffer.from(ct);
    for (let j = 0; j < 20; j++) b[(k * 977 + j * 131) % 1500 + 132] ^= 0xff; // flip bytes in the header
    files.push(bytesFile(b, `flip${k}.dcm`));
  }
  files.push(bytesFile(rnd(70000, 1), 'r1'), bytesFile(Buffer.from('PK\x03\x04garbage'), 'bad.zip'));
  files.push({ name: 'weird', size: 10, slice() { throw new Error('boom'); } });
  const r = await scanFiles(files);
  assert.equal(r.dicomFiles + r.skipped.length, files.length);
  assert.ok(r.skipped.some((s) => s.name === 'bad.zip' && s.reason === REASONS.damagedZip));
  assert.ok(r.skipped.some((s) => s.name === 'weird' && s.reason === REASONS.unreadable));
  const r2 = await scanFiles([]);
  assert.equal(r2.dicomFiles, 0);
});
