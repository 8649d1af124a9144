// Ferry — scan dropped files in the browser before uploading them.
//
// Reads only the head of each file (64 KiB, more only when a header is bigger), recognises DICOM
// Part 10 files (with or without preamble), raw data sets, DICOMDIR, ZIPs (central directory +
// the head of every entry) and reports patients / studies / series / instances / sizes.
// No dependencies, no build step: runs unchanged in browsers and in Node >= 20.
//
//   import { scanFiles } from './scan.js';
//   const r = await scanFiles(input.files, ({ done, total }) => ...);
//
// Result: { patients: [{name, birthDate, id, sex}],
//           studies: [{studyUid, date, description, accession, patientName, patientId, birthDate,
//                      modalities, series: [{seriesUid, modality, description, number, instances}],
//                      instances, bytes}],
//           dicomFiles, instances, duplicates, skipped: [{name, reason}], zips, bytes, inputBytes }
// `bytes` is the size of the unique DICOM instances found (ZIP entries count uncompressed);
// `inputBytes` the size of everything that was dropped.

const DEFAULTS = {
  headBytes: 64 * 1024, // first read of every file
  maxWindow: 1024 * 1024, // largest single re-read when a header is longer than the first read
  maxReadBytes: 4 * 1024 * 1024, // give up on a header after reading this much of one file
  concurrency: 8,
};

const TS_IMPLICIT_LE = '1.2.840.10008.1.2';
const TS_EXPLICIT_BE = '1.2.840.10008.1.2.2';
const TS_DEFLATED = '1.2.840.10008.1.2.1.99';
const DICOMDIR_CLASS = '1.2.840.10008.1.3.10';

export const REASONS = {
  hidden: 'hidden file',
  empty: 'empty file',
  dicomdir: 'DICOMDIR (index of the CD)',
  notDicom: 'not a DICOM file',
  damaged: 'damaged DICOM header',
  truncated: 'truncated DICOM file',
  tooLarge: 'DICOM header too large to scan',
  nestedZip: 'ZIP inside a ZIP (not scanned)',
  damagedZip: 'damaged ZIP',
  encrypted: 'encrypted ZIP entry',
  zipMethod: 'unsupported ZIP compression',
  unsafePath: 'unsafe path in ZIP entry',
  unreadable: 'could not be read',
};

const UNDEF = 0xffffffff;
const LAST_TAG = 0x00200011; // SeriesNumber: the last tag we need
const PIXEL_DATA = 0x7fe00010;
const VRS = new Set('AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL UN UR US UT UV'.split(' '));
const LONG_VRS = new Set('OB OD OF OL OV OW SQ UC UN UR UT SV UV'.split(' '));
const EXPLICIT_LE = Object.freeze({ explicit: true, little: true });
const IMPLICIT_LE = Object.freeze({ explicit: false, little: true });
const EXPLICIT_BE = Object.freeze({ explicit: true, little: false });

const WANTED = new Map([
  [0x00080005, 'charset'],
  [0x00080016, 'sopClass'],
  [0x00080018, 'sopUid'],
  [0x00080020, 'studyDate'],
  [0x00080050, 'accession'],
  [0x00080060, 'modality'],
  [0x00081030, 'studyDescription'],
  [0x0008103e, 'seriesDescription'],
  [0x00100010, 'patientName'],
  [0x00100020, 'patientId'],
  [0x00100030, 'birthDate'],
  [0x00100040, 'sex'],
  [0x0020000d, 'studyUid'],
  [0x0020000e, 'seriesUid'],
  [0x00200011, 'seriesNumber'],
]);

// Thrown inside the synchronous parsers.
class OutOfData {
  constructor(pos) { this.pos = pos; this.start = pos; }
}
class Damaged {
  constructor(reason) { this.reason = reason; }
}

// ---------------------------------------------------------------------------------------------
// Byte sources: { size, read(offset, length) -> Uint8Array, stream(offset) -> ReadableStream }

function blobSource(blob, size = blob.size) {
  return {
    size,
    async read(off, len) {
      const end = Math.min(size, off + len);
      if (off >= end) return new Uint8Array(0);
      return new Uint8Array(await blob.slice(off, end).arrayBuffer());
    },
    stream(off) { return blob.slice(off, size).stream(); },
  };
}

