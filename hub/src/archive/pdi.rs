//! The IHE PDI layout on a ZIP (as DLX, DIN/TS 19455, expects it):
//!
//! ```text
//! README.TXT  INDEX.HTM  DICOMDIR
//! STUD01/SER01/IMG001 …        DICOM files as stored (byte-identical), names of ≤ 8 characters
//! IHE_PDI/REPORTS/REPORT01.PDF  reports (not in the DICOMDIR)
//! ```
//!
//! The same layout serves a share's download, a DLX download and a transfer's download, so
//! whatever Ferry hands out can be imported by a PACS or viewer from its DICOMDIR.

use bytes::Bytes;
use maud::{DOCTYPE, html};

use super::dicomdir::{self, Image, Patient, Series, Study};
use super::{Plan, Source};
use crate::error::{AppError, AppResult};
use crate::index::Holding;
use crate::index::instances::{COLUMNS_I, InstanceRow};
use crate::state::AppState;
use crate::storage::keys::KeyCache;

/// An instance with the patient, study and series attributes its DICOMDIR records need.
#[derive(sqlx::FromRow)]
pub struct Item {
    #[sqlx(flatten)]
    pub row: InstanceRow,
    pub instance_number: Option<i64>,
    pub patient_id: String,
    pub patient_name: String,
    pub birth_date: String,
    pub sex: String,
    pub study_date: String,
    pub study_time: String,
    pub study_description: String,
    pub study_id: String,
    pub accession: String,
    pub modality: String,
    pub series_number: String,
    pub series_description: String,
}

/// A report PDF to put under `IHE_PDI/REPORTS/`.
pub struct Report {
    pub study_uid: String,
    pub size: u64,
    pub blob_path: String,
    pub blob_key: String,
    pub key_id: String,
}

/// The instances linked to a transfer or share (optionally one study of it), in PDI order.
pub async fn items(state: &AppState, linked: Holding, id: &str, study: Option<&str>) -> AppResult<Vec<Item>> {
    let (table, key) = (linked.table(), linked.key());
    let mut sql = format!(
        "SELECT {COLUMNS_I}, i.instance_number, s.patient_id, s.patient_name, s.patient_birth_date AS birth_date, s.patient_sex AS sex, \
         s.study_date, s.study_time, s.study_description, s.study_id, s.accession_number AS accession, se.modality, \
         se.series_number, se.series_description \
         FROM {table} l JOIN instances i ON i.origin = l.origin AND i.sop_instance_uid = l.sop_instance_uid \
         JOIN series se ON se.origin = i.origin AND se.series_uid = i.series_uid \
         JOIN studies s ON s.origin = i.origin AND s.study_uid = i.study_uid \
         WHERE l.{key} = $1"
    );
    if study.is_some() {
        sql.push_str(" AND l.study_uid = $2");
    }
    sql.push_str(
        " ORDER BY s.patient_id, s.patient_name, s.study_date, s.study_time, i.study_uid, i.series_uid, \
         i.instance_number, i.sop_instance_uid",
    );
    let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id);
    if let Some(s) = study {
        q = q.bind(s);
    }
    Ok(q.fetch_all(&state.db).await?)
}

/// A name component of at most 8 characters: `prefix` and a zero-padded number.
fn component(prefix: &str, n: usize, width: usize) -> AppResult<String> {
    let s = format!("{prefix}{n:0width$}");
    if s.len() > 8 {
        return Err(AppError::BadRequest("too many studies, series or images for one PDI archive".into()));
    }
    Ok(s)
}

