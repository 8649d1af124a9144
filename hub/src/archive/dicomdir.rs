//! A DICOMDIR (PS3.10 media directory, PS3.3 F) for the files of a ZIP in IHE PDI layout.
//!
//! dicom-rs reads DICOMDIRs but does not write them, and a DICOMDIR is mostly byte offsets:
//! every directory record names the file offset of its next sibling and of its first child. The
//! records are small and their sizes are known before any offset is written (the offsets are
//! fixed 4-byte values), so the file is encoded here in two passes: sizes, then bytes. Explicit
//! VR Little Endian throughout, explicit lengths for the sequence and its items.

use dicom_dictionary_std::{tags, uids};

/// An implementation class UID of Ferry (a UUID-derived UID under 2.25).
pub const IMPLEMENTATION_CLASS_UID: &str = "2.25.290494158286144644775307940586859430527";
pub const IMPLEMENTATION_VERSION: &str = "FERRY_01";

pub struct Patient {
    pub id: String,
    pub name: String,
    pub birth_date: String,
    pub sex: String,
    pub studies: Vec<Study>,
}

pub struct Study {
    pub uid: String,
    pub date: String,
    pub time: String,
    pub description: String,
    pub study_id: String,
    pub accession: String,
    pub series: Vec<Series>,
}

pub struct Series {
    pub uid: String,
    pub modality: String,
    pub number: String,
    pub images: Vec<Image>,
}

pub struct Image {
    /// Path components of the file below the DICOMDIR, e.g. `["STUD01", "SER01", "IMG001"]`.
    pub file_id: Vec<String>,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub transfer_syntax: String,
    pub instance_number: Option<i64>,
}

type Tag = dicom_core::Tag;

/// A few bytes of explicit VR little endian.
#[derive(Default)]
struct Enc(Vec<u8>);

impl Enc {
    fn header(&mut self, tag: Tag, vr: &[u8; 2], len: usize) {
        self.0.extend_from_slice(&tag.0.to_le_bytes());
        self.0.extend_from_slice(&tag.1.to_le_bytes());
        self.0.extend_from_slice(vr);
        if matches!(vr, b"OB" | b"OW" | b"SQ" | b"UN" | b"UT" | b"UC" | b"UR") {
            self.0.extend_from_slice(&[0, 0]);
            self.0.extend_from_slice(&(len as u32).to_le_bytes());
        } else {
            self.0.extend_from_slice(&(len as u16).to_le_bytes());
        }
    }

    /// A text value, padded to even length (UIDs with NUL, other text with a space).
    fn text(&mut self, tag: Tag, vr: &[u8; 2], value: &str) {
        let mut v = value.as_bytes().to_vec();
        if v.len() % 2 == 1 {
            v.push(if vr == b"UI" { 0 } else { b' ' });
        }
        self.header(tag, vr, v.len());
        self.0.extend_from_slice(&v);
    }