// Decompresses a raw deflate stream lazily; keeps the prefix decompressed so far.
function inflateSource(open, size = Infinity) {
  let cache = new Uint8Array(0);
  let complete = false;
  const src = {
    size,
    async read(off, len) {
      const want = Math.min(off + len, src.size);
      if (cache.length < want && !complete) {
        const r = await inflatePrefix(open(), want);
        cache = r.bytes;
        if (r.ended) { complete = true; src.size = cache.length; }
      }
      return cache.subarray(Math.min(off, cache.length), Math.min(off + len, cache.length));
    },
    stream(off) { return open().pipeThrough(new DecompressionStream('deflate-raw')).pipeThrough(skipBytes(off)); },
  };
  return src;
}

async function inflatePrefix(stream, want) {
  const reader = stream.pipeThrough(new DecompressionStream('deflate-raw')).getReader();
  const chunks = [];
  let total = 0;
  let ended = false;
  try {
    while (total < want) {
      const { done, value } = await reader.read();
      if (done) { ended = true; break; }
      chunks.push(value);
      total += value.length;
    }
  } catch {
    ended = true; // corrupt or cut deflate data: keep what came out
  }
  reader.cancel().catch(() => {});
  return { bytes: concat(chunks, total), ended };
}

function skipBytes(n) {
  let left = n;
  return new TransformStream({
    transform(chunk, ctl) {
      if (left >= chunk.length) { left -= chunk.length; return; }
      ctl.enqueue(left ? chunk.subarray(left) : chunk);
      left = 0;
    },
  });
}

function concat(chunks, total) {
  if (chunks.length === 1) return chunks[0];
  const out = new Uint8Array(total);
  let p = 0;
  for (const c of chunks) { out.set(c, p); p += c.length; }
  return out;
}

async function readWindow(src, start, size) {
  const bytes = await src.read(start, size);
  const eof = bytes.length < size || start + bytes.length >= src.size;
  return { base: start, bytes, dv: new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength), eof };
}

// ---------------------------------------------------------------------------------------------
// Data set walking

const isUpper = (c) => c >= 0x41 && c <= 0x5a;
const knownVR = (b, i) => i + 2 <= b.length && isUpper(b[i]) && isUpper(b[i + 1]) && VRS.has(String.fromCharCode(b[i], b[i + 1]));

function need(w, p, n) {
  const r = p - w.base;
  if (r < 0 || r + n > w.bytes.length) throw new OutOfData(p + n);
  return r;
}

function readHeader(w, p, enc) {
  let r = need(w, p, 8);
  const dv = w.dv;
  const le = enc.little;
  const group = dv.getUint16(r, le);
  const elem = dv.getUint16(r + 2, le);
  if (group === 0xfffe || !enc.explicit) return { group, elem, vr: '', len: dv.getUint32(r + 4, le), hdr: 8 };
  const c1 = w.bytes[r + 4];
  const c2 = w.bytes[r + 5];
  if (!isUpper(c1) || !isUpper(c2)) throw new Damaged('bad VR');
  const vr = String.fromCharCode(c1, c2);
  if (LONG_VRS.has(vr)) {
    r = need(w, p, 12);
    return { group, elem, vr, len: dv.getUint32(r + 8, le), hdr: 12 };
  }
  return { group, elem, vr, len: dv.getUint16(r + 6, le), hdr: 8 };
}

// Undefined-length UN holds implicit VR little endian data (PS3.5 6.2.2).
const nestedEnc = (vr, enc) => (vr === 'UN' ? IMPLICIT_LE : enc);

// p: just after the header of an undefined-length element; returns the position after its
// sequence delimiter.
function skipSequence(w, p, enc, depth) {
  if (depth > 64) throw new Damaged('nesting too deep');
  for (;;) {
    const r = need(w, p, 8);
    const group = w.dv.getUint16(r, enc.little);
    const elem = w.dv.getUint16(r + 2, enc.little);
    const len = w.dv.getUint32(r + 4, enc.little);
    p += 8;
    if (group !== 0xfffe) throw new Damaged('bad sequence item');
    if (elem === 0xe0dd) return p;
    if (elem !== 0xe000) throw new Damaged('bad sequence item');
    p = len === UNDEF ? skipItem(w, p, enc, depth + 1) : p + len;
  }
}

function skipItem(w, p, enc, depth) {
  for (;;) {
    const h = readHeader(w, p, enc);
    p += h.hdr;
    if (h.group === 0xfffe) {
      if (h.elem === 0xe00d) return p;
      throw new Damaged('bad item');
    }
    p = h.len === UNDEF ? skipSequence(w, p, nestedEnc(h.vr, enc), depth + 1) : p + h.len;
  }
}

