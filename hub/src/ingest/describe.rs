//! Reads the attributes of a walked file (dicom-object over the bytes before the pixel data) into
//! what the index needs: UIDs, the QIDO matching keys, and the instance's DICOM JSON metadata
//! with bulk data replaced by BulkDataURI placeholders.

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::file::ReadPreamble;
use dicom_object::{InMemDicomObject, OpenFileOptions};
use serde_json::{Map, Value, json};

use super::parse::{PixelLayout, Walked};
use super::{Failure, reason};

/// Placeholder prefix of BulkDataURIs in stored metadata; replaced by the DICOMweb base URL
/// (from `public_url` or the request) when served.
pub const BULK_BASE: &str = "ferry-base:";
/// Binary values longer than this (base64 characters) are served as bulk data, not inline.
const INLINE_BINARY_MAX: usize = 2048;

#[derive(Debug, Clone)]
pub struct Described {
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub study_uid: String,
    pub series_uid: String,
    pub transfer_syntax: String,
    pub instance_number: Option<i64>,
    pub number_of_frames: i64,
    pub study: StudyKeys,
    pub series: SeriesKeys,
    pub pixel: Option<PixelLayout>,
    /// DICOM JSON of the instance (top-level object), no bulk data.
    pub metadata: String,
}

#[derive(Debug, Clone, Default)]
pub struct StudyKeys {
    pub patient_id: String,
    pub patient_name: String,
    pub patient_birth_date: String,
    pub patient_sex: String,
    pub study_date: String,
    pub study_time: String,
    pub accession_number: String,
    pub study_id: String,
    pub study_description: String,
    pub referring_physician: String,
}

#[derive(Debug, Clone, Default)]
pub struct SeriesKeys {
    pub modality: String,
    pub series_number: String,
    pub series_description: String,
    pub series_date: String,
    pub series_time: String,
}

fn text(obj: &InMemDicomObject, tag: Tag) -> String {
    obj.get(tag).and_then(|e| e.to_str().ok()).map(|s| s.trim_matches(|c: char| c == ' ' || c == '\0').to_string()).unwrap_or_default()
}

/// A UID as DICOM allows it: 1–64 characters of digits and dots (the contract's rule).
pub fn valid_uid(uid: &str) -> bool {
    ferry_schemas::Uid::is_valid(uid)
}

pub fn describe(walked: &Walked) -> Result<Described, Failure> {
    let bytes = walked.head.get(walked.preamble..).unwrap_or_default();
    let file = OpenFileOptions::new()
        .read_preamble(ReadPreamble::Never)
        .from_reader(bytes)
        .map_err(|e| Failure::new(reason::CANNOT_UNDERSTAND, format!("cannot parse the data set: {e}")))?;
    let obj: &InMemDicomObject = &file;
    let uid = |tag: Tag, name: &str| -> Result<String, Failure> {
        let v = text(obj, tag);
        if v.is_empty() {
            return Err(Failure::new(reason::DATASET_MISMATCH, format!("missing {name}")));
        }
        if !valid_uid(&v) {
            return Err(Failure::new(reason::DATASET_MISMATCH, format!("{name} is not a valid UID")));
        }
        Ok(v)
    };
    let sop_class_uid = uid(tags::SOP_CLASS_UID, "SOPClassUID")?;
    let sop_instance_uid = uid(tags::SOP_INSTANCE_UID, "SOPInstanceUID")?;
    let study_uid = uid(tags::STUDY_INSTANCE_UID, "StudyInstanceUID")?;
    let series_uid = uid(tags::SERIES_INSTANCE_UID, "SeriesInstanceUID")?;
    if walked.pixel.is_none()
        && obj.get(tags::ROWS).is_some()
        && obj.get(tags::FLOAT_PIXEL_DATA).is_none()
        && obj.get(tags::DOUBLE_FLOAT_PIXEL_DATA).is_none()
    {
        // A file cut on an element boundary still parses; image attributes without pixel data
        // give it away.
        return Err(Failure::new(reason::CANNOT_UNDERSTAND, "truncated file: image attributes but no pixel data"));
    }
    let instance_number = text(obj, tags::INSTANCE_NUMBER).parse::<i64>().ok();
    let number_of_frames = match &walked.pixel {
        None => 0,
        Some(_) => text(obj, tags::NUMBER_OF_FRAMES).parse::<i64>().unwrap_or(1).max(1),
    };
    let study = StudyKeys {
        patient_id: text(obj, tags::PATIENT_ID),
        patient_name: text(obj, tags::PATIENT_NAME),
        patient_birth_date: text(obj, tags::PATIENT_BIRTH_DATE),
        patient_sex: text(obj, tags::PATIENT_SEX),
        study_date: text(obj, tags::STUDY_DATE),
        study_time: text(obj, tags::STUDY_TIME),
        accession_number: text(obj, tags::ACCESSION_NUMBER),
        study_id: text(obj, tags::STUDY_ID),
        study_description: text(obj, tags::STUDY_DESCRIPTION),
        referring_physician: text(obj, tags::REFERRING_PHYSICIAN_NAME),
    };
    let series = SeriesKeys {
        modality: text(obj, tags::MODALITY),
        series_number: text(obj, tags::SERIES_NUMBER),
        series_description: text(obj, tags::SERIES_DESCRIPTION),
        series_date: text(obj, tags::SERIES_DATE),
        series_time: text(obj, tags::SERIES_TIME),
    };
    let mut json =
        dicom_json::to_value(obj).map_err(|e| Failure::new(reason::CANNOT_UNDERSTAND, format!("cannot convert to DICOM JSON: {e}")))?;
    let base = format!("{BULK_BASE}/studies/{study_uid}/series/{series_uid}/instances/{sop_instance_uid}/bulk");
    if let Value::Object(map) = &mut json {
        strip_bulk(map, Some(&base));
        map.insert("00020010".into(), json!({"vr": "UI", "Value": [walked.transfer_syntax]}));
        if let Some(px) = &walked.pixel {
            map.insert("7FE00010".into(), json!({"vr": px.vr, "BulkDataURI": format!("{base}/7FE00010")}));
        }
    }
    let metadata =
        serde_json::to_string(&json).map_err(|e| Failure::new(reason::CANNOT_UNDERSTAND, format!("cannot serialise metadata: {e}")))?;
    Ok(Described {
        sop_class_uid,
        sop_instance_uid,
        study_uid,
        series_uid,
        transfer_syntax: walked.transfer_syntax.clone(),
        instance_number,
        number_of_frames,
        study,
        series,
        pixel: walked.pixel.clone(),
        metadata,
    })
}

/// Replaces large top-level inline binaries by BulkDataURIs (`base` given); nested ones are
/// dropped from the metadata (`base` None; their values stay in the stored file and come with a
/// full retrieve).
fn strip_bulk(map: &mut Map<String, Value>, base: Option<&str>) {
    for (tag, el) in map.iter_mut() {
        let Value::Object(el) = el else { continue };
        let large = el.get("InlineBinary").and_then(Value::as_str).is_some_and(|s| s.len() > INLINE_BINARY_MAX);
        if large {
            el.remove("InlineBinary");
            if let Some(base) = base {
                el.insert("BulkDataURI".into(), Value::String(format!("{base}/{tag}")));
            }
        }
        if let Some(Value::Array(items)) = el.get_mut("Value") {
            for item in items {
                if let Value::Object(item) = item {
                    strip_bulk(item, None);
                }
            }
        }
    }
}
