//! Streaming structural walk of a DICOM Part 10 file.
//!
//! The walk reads the file once, front to back, without holding values in memory: it checks that
//! every element is complete (a truncated upload is caught even inside the pixel data), records
//! where the pixel data and each compressed fragment lie (so frames are later served by byte
//! range, without decoding), and keeps the bytes before the pixel data so dicom-object can parse
//! the attributes from them. Element headers are decoded by dicom-parser's stateful decoder.

use std::cell::RefCell;
use std::io::{BufRead, BufReader, Read};
use std::rc::Rc;

use dicom_core::Tag;
use dicom_core::header::{HasLength, Header};
use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::meta::FileMetaTable;
use dicom_parser::stateful::decode::{StatefulDecode, StatefulDecoder};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

const MAX_DEPTH: u32 = 32;
const ITEM: Tag = Tag(0xFFFE, 0xE000);
const ITEM_DELIMITER: Tag = Tag(0xFFFE, 0xE00D);
const SEQUENCE_DELIMITER: Tag = Tag(0xFFFE, 0xE0DD);

#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("not a DICOM file (no DICM prefix)")]
    NotDicom,
    #[error("{0}")]
    Malformed(String),
    #[error("unsupported transfer syntax {0}")]
    UnsupportedTransferSyntax(String),
    #[error("the attributes before the pixel data exceed the {0}-byte limit")]
    HeaderTooLarge(u64),
    #[error("reading the upload failed: {0}")]
    Io(std::io::Error),
}

pub use crate::index::instances::PixelLayout;

/// The result of a walk.
#[derive(Debug)]
pub struct Walked {
    /// Length of the preamble (128 or 0).
    pub preamble: usize,
    /// All bytes before the top-level pixel data element (the whole file when it has none).
    pub head: Vec<u8>,
    pub transfer_syntax: String,
    pub pixel: Option<PixelLayout>,
    pub total_len: u64,
}

struct Inner<R> {
    src: BufReader<R>,
    pushback: Vec<u8>,
    pushback_pos: usize,
    head: Vec<u8>,
    recording: bool,
    max_head: u64,
    total: u64,
}

/// A reader that records what passes through it until told to stop.
struct Tee<R>(Rc<RefCell<Inner<R>>>);

impl<R> Clone for Tee<R> {
    fn clone(&self) -> Self {
        Tee(self.0.clone())
    }
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut inner = self.0.borrow_mut();
        let inner = &mut *inner;
        if inner.pushback_pos < inner.pushback.len() {
            let n = (inner.pushback.len() - inner.pushback_pos).min(buf.len());
            buf[..n].copy_from_slice(&inner.pushback[inner.pushback_pos..inner.pushback_pos + n]);
            inner.pushback_pos += n;
            return Ok(n);
        }
        let n = inner.src.read(buf)?;
        inner.total += n as u64;
        if inner.recording {
            if inner.head.len() as u64 + n as u64 > inner.max_head {
                return Err(std::io::Error::other(HeadLimit));
            }
            inner.head.extend_from_slice(&buf[..n]);
        }
        Ok(n)
    }
}

#[derive(Debug)]
struct HeadLimit;
impl std::fmt::Display for HeadLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("header limit")
    }
}
impl std::error::Error for HeadLimit {}

impl<R: Read> Tee<R> {
    /// Bytes the decoder has actually received (skips of a short source do not count).
    fn consumed(&self) -> u64 {
        let inner = self.0.borrow();
        inner.total - (inner.pushback.len() - inner.pushback_pos) as u64
    }

    fn at_eof(&self) -> std::io::Result<bool> {
        let mut inner = self.0.borrow_mut();
        if inner.pushback_pos < inner.pushback.len() {
            return Ok(false);
        }
        Ok(inner.src.fill_buf()?.is_empty())
    }
}