// Walks top-level elements from st.p in window st.w. Returns 'end' (end of data), 'stop' (needed
// tags passed), 'pixel-truncated'; throws OutOfData (with .start = element start) or Damaged.
function walkTop(st) {
  for (;;) {
    const w = st.w;
    const start = st.p;
    const rel = start - w.base;
    if (w.eof && rel >= w.bytes.length) {
      if (rel > w.bytes.length) throw new OutOfData(start);
      return 'end';
    }
    let p;
    try {
      const h = readHeader(w, start, st.enc);
      const key = h.group * 65536 + h.elem;
      if (h.group === 0xfffe || h.group === 0xfffc) return 'end'; // stray delimiter / padding
      if (key > LAST_TAG) st.tail = true;
      if (key === PIXEL_DATA && h.len !== UNDEF && start + h.hdr + h.len > st.size) return 'pixel-truncated';
      if (key >= PIXEL_DATA) return 'stop';
      p = start + h.hdr;
      if (h.len === UNDEF) {
        p = skipSequence(w, p, nestedEnc(h.vr, st.enc), 0);
      } else {
        const field = WANTED.get(key);
        if (field && h.len <= 65536 && !(field in st.vals)) {
          const r = need(w, p, h.len);
          st.vals[field] = w.bytes.slice(r, r + h.len);
        }
        p += h.len;
      }
    } catch (e) {
      if (e instanceof OutOfData) e.start = start;
      throw e;
    }
    st.p = p;
  }
}

async function walkDataset(src, w, p, enc, opts) {
  const st = { w, p, enc, vals: {}, tail: false, size: src.size };
  let readTotal = w.bytes.length;
  let lastStart = -1;
  let lastSize = 0;
  for (;;) {
    try {
      return { vals: st.vals, how: walkTop(st) };
    } catch (e) {
      if (e instanceof Damaged) return { vals: st.vals, how: st.tail ? 'stop' : 'damaged' };
      if (!(e instanceof OutOfData)) throw e;
      // Past the tags we need, only look at what is already in memory: lengths running past the
      // end of the file mean it was cut (the hub refuses those).
      if (st.tail) return { vals: st.vals, how: st.w.eof ? 'cut' : 'stop' };
      if (st.w.eof) return { vals: st.vals, how: 'truncated' };
      const start = e.start;
      if (start > src.size) return { vals: st.vals, how: 'truncated' };
      const needed = e.pos - start + 16;
      // An element that started inside the window (a long sequence) gets a bigger window at once.
      const inWindow = start < st.w.base + st.w.bytes.length;
      let size = start === lastStart ? lastSize * 4 : inWindow ? needed * 4 : opts.headBytes;
      size = Math.min(Math.max(size, needed, opts.headBytes), opts.maxWindow);
      if (needed > opts.maxWindow || (start === lastStart && lastSize >= opts.maxWindow)) return { vals: st.vals, how: 'too-large' };
      readTotal += size;
      if (readTotal > opts.maxReadBytes) return { vals: st.vals, how: 'too-large' };
      st.w = await readWindow(src, start, size);
      st.p = start;
      lastStart = start;
      lastSize = size;
    }
  }
}

function parseMeta(b, p) {
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const meta = { ts: '', sopClass: '', sopUid: '' };
  while (p + 8 <= b.length && dv.getUint16(p, true) === 0x0002) {
    const elem = dv.getUint16(p + 2, true);
    let len;
    let hdr = 8;
    if (isUpper(b[p + 4]) && isUpper(b[p + 5])) {
      if (LONG_VRS.has(String.fromCharCode(b[p + 4], b[p + 5]))) {
        if (p + 12 > b.length) throw new Damaged('meta');
        len = dv.getUint32(p + 8, true);
        hdr = 12;
      } else {
        len = dv.getUint16(p + 6, true);
      }
    } else {
      len = dv.getUint32(p + 4, true); // implicit VR meta (non-conformant writers)
    }
    if (len === UNDEF || p + hdr + len > b.length) throw new Damaged('meta');
    const v = b.subarray(p + hdr, p + hdr + len);
    if (elem === 0x0002) meta.sopClass = cleanUid(v);
    else if (elem === 0x0003) meta.sopUid = cleanUid(v);
    else if (elem === 0x0010) meta.ts = cleanUid(v);
    p += hdr + len;
  }
  meta.end = p;
  return meta;
}

function pickEncoding(ts, b, p) {
  let enc = ts === TS_IMPLICIT_LE ? IMPLICIT_LE : ts === TS_EXPLICIT_BE ? EXPLICIT_BE : EXPLICIT_LE;
  if (p + 8 <= b.length) {
    const vrOk = knownVR(b, p + 4);
    if (enc === EXPLICIT_LE && !vrOk) enc = IMPLICIT_LE;
    else if (enc === IMPLICIT_LE && vrOk) enc = EXPLICIT_LE;
    else if (enc === EXPLICIT_BE && b[p] === 0x08 && b[p + 1] === 0x00) enc = vrOk ? EXPLICIT_LE : IMPLICIT_LE;
  }
  return enc;
}