/// Lays out `items` (in PDI order) and `reports` as an archive.
pub async fn plan(state: &AppState, items: Vec<Item>, reports: Vec<Report>, title: &str) -> AppResult<Plan> {
    let mut keys = KeyCache::default();
    let mut patients: Vec<Patient> = Vec::new();
    let mut files = Vec::with_capacity(items.len());
    let mut index = Vec::new();
    let (mut study_no, mut series_no, mut image_no) = (0usize, 0usize, 0usize);
    for it in &items {
        let new_patient = patients.last().is_none_or(|p| p.id != it.patient_id || p.name != it.patient_name);
        if new_patient {
            patients.push(Patient {
                id: it.patient_id.clone(),
                name: it.patient_name.clone(),
                birth_date: it.birth_date.clone(),
                sex: it.sex.clone(),
                studies: vec![],
            });
        }
        let Some(patient) = patients.last_mut() else { continue };
        if new_patient || patient.studies.last().is_none_or(|s| s.uid != it.row.study_uid) {
            study_no += 1;
            series_no = 0;
            patient.studies.push(Study {
                uid: it.row.study_uid.clone(),
                date: it.study_date.clone(),
                time: it.study_time.clone(),
                description: it.study_description.clone(),
                study_id: it.study_id.clone(),
                accession: it.accession.clone(),
                series: vec![],
            });
            index.push((it.patient_name.clone(), it.study_date.clone(), it.study_description.clone(), Vec::new()));
        }
        let Some(study) = patient.studies.last_mut() else { continue };
        if study.series.last().is_none_or(|s| s.uid != it.row.series_uid) {
            series_no += 1;
            image_no = 0;
            study.series.push(Series {
                uid: it.row.series_uid.clone(),
                modality: it.modality.clone(),
                number: it.series_number.clone(),
                images: vec![],
            });
            if let Some(entry) = index.last_mut() {
                entry.3.push((it.modality.clone(), it.series_description.clone(), 0usize, format!("STUD{study_no:02}/SER{series_no:02}")));
            }
        }
        image_no += 1;
        let file_id = vec![component("STUD", study_no, 2)?, component("SER", series_no, 2)?, component("IMG", image_no, 3)?];
        if let Some(series) = study.series.last_mut() {
            series.images.push(Image {
                file_id: file_id.clone(),
                sop_class_uid: it.row.sop_class_uid.clone(),
                sop_instance_uid: it.row.sop_instance_uid.clone(),
                transfer_syntax: it.row.transfer_syntax.clone(),
                instance_number: it.instance_number,
            });
        }
        if let Some(s) = index.last_mut().and_then(|e| e.3.last_mut()) {
            s.2 += 1;
        }
        let key = keys.blob_key(&state.keys, &state.db, &it.row.key_id, &it.row.blob_key).await?;
        files.push((file_id.join("/"), it.row.size, it.row.blob_path.clone(), key));
    }
    let mut plan = Plan::default();
    let media_uid = format!("2.25.{}", uuid::Uuid::new_v4().as_u128());
    let dicomdir = dicomdir::build(&patients, &media_uid);
    let mut report_names = Vec::new();
    let mut report_files = Vec::new();
    for (n, r) in reports.iter().enumerate() {
        let name = format!("IHE_PDI/REPORTS/REPORT{:02}.PDF", n + 1);
        let key = keys.blob_key(&state.keys, &state.db, &r.key_id, &r.blob_key).await?;
        report_names.push(name.clone());
        report_files.push((name, r.size, r.blob_path.clone(), key));
    }
    plan.push_memory("README.TXT", Bytes::from(readme(title, files.len(), reports.len())));
    plan.push_memory("INDEX.HTM", Bytes::from(index_page(title, &index, &report_names)));
    plan.push_memory("DICOMDIR", Bytes::from(dicomdir));
    for (name, size, path, key) in files.into_iter().chain(report_files) {
        plan.entries.push(super::Entry { name, size, source: Source::Blob { path, key } });
    }
    Ok(plan)
}

fn readme(title: &str, images: usize, reports: usize) -> String {
    format!(
        "{title}\r\n\
         \r\n\
         DEUTSCH\r\n\
         Dieses Archiv enthaelt medizinische Bilder im DICOM-Format ({images} Dateien) und {reports} Befund(e)\r\n\
         im Aufbau einer Patienten-CD nach IHE PDI. Entpacken Sie es und oeffnen Sie INDEX.HTM fuer eine\r\n\
         Uebersicht. Ein PACS oder DICOM-Viewer importiert die Bilder ueber die Datei DICOMDIR; Befunde\r\n\
         liegen als PDF im Ordner IHE_PDI/REPORTS. Die Dateien sind unveraendert, wie die Klinik sie\r\n\
         gespeichert hat. Das Archiv enthaelt keine Programme.\r\n\
         \r\n\
         ENGLISH\r\n\
         This archive holds medical images in DICOM format ({images} files) and {reports} report(s), laid out\r\n\
         like a patient CD (IHE PDI). Unpack it and open INDEX.HTM for an overview. A PACS or DICOM viewer\r\n\
         imports the images through the DICOMDIR file; reports are PDFs in IHE_PDI/REPORTS. The files are\r\n\
         unchanged, exactly as the clinic stored them. The archive contains no programs.\r\n\
         \r\n\
         Made by Ferry.\r\n"
    )
}

type IndexStudy = (String, String, String, Vec<(String, String, usize, String)>);

fn index_page(title: &str, studies: &[IndexStudy], reports: &[String]) -> String {
    html! {
        (DOCTYPE)
        html lang="de" {
            head { meta charset="utf-8"; title { (title) } }
            body {
                h1 { (title) }
                p { "Medizinische Bilder im DICOM-Format, Aufbau nach IHE PDI. Import in ein PACS oder einen Viewer über die Datei DICOMDIR." }
                p { "Medical images in DICOM format, IHE PDI layout. Import into a PACS or viewer through the DICOMDIR file." }
                @for (patient, date, description, series) in studies {
                    h2 { (crate::ui::person_name(patient)) " · " (crate::ui::dicom_date(crate::ui::Lang::De, date)) " " (description) }
                    table border="1" cellpadding="4" {
                        tr { th { "Modalität / Modality" } th { "Serie / Series" } th { "Bilder / Images" } th { "Ordner / Folder" } }
                        @for (modality, desc, count, folder) in series {
                            tr { td { (modality) } td { (desc) } td { (count) } td { (folder) } }
                        }
                    }
                }
                @if !reports.is_empty() {
                    h2 { "Befunde / Reports" }
                    ul { @for r in reports { li { a href=(r) { (r) } } } }
                }
            }
        }
    }
    .into_string()
}