/// Walks a whole DICOM Part 10 file from `reader`.
pub fn walk<R: Read>(reader: R, max_head: u64) -> Result<Walked, ParseError> {
    let tee = Tee(Rc::new(RefCell::new(Inner {
        src: BufReader::with_capacity(64 * 1024, reader),
        pushback: Vec::new(),
        pushback_pos: 0,
        head: Vec::new(),
        recording: true,
        max_head: max_head.max(1024),
        total: 0,
    })));
    let mut first = Vec::with_capacity(132);
    tee.clone().take(132).read_to_end(&mut first).map_err(ParseError::Io)?;
    let preamble = if first.len() == 132 && &first[128..132] == b"DICM" {
        tee.0.borrow_mut().pushback = b"DICM".to_vec();
        128
    } else if first.starts_with(b"DICM") {
        tee.0.borrow_mut().pushback = first.clone();
        0
    } else {
        return Err(ParseError::NotDicom);
    };
    let meta_bytes = meta_group(&tee)?;
    let meta =
        FileMetaTable::from_reader(&meta_bytes[..]).map_err(|e| ParseError::Malformed(format!("invalid file meta information: {e}")))?;
    let ts_uid = meta.transfer_syntax().to_string();
    let ts = TransferSyntaxRegistry.get(&ts_uid).ok_or_else(|| ParseError::UnsupportedTransferSyntax(ts_uid.clone()))?;
    if ts_uid == "1.2.840.10008.1.2.1.99" || !ts.can_decode_dataset() {
        return Err(ParseError::UnsupportedTransferSyntax(ts_uid));
    }
    // Where the data set starts: exactly what the meta parser consumed.
    let meta_end = tee.consumed();
    let mut dec = StatefulDecoder::new_with_ts(tee.clone(), ts, meta_end)
        .map_err(|e| ParseError::UnsupportedTransferSyntax(format!("{ts_uid}: {e}")))?;
    let mut pixel = None;
    walk_elements(&mut dec, &tee, 0, false, &mut pixel, None).map_err(|e| match e {
        WalkError::Io(io) if io.get_ref().is_some_and(|r| r.is::<HeadLimit>()) => ParseError::HeaderTooLarge(max_head),
        WalkError::Io(io) => ParseError::Io(io),
        WalkError::Bad(m) => ParseError::Malformed(m),
    })?;
    drop(dec);
    let inner = Rc::try_unwrap(tee.0).map(RefCell::into_inner).ok();
    let (head, total) = match inner {
        Some(i) => (i.head, i.total),
        None => return Err(ParseError::Malformed("internal reader still borrowed".into())),
    };
    Ok(Walked { preamble, head, transfer_syntax: ts_uid, pixel, total_len: total })
}

/// The largest basic offset table taken: 4 million frames.
const MAX_OFFSET_TABLE: u32 = 16 << 20;

/// The largest file meta group taken (real ones are a few hundred bytes).
const MAX_META_GROUP: u32 = 64 * 1024;

