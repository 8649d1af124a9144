//! Import reconciliation (IHE Import Reconciliation Workflow, IRWF.b): the sender's Patient ID is
//! kept, prefixed, or replaced by the clinic's own ID from a mapping table or a Modality Worklist
//! query; IssuerOfPatientID names the clinic's domain, the sender's identifiers are kept in
//! OtherPatientIDsSequence, and the AccessionNumber can be cleared or taken from the worklist.
//! UIDs are never changed. Decisions are made once per study and applied to each instance.
//! The rules with examples: `connector/RECONCILIATION.md`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use crate::config::{AccessionRule, PatientIdRule, Reconcile, Unmatched};
use crate::dimse::{self, Peer, text};

/// What to change in every instance of one study. `None` fields stay as sent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decision {
    pub patient_id: Option<String>,
    pub issuer: Option<String>,
    /// `Some("")` clears the AccessionNumber.
    pub accession: Option<String>,
    pub keep_original: bool,
}

impl Decision {
    pub fn changes_nothing(&self) -> bool {
        self.patient_id.is_none() && self.accession.is_none()
    }
}

/// The identifying attributes of a study as sent (read from its first instance).
struct Sent {
    patient_id: String,
    name: String,
    birth_date: String,
}

pub struct Reconciler {
    rule: Reconcile,
    mapping: HashMap<String, String>,
    worklist: Option<Peer>,
    decided: HashMap<String, Decision>,
}

impl Reconciler {
    pub fn new(rule: &Reconcile, worklist: Option<Peer>) -> anyhow::Result<Reconciler> {
        let mut mapping = HashMap::new();
        if rule.patient_id == PatientIdRule::Mapping
            && let Some(path) = &rule.mapping_file
        {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read the mapping table {}", path.display()))?;
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') || (n == 0 && line.to_lowercase().starts_with("sender")) {
                    continue;
                }
                let Some((from, to)) = line.split_once([',', ';']) else {
                    bail!("line {} of the mapping table has no comma (sender_patient_id,local_patient_id)", n + 1);
                };
                mapping.insert(from.trim().to_string(), to.trim().to_string());
            }
        }
        Ok(Reconciler { rule: rule.clone(), mapping, worklist, decided: HashMap::new() })
    }

    /// True when instances go to the PACS exactly as sent.
    pub fn is_passthrough(&self) -> bool {
        self.rule.patient_id == PatientIdRule::Keep && self.rule.accession == AccessionRule::Keep
    }

    /// The file to store for `original`: itself when nothing changes, else `out` with the
    /// study's decision applied (written once; an existing `out` is from an earlier run).
    pub async fn prepare(&mut self, study_uid: &str, original: PathBuf, out: PathBuf) -> anyhow::Result<PathBuf> {
        if self.is_passthrough() {
            return Ok(original);
        }
        let decision = self.decide(study_uid, &original).await?;
        if decision.changes_nothing() {
            return Ok(original);
        }
        if !out.exists() {
            let dst = out.clone();
            tokio::task::spawn_blocking(move || apply(&decision, &original, &dst)).await??;
        }
        Ok(out)
    }

    /// The decision for the study of the file at `path` (looked up once per study).
    pub async fn decide(&mut self, study_uid: &str, path: &Path) -> anyhow::Result<Decision> {
        if let Some(d) = self.decided.get(study_uid) {
            return Ok(d.clone());
        }
        let p = path.to_path_buf();
        let sent = tokio::task::spawn_blocking(move || -> anyhow::Result<Sent> {
            let obj = dicom_object::OpenFileOptions::new().read_until(tags::PIXEL_DATA).open_file(&p)?;
            Ok(Sent {
                patient_id: text(&obj, tags::PATIENT_ID),
                name: text(&obj, tags::PATIENT_NAME),
                birth_date: text(&obj, tags::PATIENT_BIRTH_DATE),
            })
        })
        .await??;
        let r = &self.rule;
        let prefixed = || -> anyhow::Result<String> {
            let id = format!("{}{}", r.prefix, sent.patient_id);
            if id.chars().count() > 64 {
                bail!("the prefixed Patient ID would be longer than 64 characters");
            }
            Ok(id)
        };
        let mut accession = match r.accession {
            AccessionRule::Clear => Some(String::new()),
            _ => None,
        };
        let found: Option<(String, Option<String>)> = match r.patient_id {
            PatientIdRule::Keep => None,
            PatientIdRule::Prefix => Some((prefixed()?, None)),
            PatientIdRule::Mapping => self.mapping.get(&sent.patient_id).map(|id| (id.clone(), None)),
            PatientIdRule::Worklist => {
                let peer = self.worklist.as_ref().context("no worklist peer configured")?;
                let entries = if sent.name.is_empty() || sent.birth_date.is_empty() {
                    vec![]
                } else {
                    dimse::find_worklist(peer, &sent.name, &sent.birth_date).await?
                };
                let mut ids: Vec<&str> = entries.iter().map(|e| e.patient_id.as_str()).filter(|s| !s.is_empty()).collect();
                ids.sort_unstable();
                ids.dedup();
                if ids.len() == 1 {
                    let e = entries.iter().find(|e| e.patient_id == ids[0]).context("worklist entry vanished")?;
                    if r.accession == AccessionRule::Worklist {
                        let acc: Vec<&str> = entries.iter().map(|e| e.accession.as_str()).filter(|a| !a.is_empty()).collect();
                        if acc.len() == 1 {
                            accession = Some(acc[0].to_string());
                        }
                    }
                    Some((e.patient_id.clone(), (!e.issuer.is_empty()).then(|| e.issuer.clone())))
                } else {
                    None
                }
            }
        };
        let (new_id, issuer) = match found {
            Some(f) => (Some(f.0), f.1),
            None if r.patient_id == PatientIdRule::Keep => (None, None),
            None => match r.unmatched {
                Unmatched::Keep => (None, None),
                Unmatched::Prefix => (Some(prefixed()?), None),
                Unmatched::Fail => {
                    bail!("the study's patient was found neither in the mapping table nor in the worklist (reconcile.unmatched = \"fail\")")
                }
            },
        };
        let new_id = new_id.filter(|id| *id != sent.patient_id);
        let issuer = new_id.as_ref().map(|_| issuer.unwrap_or_else(|| r.issuer.clone()));
        let d = Decision { patient_id: new_id, issuer, accession, keep_original: r.keep_original };
        self.decided.insert(study_uid.to_string(), d.clone());
        Ok(d)
    }
}