    fn ul(&mut self, tag: Tag, v: u32) {
        self.header(tag, b"UL", 4);
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    fn us(&mut self, tag: Tag, v: u16) {
        self.header(tag, b"US", 2);
        self.0.extend_from_slice(&v.to_le_bytes());
    }
}

/// Long-string values are cut to what their VR allows (the files keep the full value).
fn cut(s: &str, max: usize) -> String {
    s.chars().take(max).collect::<String>().trim_end().to_string()
}

/// One directory record: its own elements (with placeholders for the two offsets) and the
/// indexes of its next sibling and first child among all records.
struct Record {
    bytes: Vec<u8>,
    next: Option<usize>,
    child: Option<usize>,
}

/// Where the two offsets sit inside a record's bytes (after the 8-byte item header): element
/// (0004,1400) comes first (value at 8), then (0004,1410) (10 bytes), then (0004,1420) (value at 28).
const NEXT_AT: usize = 8 + 8;
const CHILD_AT: usize = 8 + 12 + 10 + 8;

fn record(kind: &str, fill: impl FnOnce(&mut Enc)) -> Vec<u8> {
    let mut e = Enc::default();
    e.ul(tags::OFFSET_OF_THE_NEXT_DIRECTORY_RECORD, 0);
    e.us(tags::RECORD_IN_USE_FLAG, 0xFFFF);
    e.ul(tags::OFFSET_OF_REFERENCED_LOWER_LEVEL_DIRECTORY_ENTITY, 0);
    e.text(tags::DIRECTORY_RECORD_TYPE, b"CS", kind);
    // The keys, in tag order (a Specific Character Set first where one is needed).
    fill(&mut e);
    let mut item = Enc::default();
    item.0.extend_from_slice(&0xFFFEu16.to_le_bytes());
    item.0.extend_from_slice(&0xE000u16.to_le_bytes());
    item.0.extend_from_slice(&(e.0.len() as u32).to_le_bytes());
    item.0.extend_from_slice(&e.0);
    item.0
}

/// The record type for a SOP class (PS3.3 F.5): most objects are IMAGE records.
fn record_type(sop_class: &str) -> &'static str {
    match sop_class {
        uids::ENCAPSULATED_PDF_STORAGE | uids::ENCAPSULATED_CDA_STORAGE => "ENCAP DOC",
        uids::KEY_OBJECT_SELECTION_DOCUMENT_STORAGE => "KEY OBJECT DOC",
        uids::GRAYSCALE_SOFTCOPY_PRESENTATION_STATE_STORAGE | uids::COLOR_SOFTCOPY_PRESENTATION_STATE_STORAGE => "PRESENTATION",
        uids::RT_DOSE_STORAGE => "RT DOSE",
        uids::RT_STRUCTURE_SET_STORAGE => "RT STRUCTURE SET",
        uids::RT_PLAN_STORAGE => "RT PLAN",
        uids::RAW_DATA_STORAGE => "RAW DATA",
        // Structured reports (1.2.840.10008.5.1.4.1.1.88.x).
        sr if sr.starts_with("1.2.840.10008.5.1.4.1.1.88.") => "SR DOCUMENT",
        _ => "IMAGE",
    }
}

fn needs_charset(p: &Patient) -> bool {
    !p.name.is_ascii() || p.studies.iter().any(|s| !s.description.is_ascii() || !s.study_id.is_ascii() || !s.accession.is_ascii())
}