/// Reads the file meta group (from `DICM` on) and checks it before dicom-object parses it: the
/// group length must be plausible and every element must fit inside the group. Otherwise a forged
/// element length in a 3 KB upload made the parser reserve gigabytes (found by fuzzing,
/// `hub/fuzz/regressions/`).
fn meta_group<R: Read>(tee: &Tee<R>) -> Result<Vec<u8>, ParseError> {
    let bad = |why: &str| ParseError::Malformed(format!("invalid file meta information: {why}"));
    let mut bytes = Vec::with_capacity(256);
    tee.clone().take(16).read_to_end(&mut bytes).map_err(ParseError::Io)?;
    if bytes.len() < 16 || &bytes[0..4] != b"DICM" || bytes[4..8] != [2, 0, 0, 0] || &bytes[8..10] != b"UL" || bytes[10..12] != [4, 0] {
        return Err(bad("it does not start with its group length (0002,0000)"));
    }
    let group = u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]);
    if group > MAX_META_GROUP {
        return Err(bad(&format!("a group length of {group} bytes is implausible")));
    }
    tee.clone().take(u64::from(group)).read_to_end(&mut bytes).map_err(ParseError::Io)?;
    let rest = &bytes[16..];
    if rest.len() < group as usize {
        return Err(bad("it is truncated"));
    }
    let u16_at = |i: usize| u16::from_le_bytes([rest[i], rest[i + 1]]);
    let mut i = 0usize;
    while i < rest.len() {
        if i + 8 > rest.len() {
            return Err(bad("an element header is cut off"));
        }
        if u16_at(i) != 0x0002 {
            return Err(bad("it holds an element outside group 0002"));
        }
        // Explicit VR little endian: the VR says how long the length field is. An unknown VR is
        // refused, since the parser would read its length differently from this check.
        let vr = &rest[i + 4..i + 6];
        let long = matches!(vr, b"OB" | b"OW" | b"OF" | b"OD" | b"OL" | b"OV" | b"SQ" | b"SV" | b"UC" | b"UN" | b"UR" | b"UT" | b"UV");
        let short = matches!(
            vr,
            b"AE"
                | b"AS"
                | b"AT"
                | b"CS"
                | b"DA"
                | b"DS"
                | b"DT"
                | b"FL"
                | b"FD"
                | b"IS"
                | b"LO"
                | b"LT"
                | b"PN"
                | b"SH"
                | b"SL"
                | b"SS"
                | b"ST"
                | b"TM"
                | b"UI"
                | b"UL"
                | b"US"
        );
        if !long && !short {
            return Err(bad("an element has an unknown value representation"));
        }
        let (len, header) = if long {
            if i + 12 > rest.len() {
                return Err(bad("an element header is cut off"));
            }
            (u32::from_le_bytes([rest[i + 8], rest[i + 9], rest[i + 10], rest[i + 11]]) as usize, 12)
        } else {
            (usize::from(u16_at(i + 6)), 8)
        };
        if len > rest.len() - i - header {
            return Err(bad("an element is longer than the group"));
        }
        i += header + len;
    }
    Ok(bytes)
}

/// Skips `len` bytes and checks they were really there: a skip over a short source is silent in
/// the decoder, so truncation is caught by comparing its position with what the source gave.
fn skip<D: StatefulDecode, R: Read>(dec: &mut D, tee: &Tee<R>, len: u32) -> Result<(), WalkError> {
    let at = dec.position();
    dec.skip_bytes(len).map_err(dec_err(at))?;
    if tee.consumed() != dec.position() {
        return Err(WalkError::Bad(format!("truncated data set: an element at byte {at} ends past the end of the file")));
    }
    Ok(())
}

enum WalkError {
    Io(std::io::Error),
    Bad(String),
}

fn bad<E: std::fmt::Display>(at: u64) -> impl FnOnce(E) -> WalkError {
    move |e| WalkError::Bad(format!("truncated or malformed data set at byte {at}: {e}"))
}

/// Maps decoder errors: hitting the header limit stays recognisable, the rest is malformed data.
fn dec_err(at: u64) -> impl FnOnce(dicom_parser::stateful::decode::Error) -> WalkError {
    move |e| {
        let mut src: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(s) = src {
            if s.is::<HeadLimit>() || s.downcast_ref::<std::io::Error>().is_some_and(|io| io.get_ref().is_some_and(|r| r.is::<HeadLimit>()))
            {
                return WalkError::Io(std::io::Error::other(HeadLimit));
            }
            src = s.source();
        }
        bad(at)(e)
    }
}

/// The size of one value of a binary number VR, the "other" ones (OW, OL, OF, OD, OV) included:
/// dicom-object reads those as arrays of numbers too.
fn fixed_size(vr: dicom_core::VR) -> Option<u32> {
    use dicom_core::VR;
    match vr {
        VR::SS | VR::US | VR::OW => Some(2),
        VR::SL | VR::UL | VR::FL | VR::AT | VR::OL | VR::OF => Some(4),
        VR::FD | VR::SV | VR::UV | VR::OD | VR::OV => Some(8),
        _ => None,
    }
}