/// Writes `src` with the decision applied to `dst` (same transfer syntax; UIDs, pixel data and
/// every other attribute unchanged).
pub fn apply(d: &Decision, src: &Path, dst: &Path) -> anyhow::Result<()> {
    let mut obj = dicom_object::OpenFileOptions::new().open_file(src).with_context(|| format!("cannot read {}", src.display()))?;
    if let Some(new_id) = &d.patient_id {
        let old_id = text(&obj, tags::PATIENT_ID);
        let old_issuer = text(&obj, tags::ISSUER_OF_PATIENT_ID);
        if d.keep_original && !old_id.is_empty() {
            let mut item = InMemDicomObject::new_empty();
            item.put(DataElement::new(tags::PATIENT_ID, VR::LO, PrimitiveValue::from(old_id.as_str())));
            if !old_issuer.is_empty() {
                item.put(DataElement::new(tags::ISSUER_OF_PATIENT_ID, VR::LO, PrimitiveValue::from(old_issuer.as_str())));
            }
            item.put(DataElement::new(tags::TYPE_OF_PATIENT_ID, VR::CS, PrimitiveValue::from("TEXT")));
            let mut items: Vec<InMemDicomObject> =
                obj.get(tags::OTHER_PATIENT_I_DS_SEQUENCE).and_then(|e| e.items()).map(|i| i.to_vec()).unwrap_or_default();
            items.push(item);
            obj.put(DataElement::new(tags::OTHER_PATIENT_I_DS_SEQUENCE, VR::SQ, dicom_core::value::DataSetSequence::from(items)));
        }
        obj.put(DataElement::new(tags::PATIENT_ID, VR::LO, PrimitiveValue::from(new_id.as_str())));
        match d.issuer.as_deref() {
            Some(i) if !i.is_empty() => {
                obj.put(DataElement::new(tags::ISSUER_OF_PATIENT_ID, VR::LO, PrimitiveValue::from(i)));
            }
            // The sender's issuer no longer describes the new ID.
            _ => {
                obj.remove_element(tags::ISSUER_OF_PATIENT_ID);
            }
        }
    }
    if let Some(acc) = &d.accession {
        let value = if acc.is_empty() { PrimitiveValue::Empty } else { PrimitiveValue::from(acc.as_str()) };
        obj.put(DataElement::new(tags::ACCESSION_NUMBER, VR::SH, value));
    }
    let part = dst.with_extension("part");
    obj.write_to_file(&part).with_context(|| format!("cannot write {}", part.display()))?;
    std::fs::rename(&part, dst)?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use dicom_object::FileMetaTableBuilder;

    fn file(dir: &Path, pid: &str) -> std::path::PathBuf {
        let obj = InMemDicomObject::from_element_iter([
            DataElement::new(tags::SOP_CLASS_UID, VR::UI, PrimitiveValue::from("1.2.840.10008.5.1.4.1.1.7")),
            DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, PrimitiveValue::from("2.25.1")),
            DataElement::new(tags::ACCESSION_NUMBER, VR::SH, PrimitiveValue::from("ACC1")),
            DataElement::new(tags::PATIENT_NAME, VR::PN, PrimitiveValue::from("Test^Anna")),
            DataElement::new(tags::PATIENT_ID, VR::LO, PrimitiveValue::from(pid)),
            DataElement::new(tags::ISSUER_OF_PATIENT_ID, VR::LO, PrimitiveValue::from("PRAXIS")),
            DataElement::new(tags::PATIENT_BIRTH_DATE, VR::DA, PrimitiveValue::from("19800202")),
            DataElement::new(tags::STUDY_INSTANCE_UID, VR::UI, PrimitiveValue::from("2.25.2")),
        ]);
        let f = obj
            .with_meta(
                FileMetaTableBuilder::new()
                    .transfer_syntax("1.2.840.10008.1.2.1")
                    .media_storage_sop_class_uid("1.2.840.10008.5.1.4.1.1.7")
                    .media_storage_sop_instance_uid("2.25.1"),
            )
            .unwrap();
        let path = dir.join(format!("{pid}.dcm"));
        f.write_to_file(&path).unwrap();
        path
    }

    fn read(path: &Path) -> dicom_object::DefaultDicomObject {
        dicom_object::OpenFileOptions::new().open_file(path).unwrap()
    }

    #[tokio::test]
    async fn mapping_replaces_the_id_keeps_the_original_and_falls_back_to_the_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let table = dir.path().join("ids.csv");
        std::fs::write(&table, "sender_patient_id,local_patient_id\nP-1,4711\n").unwrap();
        let rule = Reconcile {
            patient_id: PatientIdRule::Mapping,
            mapping_file: Some(table),
            prefix: "EXT-".into(),
            issuer: "KLINIKUM".into(),
            accession: AccessionRule::Clear,
            ..Reconcile::default()
        };
        let mut r = Reconciler::new(&rule, None).unwrap();
        let known = file(dir.path(), "P-1");
        let d = r.decide("study-a", &known).await.unwrap();
        assert_eq!(d.patient_id.as_deref(), Some("4711"));
        let out = dir.path().join("out.dcm");
        apply(&d, &known, &out).unwrap();
        let o = read(&out);
        assert_eq!(text(&o, tags::PATIENT_ID), "4711");
        assert_eq!(text(&o, tags::ISSUER_OF_PATIENT_ID), "KLINIKUM");
        assert_eq!(text(&o, tags::ACCESSION_NUMBER), "");
        let other = &o.element(tags::OTHER_PATIENT_I_DS_SEQUENCE).unwrap().items().unwrap()[0];
        assert_eq!(text(other, tags::PATIENT_ID), "P-1");
        assert_eq!(text(other, tags::ISSUER_OF_PATIENT_ID), "PRAXIS");
        assert_eq!(text(&o, tags::SOP_INSTANCE_UID), "2.25.1", "UIDs stay");

        let unknown = file(dir.path(), "P-2");
        let d = r.decide("study-b", &unknown).await.unwrap();
        assert_eq!(d.patient_id.as_deref(), Some("EXT-P-2"), "not in the table: the prefix");

        let fail = Reconcile { unmatched: Unmatched::Fail, ..rule.clone() };
        let err = Reconciler::new(&fail, None).unwrap().decide("study-c", &unknown).await.unwrap_err();
        assert!(format!("{err}").contains("found neither"), "{err}");
        assert!(!format!("{err}").contains("Test^Anna") && !format!("{err}").contains("P-2"), "no patient data in errors");
    }

    #[tokio::test]
    async fn keep_changes_nothing_and_without_an_issuer_the_senders_issuer_goes() {
        let dir = tempfile::tempdir().unwrap();
        let f = file(dir.path(), "P-9");
        let mut keep = Reconciler::new(&Reconcile::default(), None).unwrap();
        assert!(keep.is_passthrough());
        assert!(keep.decide("s", &f).await.unwrap().changes_nothing());
        let rule = Reconcile { patient_id: PatientIdRule::Prefix, prefix: "X".into(), keep_original: false, ..Reconcile::default() };
        let d = Reconciler::new(&rule, None).unwrap().decide("s", &f).await.unwrap();
        let out = dir.path().join("o.dcm");
        apply(&d, &f, &out).unwrap();
        let o = read(&out);
        assert_eq!(text(&o, tags::PATIENT_ID), "XP-9");
        assert!(o.element(tags::ISSUER_OF_PATIENT_ID).is_err());
        assert!(o.element(tags::OTHER_PATIENT_I_DS_SEQUENCE).is_err());
        assert_eq!(text(&o, tags::ACCESSION_NUMBER), "ACC1");
    }
}