// A data set without preamble and without "DICM": accept only a plausible first element.
function sniffRaw(b) {
  if (b.length < 12) return null;
  const gLE = b[0] | (b[1] << 8);
  const eLE = b[2] | (b[3] << 8);
  const vrOk = knownVR(b, 4);
  if (gLE === 0x0002 && eLE <= 0x0100 && vrOk) return { meta: true };
  if (gLE === 0x0008 && eLE <= 0x0100) {
    if (vrOk) return { enc: EXPLICIT_LE };
    const len = b[4] | (b[5] << 8) | (b[6] << 16) | (b[7] * 0x1000000);
    if (len < 0x10000) return { enc: IMPLICIT_LE };
    return null;
  }
  const gBE = (b[0] << 8) | b[1];
  const eBE = (b[2] << 8) | b[3];
  if (gBE === 0x0008 && eBE <= 0x0100 && vrOk) return { enc: EXPLICIT_BE };
  return null;
}

const skip = (reason) => ({ skip: reason });

// Scans one file (or ZIP entry) whose first window has been read.
async function scanDicom(src, head, opts) {
  const b = head.bytes;
  let meta = null;
  let raw = null;
  let dsStart = 0;
  let enc;
  const magic = (i) => b.length >= i + 4 && b[i] === 0x44 && b[i + 1] === 0x49 && b[i + 2] === 0x43 && b[i + 3] === 0x4d;
  let metaStart = magic(128) ? 132 : magic(0) ? 4 : -1;
  if (metaStart < 0) {
    raw = sniffRaw(b);
    if (!raw) return skip(REASONS.notDicom);
    if (raw.meta) metaStart = 0;
  }
  if (metaStart >= 0) {
    try {
      meta = parseMeta(b, metaStart);
    } catch {
      return skip(raw ? REASONS.notDicom : REASONS.damaged);
    }
    if (meta.end === metaStart && !raw) return skip(REASONS.damaged); // "DICM" but no file meta
    if (meta.sopClass === DICOMDIR_CLASS) return skip(REASONS.dicomdir);
    dsStart = meta.end;
    if (meta.ts === TS_DEFLATED) {
      if (typeof DecompressionStream === 'undefined') return skip('deflated DICOM (details unavailable)');
      const dsrc = inflateSource(() => src.stream(dsStart));
      const w = await readWindow(dsrc, 0, opts.headBytes);
      const res = await walkDataset(dsrc, w, 0, pickEncoding('', w.bytes, 0), opts);
      return finish(res, meta, false);
    }
    enc = pickEncoding(meta.ts, b, dsStart);
  } else {
    enc = raw.enc;
  }
  return finish(await walkDataset(src, head, dsStart, enc, opts), meta, !!raw);
}

function finish(res, meta, raw) {
  const v = decodeValues(res.vals);
  const anything = v.sopUid || v.studyUid || v.seriesUid || v.sopClass || v.modality;
  if (raw && !anything) return skip(REASONS.notDicom);
  if (res.how === 'damaged' || res.how === 'truncated') return skip(REASONS.damaged);
  if (res.how === 'pixel-truncated' || res.how === 'cut') return skip(REASONS.truncated);
  if (v.sopClass === DICOMDIR_CLASS) return skip(REASONS.dicomdir);
  for (const [k, name] of [['sopClass', 'SOPClassUID'], ['sopUid', 'SOPInstanceUID'], ['studyUid', 'StudyInstanceUID'], ['seriesUid', 'SeriesInstanceUID']]) {
    if (!validUid(v[k])) {
      if (res.how === 'too-large') return skip(REASONS.tooLarge);
      return skip(v[k] ? `DICOM file with an invalid ${name}` : `DICOM file without ${name}`);
    }
  }
  v.transferSyntax = meta ? meta.ts : '';
  return { dicom: v };
}

const validUid = (u) => !!u && u.length <= 64 && /^[0-9.]+$/.test(u);

// ---------------------------------------------------------------------------------------------
// Text decoding

function latin1(b) {
  let s = '';
  for (let i = 0; i < b.length; i += 8192) s += String.fromCharCode.apply(null, b.subarray(i, i + 8192));
  return s;
}
const trimPad = (s) => s.replace(/^[\0 ]+|[\0 ]+$/g, '');
const cleanUid = (b) => latin1(b).replace(/[^0-9.]+$/, '').replace(/^[\0 ]+/, '');