/// Walks the elements of the data set, of an item (`in_item`: up to its delimiter), or of a part
/// that ends at byte `end` (an item or sequence of defined length). Every element must fit inside
/// what holds it: the head is parsed again by dicom-object, which reserves what a length declares,
/// so a forged length deep inside a sequence would otherwise cost gigabytes (found by fuzzing).
fn walk_elements<D: StatefulDecode, R: Read>(
    dec: &mut D,
    tee: &Tee<R>,
    depth: u32,
    in_item: bool,
    pixel: &mut Option<PixelLayout>,
    end: Option<u64>,
) -> Result<(), WalkError> {
    if depth > MAX_DEPTH {
        return Err(WalkError::Bad("sequences nested too deeply".into()));
    }
    loop {
        if let Some(e) = end
            && !in_item
            && dec.position() >= e
        {
            return Ok(());
        }
        if end.is_none() && !in_item && tee.at_eof().map_err(WalkError::Io)? {
            return Ok(());
        }
        let at = dec.position();
        let header = dec.decode_header().map_err(dec_err(at))?;
        let tag = header.tag();
        if in_item && tag == ITEM_DELIMITER {
            return Ok(());
        }
        if tag.group() == 0xFFFE {
            return Err(WalkError::Bad(format!("unexpected delimiter {tag} at byte {at}")));
        }
        let len = header.length();
        if len.is_defined()
            && let Some(e) = end
            && dec.position() + u64::from(len.0) > e
        {
            return Err(WalkError::Bad(format!("the element {tag} at byte {at} is longer than the item or sequence holding it")));
        }
        // A binary number's value must hold whole numbers: dicom-object reads whole values only
        // and would lose its place after the rest (then misread a later length and reserve
        // hundreds of megabytes; found by fuzzing, hub/fuzz/regressions/describe-sl-odd-length and
        // describe-ol-odd-length). The top-level pixel data is not parsed by dicom-object.
        if let (Some(size), true) = (fixed_size(header.vr()), len.is_defined())
            && !(tag == tags::PIXEL_DATA && depth == 0)
            && len.0 % size != 0
        {
            return Err(WalkError::Bad(format!(
                "the element {tag} at byte {at} has a value length of {} bytes, not a multiple of {size} as its VR requires",
                len.0
            )));
        }
        if tag == tags::PIXEL_DATA && depth == 0 {
            {
                // Everything before this element is the header dicom-object parses.
                let mut inner = tee.0.borrow_mut();
                let keep = (at as usize).min(inner.head.len());
                inner.head.truncate(keep);
                inner.recording = false;
            }
            *pixel = Some(walk_pixel_data(dec, tee, &header)?);
            continue;
        }
        if header.vr() == dicom_core::VR::SQ || len.is_undefined() {
            walk_sequence(dec, tee, depth + 1, len, pixel, end)?;
        } else {
            skip(dec, tee, len.0)?;
        }
    }
}

fn walk_sequence<D: StatefulDecode, R: Read>(
    dec: &mut D,
    tee: &Tee<R>,
    depth: u32,
    len: dicom_core::Length,
    pixel: &mut Option<PixelLayout>,
    outer: Option<u64>,
) -> Result<(), WalkError> {
    if depth > MAX_DEPTH {
        return Err(WalkError::Bad("sequences nested too deeply".into()));
    }
    // A sequence of defined length ends at a known byte; one of undefined length at its delimiter.
    let stop = len.is_defined().then(|| dec.position() + u64::from(len.0));
    let bound = match (stop, outer) {
        (Some(s), Some(o)) => Some(s.min(o)),
        (s, o) => s.or(o),
    };
    loop {
        if let Some(s) = stop
            && dec.position() >= s
        {
            return if dec.position() == s { Ok(()) } else { Err(WalkError::Bad("a sequence's items run past its length".into())) };
        }
        let at = dec.position();
        let item = dec.decode_header().map_err(dec_err(at))?;
        match item.tag() {
            ITEM if item.length().is_defined() => {
                let item_end = dec.position() + u64::from(item.length().0);
                if bound.is_some_and(|b| item_end > b) {
                    return Err(WalkError::Bad(format!("an item at byte {at} is longer than its sequence")));
                }
                walk_elements(dec, tee, depth + 1, false, pixel, Some(item_end))?;
                if dec.position() != item_end {
                    return Err(WalkError::Bad(format!("the elements of the item at byte {at} do not fill it exactly")));
                }
            }
            ITEM => walk_elements(dec, tee, depth + 1, true, pixel, bound)?,
            SEQUENCE_DELIMITER if stop.is_none() => return Ok(()),
            other => {
                return Err(WalkError::Bad(format!("expected a sequence item, found {other} at byte {at}")));
            }
        }
    }
}