/// Encodes the DICOMDIR of `patients` (whose images are already named) as a Part 10 file.
pub fn build(patients: &[Patient], media_uid: &str) -> Vec<u8> {
    // Records in depth-first order, children following their parent.
    let mut records: Vec<Record> = Vec::new();
    let mut roots: Vec<usize> = Vec::new();
    fn link(records: &mut [Record], siblings: &[usize], parent: Option<usize>) {
        for w in siblings.windows(2) {
            records[w[0]].next = Some(w[1]);
        }
        if let (Some(p), Some(&first)) = (parent, siblings.first()) {
            records[p].child = Some(first);
        }
    }
    for p in patients {
        let charset = needs_charset(p);
        let set_charset = |e: &mut Enc| {
            if charset {
                e.text(tags::SPECIFIC_CHARACTER_SET, b"CS", "ISO_IR 192");
            }
        };
        let pi = records.len();
        roots.push(pi);
        records.push(Record {
            bytes: record("PATIENT", |e| {
                set_charset(e);
                e.text(tags::PATIENT_NAME, b"PN", &cut(&p.name, 64));
                e.text(tags::PATIENT_ID, b"LO", &cut(if p.id.is_empty() { "UNKNOWN" } else { &p.id }, 64));
                e.text(tags::PATIENT_BIRTH_DATE, b"DA", &cut(&p.birth_date, 8));
                e.text(tags::PATIENT_SEX, b"CS", &cut(&p.sex, 16));
            }),
            next: None,
            child: None,
        });
        let mut study_ids = Vec::new();
        for s in &p.studies {
            let si = records.len();
            study_ids.push(si);
            records.push(Record {
                bytes: record("STUDY", |e| {
                    set_charset(e);
                    e.text(tags::STUDY_DATE, b"DA", &cut(&s.date, 8));
                    e.text(tags::STUDY_TIME, b"TM", &cut(&s.time, 16));
                    e.text(tags::ACCESSION_NUMBER, b"SH", &cut(&s.accession, 16));
                    e.text(tags::STUDY_DESCRIPTION, b"LO", &cut(&s.description, 64));
                    e.text(tags::STUDY_INSTANCE_UID, b"UI", &s.uid);
                    e.text(tags::STUDY_ID, b"SH", &cut(&s.study_id, 16));
                }),
                next: None,
                child: None,
            });
            let mut series_ids = Vec::new();
            for se in &s.series {
                let sei = records.len();
                series_ids.push(sei);
                records.push(Record {
                    bytes: record("SERIES", |e| {
                        e.text(tags::MODALITY, b"CS", &cut(&se.modality, 16));
                        e.text(tags::SERIES_INSTANCE_UID, b"UI", &se.uid);
                        e.text(tags::SERIES_NUMBER, b"IS", &cut(&se.number, 12));
                    }),
                    next: None,
                    child: None,
                });
                let mut image_ids = Vec::new();
                for im in &se.images {
                    image_ids.push(records.len());
                    records.push(Record {
                        bytes: record(record_type(&im.sop_class_uid), |e| {
                            e.text(tags::REFERENCED_FILE_ID, b"CS", &im.file_id.join("\\"));
                            e.text(tags::REFERENCED_SOP_CLASS_UID_IN_FILE, b"UI", &im.sop_class_uid);
                            e.text(tags::REFERENCED_SOP_INSTANCE_UID_IN_FILE, b"UI", &im.sop_instance_uid);
                            e.text(tags::REFERENCED_TRANSFER_SYNTAX_UID_IN_FILE, b"UI", &im.transfer_syntax);
                            e.text(tags::INSTANCE_NUMBER, b"IS", &im.instance_number.map(|n| n.to_string()).unwrap_or_default());
                        }),
                        next: None,
                        child: None,
                    });
                }
                link(&mut records, &image_ids, Some(sei));
            }
            link(&mut records, &series_ids, Some(si));
        }
        link(&mut records, &study_ids, Some(pi));
    }
    link(&mut records, &roots, None);

    // File meta information.
    let mut meta_body = Enc::default();
    meta_body.header(tags::FILE_META_INFORMATION_VERSION, b"OB", 2);
    meta_body.0.extend_from_slice(&[0, 1]);
    meta_body.text(tags::MEDIA_STORAGE_SOP_CLASS_UID, b"UI", uids::MEDIA_STORAGE_DIRECTORY_STORAGE);
    meta_body.text(tags::MEDIA_STORAGE_SOP_INSTANCE_UID, b"UI", media_uid);
    meta_body.text(tags::TRANSFER_SYNTAX_UID, b"UI", uids::EXPLICIT_VR_LITTLE_ENDIAN);
    meta_body.text(tags::IMPLEMENTATION_CLASS_UID, b"UI", IMPLEMENTATION_CLASS_UID);
    meta_body.text(tags::IMPLEMENTATION_VERSION_NAME, b"SH", IMPLEMENTATION_VERSION);
    let mut out = vec![0u8; 128];
    out.extend_from_slice(b"DICM");
    let mut group_len = Enc::default();
    group_len.ul(tags::FILE_META_INFORMATION_GROUP_LENGTH, meta_body.0.len() as u32);
    out.extend_from_slice(&group_len.0);
    out.extend_from_slice(&meta_body.0);

    // Data set: the file-set header, then the record sequence.
    let records_len: usize = records.iter().map(|r| r.bytes.len()).sum();
    let mut head = Enc::default();
    head.text(tags::FILE_SET_ID, b"CS", "FERRY");
    head.ul(tags::OFFSET_OF_THE_FIRST_DIRECTORY_RECORD_OF_THE_ROOT_DIRECTORY_ENTITY, 0);
    head.ul(tags::OFFSET_OF_THE_LAST_DIRECTORY_RECORD_OF_THE_ROOT_DIRECTORY_ENTITY, 0);
    head.us(tags::FILE_SET_CONSISTENCY_FLAG, 0);
    head.header(tags::DIRECTORY_RECORD_SEQUENCE, b"SQ", records_len);
    // Offsets count from the first byte of the file (the preamble).
    let first_record_at = out.len() + head.0.len();
    let mut starts = Vec::with_capacity(records.len());
    let mut at = first_record_at;
    for r in &records {
        starts.push(at as u32);
        at += r.bytes.len();
    }
    let patch = |buf: &mut [u8], pos: usize, v: u32| buf[pos..pos + 4].copy_from_slice(&v.to_le_bytes());
    // (0004,1130) is 8 + 6 bytes ("FERRY "), then (0004,1200) value at +8, (0004,1202) value at +12 more.
    let first_at = 14 + 8;
    let last_at = first_at + 12;
    patch(&mut head.0, first_at, roots.first().map(|&i| starts[i]).unwrap_or(0));
    patch(&mut head.0, last_at, roots.last().map(|&i| starts[i]).unwrap_or(0));
    out.extend_from_slice(&head.0);
    for r in &records {
        let at = out.len();
        out.extend_from_slice(&r.bytes);
        patch(&mut out[at..], NEXT_AT, r.next.map(|n| starts[n]).unwrap_or(0));
        patch(&mut out[at..], CHILD_AT, r.child.map(|c| starts[c]).unwrap_or(0));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn dicom_rs_reads_it_and_offsets_point_at_records() {
        let image = |n: i64| Image {
            file_id: vec!["STUD01".into(), "SER01".into(), format!("IMG{n:03}")],
            sop_class_uid: uids::CT_IMAGE_STORAGE.into(),
            sop_instance_uid: format!("1.2.3.4.{n}"),
            transfer_syntax: uids::EXPLICIT_VR_LITTLE_ENDIAN.into(),
            instance_number: Some(n),
        };
        let patients = vec![Patient {
            id: "P1".into(),
            name: "Müller^Jörg".into(),
            birth_date: "19700101".into(),
            sex: "M".into(),
            studies: vec![Study {
                uid: "1.2.3".into(),
                date: "20260101".into(),
                time: "101010".into(),
                description: "CT Thorax".into(),
                study_id: "1".into(),
                accession: "A1".into(),
                series: vec![Series { uid: "1.2.3.4".into(), modality: "CT".into(), number: "1".into(), images: vec![image(1), image(2)] }],
            }],
        }];
        let bytes = build(&patients, "2.25.1");
        let obj = dicom_object::OpenFileOptions::new().from_reader(&bytes[128..]).unwrap();
        assert_eq!(obj.meta().media_storage_sop_class_uid(), uids::MEDIA_STORAGE_DIRECTORY_STORAGE);
        let seq = obj.element(tags::DIRECTORY_RECORD_SEQUENCE).unwrap();
        let items = seq.items().unwrap();
        assert_eq!(items.len(), 5);
        let kinds: Vec<String> =
            items.iter().map(|i| i.element(tags::DIRECTORY_RECORD_TYPE).unwrap().to_str().unwrap().trim().to_string()).collect();
        assert_eq!(kinds, ["PATIENT", "STUDY", "SERIES", "IMAGE", "IMAGE"]);
        // Every offset points at the start of an item of the right record.
        let first =
            obj.element(tags::OFFSET_OF_THE_FIRST_DIRECTORY_RECORD_OF_THE_ROOT_DIRECTORY_ENTITY).unwrap().to_int::<u32>().unwrap() as usize;
        assert_eq!(&bytes[first..first + 4], &[0xFE, 0xFF, 0x00, 0xE0]);
        let child =
            |i: usize| items[i].element(tags::OFFSET_OF_REFERENCED_LOWER_LEVEL_DIRECTORY_ENTITY).unwrap().to_int::<u32>().unwrap() as usize;
        let next = |i: usize| items[i].element(tags::OFFSET_OF_THE_NEXT_DIRECTORY_RECORD).unwrap().to_int::<u32>().unwrap() as usize;
        // The record type's value starts 50 bytes into a record's item.
        let at_record = |off: usize| String::from_utf8_lossy(&bytes[off + 50..off + 56]).to_string();
        assert_eq!(at_record(first), "PATIEN");
        assert_eq!(at_record(child(0)), "STUDY ");
        assert_eq!(at_record(child(1)), "SERIES");
        assert_eq!(at_record(child(2)), "IMAGE ");
        assert_eq!(at_record(next(3)), "IMAGE ");
        assert_eq!(next(0), 0);
        assert_eq!(next(4), 0);
        assert_eq!(child(3), 0);
        let name = items[0].element(tags::PATIENT_NAME).unwrap().to_str().unwrap().to_string();
        assert_eq!(name, "Müller^Jörg");
        let file_id = items[4].element(tags::REFERENCED_FILE_ID).unwrap().to_multi_str().unwrap().to_vec();
        assert_eq!(file_id, ["STUD01", "SER01", "IMG002"]);
    }
}