const decoderCache = new Map();
function decodeWith(label, b) {
  if (label === 'latin1') return latin1(b);
  if (!decoderCache.has(label)) {
    let d = null;
    try { d = new TextDecoder(label); } catch { /* label not supported here */ }
    decoderCache.set(label, d);
  }
  const d = decoderCache.get(label);
  return d ? d.decode(b) : latin1(b);
}

const SINGLE_BYTE = {
  '': 'latin1', 'ISO_IR 6': 'latin1', 'ISO_IR 100': 'latin1', 'ISO_IR 101': 'iso-8859-2',
  'ISO_IR 109': 'iso-8859-3', 'ISO_IR 110': 'iso-8859-4', 'ISO_IR 144': 'iso-8859-5',
  'ISO_IR 127': 'iso-8859-6', 'ISO_IR 126': 'iso-8859-7', 'ISO_IR 138': 'iso-8859-8',
  'ISO_IR 148': 'iso-8859-9', 'ISO_IR 203': 'iso-8859-15', 'ISO_IR 166': 'windows-874',
  'ISO_IR 13': 'shift_jis', 'ISO_IR 192': 'utf-8', 'GB18030': 'gb18030', 'GBK': 'gbk',
};
// ISO 2022 code extensions: defined term -> [G0 or G1, set]
const ISO2022_TERMS = {
  'ISO 2022 IR 6': [0, 'ascii'], 'ISO 2022 IR 100': [1, 'latin1'], 'ISO 2022 IR 101': [1, 'iso-8859-2'],
  'ISO 2022 IR 109': [1, 'iso-8859-3'], 'ISO 2022 IR 110': [1, 'iso-8859-4'], 'ISO 2022 IR 144': [1, 'iso-8859-5'],
  'ISO 2022 IR 127': [1, 'iso-8859-6'], 'ISO 2022 IR 126': [1, 'iso-8859-7'], 'ISO 2022 IR 138': [1, 'iso-8859-8'],
  'ISO 2022 IR 148': [1, 'iso-8859-9'], 'ISO 2022 IR 203': [1, 'iso-8859-15'], 'ISO 2022 IR 166': [1, 'windows-874'],
  'ISO 2022 IR 13': [1, 'kana'], 'ISO 2022 IR 87': [0, 'jis0208'], 'ISO 2022 IR 159': [0, 'jis0212'],
  'ISO 2022 IR 149': [1, 'euc-kr'], 'ISO 2022 IR 58': [1, 'gb18030'],
};
const G1_96 = { 0x41: 'latin1', 0x42: 'iso-8859-2', 0x43: 'iso-8859-3', 0x44: 'iso-8859-4', 0x4c: 'iso-8859-5', 0x47: 'iso-8859-6', 0x46: 'iso-8859-7', 0x48: 'iso-8859-8', 0x4d: 'iso-8859-9', 0x62: 'iso-8859-15', 0x54: 'windows-874' };

function decodeText(b, terms) {
  if (!terms.some((t) => t.startsWith('ISO 2022'))) {
    const label = SINGLE_BYTE[terms[0] || ''] || 'latin1';
    if (!terms.length || !terms[0]) {
      // Undeclared: ASCII by the standard; many writers put UTF-8 there anyway.
      if (b.some((c) => c >= 0x80)) {
        try { return new TextDecoder('utf-8', { fatal: true }).decode(b); } catch { /* not UTF-8 */ }
      }
    }
    return decodeWith(label, b);
  }
  let g0 = 'ascii';
  let g1 = null;
  const first = ISO2022_TERMS[terms[0]];
  if (first) { if (first[0] === 0) g0 = first[1]; else g1 = first[1]; }
  let out = '';
  let label = null;
  let run = [];
  const flush = () => { if (run.length) out += decodeWith(label, Uint8Array.from(run)); run = []; };
  const put = (l, ...bytes) => { if (l !== label) { flush(); label = l; } run.push(...bytes); };
  for (let i = 0; i < b.length; i++) {
    const c = b[i];
    if (c === 0x1b) {
      const a = b[i + 1], c2 = b[i + 2], c3 = b[i + 3];
      if (a === 0x28 && (c2 === 0x42 || c2 === 0x4a)) { g0 = 'ascii'; i += 2; }
      else if (a === 0x29 && c2 === 0x49) { g1 = 'kana'; i += 2; }
      else if (a === 0x24 && c2 === 0x42) { g0 = 'jis0208'; i += 2; }
      else if (a === 0x24 && c2 === 0x28 && c3 === 0x44) { g0 = 'jis0212'; i += 3; }
      else if (a === 0x24 && c2 === 0x29 && c3 === 0x43) { g1 = 'euc-kr'; i += 3; }
      else if (a === 0x24 && c2 === 0x29 && c3 === 0x41) { g1 = 'gb18030'; i += 3; }
      else if (a === 0x2d && G1_96[c2]) { g1 = G1_96[c2]; i += 2; }
      continue;
    }
    if (c < 0x80) {
      if (g0 === 'jis0208' && c >= 0x21 && i + 1 < b.length) { put('euc-jp', c | 0x80, b[i + 1] | 0x80); i++; }
      else if (g0 === 'jis0212' && c >= 0x21 && i + 1 < b.length) { put('euc-jp', 0x8f, c | 0x80, b[i + 1] | 0x80); i++; }
      else put('latin1', c);
    } else if (g1 === 'kana') {
      flush(); label = null;
      out += c >= 0xa1 && c <= 0xdf ? String.fromCharCode(0xff61 + c - 0xa1) : '\ufffd';
    } else {
      put(g1 || 'latin1', c);
    }
  }
  flush();
  return out;
}