fn walk_pixel_data<D: StatefulDecode, R: Read>(
    dec: &mut D,
    tee: &Tee<R>,
    header: &dicom_core::DataElementHeader,
) -> Result<PixelLayout, WalkError> {
    let vr = header.vr().to_string().to_string();
    let len = header.length();
    if len.is_defined() {
        let offset = dec.position();
        skip(dec, tee, len.0)?;
        return Ok(PixelLayout { vr, native: Some((offset, u64::from(len.0))), ..Default::default() });
    }
    let mut layout = PixelLayout { vr, ..Default::default() };
    let mut first = true;
    loop {
        let at = dec.position();
        let item = dec.decode_header().map_err(dec_err(at))?;
        match item.tag() {
            ITEM if item.length().is_defined() => {
                let n = item.length().0;
                if first {
                    if n % 4 != 0 {
                        return Err(WalkError::Bad("basic offset table length is not a multiple of 4".into()));
                    }
                    // Read into memory: a forged length must not reserve gigabytes.
                    if n > MAX_OFFSET_TABLE {
                        return Err(WalkError::Bad(format!("a basic offset table of {n} bytes is implausible")));
                    }
                    let at = dec.position();
                    dec.read_u32_to_vec(n, &mut layout.offset_table).map_err(dec_err(at))?;
                } else {
                    let offset = dec.position();
                    skip(dec, tee, n)?;
                    layout.fragments.push((offset, u64::from(n)));
                }
                first = false;
            }
            SEQUENCE_DELIMITER => return Ok(layout),
            other => {
                return Err(WalkError::Bad(format!("expected a pixel data fragment, found {other} at byte {at}")));
            }
        }
    }
}

impl Default for PixelLayout {
    fn default() -> Self {
        Self { vr: "OB".into(), native: None, fragments: Vec::new(), offset_table: Vec::new() }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ct_small() -> Vec<u8> {
        let out = std::process::Command::new("python3")
            .args([
                "-c",
                "import os, pydicom.data; print(os.path.join(os.path.dirname(pydicom.data.__file__), 'test_files', 'CT_small.dcm'))",
            ])
            .output()
            .unwrap();
        std::fs::read(String::from_utf8_lossy(&out.stdout).trim()).unwrap()
    }

    #[test]
    fn walks_a_complete_file_and_finds_the_pixel_data() {
        let f = ct_small();
        let w = walk(&f[..], 1 << 20).unwrap();
        assert_eq!(w.total_len, f.len() as u64);
        let (off, len) = w.pixel.clone().unwrap().native.unwrap();
        // CT_small has 138 bytes of trailing padding after its pixel data.
        assert_eq!(off + len + 138, f.len() as u64);
        assert_eq!(w.head.len() as u64, off - 12);
        assert!(crate::ingest::describe::describe(&w).is_ok());
    }

    #[test]
    fn every_truncation_is_detected() {
        let f = ct_small();
        for cut in (132..f.len()).step_by(97) {
            // A cut on an element boundary is structurally valid; describe() then notices the
            // image attributes without pixel data.
            let accepted = walk(&f[..cut], 1 << 20).ok().map(|w| crate::ingest::describe::describe(&w).is_ok());
            assert!(accepted != Some(true), "cut at {cut} of {} was accepted", f.len());
        }
    }
}