function decodeValues(vals) {
  const terms = vals.charset ? latin1(vals.charset).split('\\').map((t) => trimPad(t)) : [];
  const text = (k) => (vals[k] ? trimPad(decodeText(vals[k], terms)) : '');
  const ascii = (k) => (vals[k] ? trimPad(latin1(vals[k])) : '');
  const uid = (k) => (vals[k] ? cleanUid(vals[k]) : '');
  const num = parseInt(ascii('seriesNumber'), 10);
  return {
    patientName: trimPad(text('patientName').split('=')[0]),
    patientId: text('patientId'),
    birthDate: ascii('birthDate'),
    sex: ascii('sex'),
    studyUid: uid('studyUid'),
    studyDate: ascii('studyDate'),
    studyDescription: text('studyDescription'),
    accession: text('accession'),
    seriesUid: uid('seriesUid'),
    modality: ascii('modality'),
    seriesDescription: text('seriesDescription'),
    seriesNumber: Number.isFinite(num) ? num : null,
    sopUid: uid('sopUid'),
    sopClass: uid('sopClass'),
  };
}

// ---------------------------------------------------------------------------------------------
// ZIP

const isZip = (b) => b.length >= 4 && b[0] === 0x50 && b[1] === 0x4b && ((b[2] === 3 && b[3] === 4) || (b[2] === 5 && b[3] === 6));
const u64 = (dv, p) => dv.getUint32(p, true) + dv.getUint32(p + 4, true) * 0x100000000;
const dataView = (b) => new DataView(b.buffer, b.byteOffset, b.byteLength);

async function readBytes(blob, off, len) {
  const end = Math.min(blob.size, off + len);
  if (off < 0 || off >= end) return new Uint8Array(0);
  return new Uint8Array(await blob.slice(off, end).arrayBuffer());
}

async function listZip(blob) {
  const size = blob.size;
  const tailLen = Math.min(size, 22 + 0xffff + 20);
  const tail = await readBytes(blob, size - tailLen, tailLen);
  const dv = dataView(tail);
  let i = -1;
  for (let k = tail.length - 22; k >= 0; k--) {
    if (dv.getUint32(k, true) === 0x06054b50 && k + 22 + dv.getUint16(k + 20, true) <= tail.length) { i = k; break; }
  }
  if (i < 0) throw new Damaged(REASONS.damagedZip);
  const eocdAt = size - tailLen + i;
  let cdSize = dv.getUint32(i + 12, true);
  let cdOff = dv.getUint32(i + 16, true);
  let zip64 = false;
  if (dv.getUint16(i + 10, true) === 0xffff || cdSize === 0xffffffff || cdOff === 0xffffffff) {
    if (i >= 20 && dv.getUint32(i - 20, true) === 0x07064b50) {
      const z = await readBytes(blob, u64(dv, i - 20 + 8), 56);
      const zdv = dataView(z);
      if (z.length === 56 && zdv.getUint32(0, true) === 0x06064b50) {
        cdSize = u64(zdv, 40);
        cdOff = u64(zdv, 48);
        zip64 = true;
      }
    }
  }
  // Data prepended to the archive (self-extractors) shifts all offsets.
  const shift = !zip64 && cdOff + cdSize < eocdAt ? eocdAt - cdSize - cdOff : 0;
  if (cdSize > 512 * 1024 * 1024 || cdOff + shift + cdSize > size) throw new Damaged(REASONS.damagedZip);
  const cd = await readBytes(blob, cdOff + shift, cdSize);
  const cdv = dataView(cd);
  const utf8 = new TextDecoder('utf-8');
  const entries = [];
  let p = 0;
  while (p + 46 <= cd.length && cdv.getUint32(p, true) === 0x02014b50) {
    const flags = cdv.getUint16(p + 8, true);
    const method = cdv.getUint16(p + 10, true);
    let comp = cdv.getUint32(p + 20, true);
    let usize = cdv.getUint32(p + 24, true);
    const n = cdv.getUint16(p + 28, true);
    const m = cdv.getUint16(p + 30, true);
    const k = cdv.getUint16(p + 32, true);
    let off = cdv.getUint32(p + 42, true);
    const extra = cd.subarray(p + 46 + n, p + 46 + n + m);
    const edv = dataView(extra);
    for (let q = 0; q + 4 <= extra.length;) {
      const id = edv.getUint16(q, true);
      const sz = edv.getUint16(q + 2, true);
      if (id === 0x0001) {
        let r = q + 4;
        const end = Math.min(extra.length, q + 4 + sz);
        if (usize === 0xffffffff && r + 8 <= end) { usize = u64(edv, r); r += 8; }
        if (comp === 0xffffffff && r + 8 <= end) { comp = u64(edv, r); r += 8; }
        if (off === 0xffffffff && r + 8 <= end) { off = u64(edv, r); r += 8; }
      }
      q += 4 + sz;
    }
    entries.push({ name: utf8.decode(cd.subarray(p + 46, p + 46 + n)), flags, method, comp, size: usize, offset: off + shift });
    p += 46 + n + m + k;
  }
  return entries;
}

async function openEntry(zip, e) {
  const lh = await readBytes(zip, e.offset, 30);
  const dv = dataView(lh);
  if (lh.length < 30 || dv.getUint32(0, true) !== 0x04034b50) throw new Damaged(REASONS.damagedZip);
  const start = e.offset + 30 + dv.getUint16(26, true) + dv.getUint16(28, true);
  if (start + e.comp > zip.size) throw new Damaged(REASONS.damagedZip);
  const data = zip.slice(start, start + e.comp);
  if (e.method === 0) return blobSource(data, Math.min(e.size, e.comp));
  return inflateSource(() => data.stream(), e.size);
}

// ---------------------------------------------------------------------------------------------
// Driver

function preSkip(path, size) {
  const base = path.split(/[/\\]/).pop() || '';
  if (base.startsWith('.') || /(^|[/\\])__MACOSX[/\\]/.test(path) || /^(thumbs\.db|desktop\.ini)$/i.test(base)) return REASONS.hidden;
  if (base.toUpperCase() === 'DICOMDIR') return REASONS.dicomdir;
  if (size === 0) return REASONS.empty;
  return null;
}

function fileName(f, i) {
  return (typeof f.webkitRelativePath === 'string' && f.webkitRelativePath) || f.name || `file ${i + 1}`;
}

export async function scanFiles(files, onProgress, options = {}) {
  const opts = { ...DEFAULTS, ...options };
  const list = Array.from(files ?? []);
  const tasks = list.map((file, i) => ({ file, name: fileName(file, i), order: [i] }));
  const acc = newAccumulator();
  for (const f of list) acc.inputBytes += f.size || 0;

  let next = 0;
  let done = 0;
  let active = 0;
  let waiters = [];
  let lastReport = 0;
  let lastDone = -1;
  const wake = () => { const w = waiters; waiters = []; for (const r of w) r(); };
  const progress = (force) => {
    if (typeof onProgress !== 'function') return;
    const now = Date.now();
    if (!force && done - lastDone < 10 && now - lastReport < 150) return;
    lastDone = done;
    lastReport = now;
    try { onProgress({ done, total: tasks.length }); } catch { /* the caller's problem */ }
  };

  async function run(t) {
    if (t.entry) return runEntry(t);
    const f = t.file;
    const pre = preSkip(t.name, f.size);
    if (pre) return acc.skip(t, pre);
    const src = blobSource(f);
    const head = await readWindow(src, 0, opts.headBytes);
    if (isZip(head.bytes)) {
      acc.zips++;
      let entries;
      try {
        entries = await listZip(f);
      } catch (e) {
        return acc.skip(t, e instanceof Damaged ? e.reason : REASONS.damagedZip);
      }
      entries.forEach((entry, k) => {
        if (entry.name.endsWith('/') || entry.name.endsWith('\\')) return;
        tasks.push({ zip: f, entry, name: `${t.name}/${entry.name}`, order: [...t.order, k] });
      });
      wake();
      return;
    }
    acc.add(t, f.size, await scanDicom(src, head, opts));
  }

  async function runEntry(t) {
    const e = t.entry;
    const pre = preSkip(e.name, e.size);
    if (pre) return acc.skip(t, pre);
    if (e.name.startsWith('/') || e.name.includes('..')) return acc.skip(t, REASONS.unsafePath);
    if (e.flags & 1) return acc.skip(t, REASONS.encrypted);
    if (e.method !== 0 && e.method !== 8) return acc.skip(t, REASONS.zipMethod);
    if (e.method === 8 && typeof DecompressionStream === 'undefined') return acc.skip(t, REASONS.zipMethod);
    const src = await openEntry(t.zip, e);
    const head = await readWindow(src, 0, opts.headBytes);
    if (isZip(head.bytes)) return acc.skip(t, REASONS.nestedZip);
    acc.add(t, e.size, await scanDicom(src, head, opts));
  }

  async function worker() {
    for (;;) {
      if (next < tasks.length) {
        const t = tasks[next++];
        active++;
        try {
          await run(t);
        } catch (e) {
          acc.skip(t, e instanceof Damaged ? e.reason : t.entry ? REASONS.damagedZip : REASONS.unreadable);
        } finally {
          active--;
          done++;
          progress(false);
          wake();
        }
      } else if (active > 0) {
        await new Promise((r) => waiters.push(r));
      } else {
        wake();
        return;
      }
    }
  }

  progress(true);
  await Promise.all(Array.from({ length: Math.max(1, opts.concurrency) }, worker));
  progress(true);
  return acc.result();
}

// Results are collected per task and aggregated in input order (ZIP entries in archive order), so
// the outcome does not depend on which read finished first.
function newAccumulator() {
  const records = [];
  const acc = {
    zips: 0,
    inputBytes: 0,
    skip(t, reason) { records.push({ order: t.order, name: t.name, skip: reason }); },
    add(t, size, r) {
      records.push(r.skip ? { order: t.order, name: t.name, skip: r.skip } : { order: t.order, name: t.name, size, v: r.dicom });
    },
    result() {
      records.sort((a, b) => compareOrder(a.order, b.order));
      const patients = new Map();
      const studies = new Map();
      const seen = new Set();
      const skipped = [];
      let dicomFiles = 0;
      let duplicates = 0;
      let bytes = 0;
      for (const rec of records) {
        if (rec.skip) { skipped.push({ name: rec.name, reason: rec.skip }); continue; }
        const { v, size } = rec;
        dicomFiles++;
        if (seen.has(v.sopUid)) { duplicates++; continue; }
        seen.add(v.sopUid);
        bytes += size;
        const pkey = `${v.patientId}\u0000${v.patientName}\u0000${v.birthDate}`;
        if (!patients.has(pkey)) patients.set(pkey, { name: v.patientName, birthDate: v.birthDate, id: v.patientId, sex: v.sex });
        let st = studies.get(v.studyUid);
        if (!st) {
          st = {
            studyUid: v.studyUid, date: v.studyDate, description: v.studyDescription, accession: v.accession,
            patientName: v.patientName, patientId: v.patientId, birthDate: v.birthDate,
            modalities: [], series: new Map(), instances: 0, bytes: 0,
          };
          studies.set(v.studyUid, st);
        }
        st.date ||= v.studyDate;
        st.description ||= v.studyDescription;
        st.accession ||= v.accession;
        st.instances++;
        st.bytes += size;
        let se = st.series.get(v.seriesUid);
        if (!se) {
          se = { seriesUid: v.seriesUid, modality: v.modality, description: v.seriesDescription, number: v.seriesNumber, instances: 0 };
          st.series.set(v.seriesUid, se);
        }
        se.modality ||= v.modality;
        se.description ||= v.seriesDescription;
        se.number ??= v.seriesNumber;
        se.instances++;
      }
      const out = [...studies.values()].map((st) => {
        const series = [...st.series.values()].sort((a, b) => (a.number ?? Infinity) - (b.number ?? Infinity) || (a.seriesUid < b.seriesUid ? -1 : 1));
        const modalities = [...new Set(series.map((s) => s.modality).filter(Boolean))].sort();
        return { ...st, modalities, series };
      });
      out.sort((a, b) => (b.date || '').localeCompare(a.date || '') || (a.studyUid < b.studyUid ? -1 : 1));
      return {
        patients: [...patients.values()],
        studies: out,
        dicomFiles,
        instances: seen.size,
        duplicates,
        skipped,
        zips: acc.zips,
        bytes,
        inputBytes: acc.inputBytes,
      };
    },
  };
  return acc;
}

function compareOrder(a, b) {
  for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}
