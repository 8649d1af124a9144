//! Instance rows: which stored files make up a study, series or instance a scope may see (for
//! WADO-RS, the ZIP downloads and rendering).

use sqlx::FromRow;
use sqlx::any::AnyRow;

use super::scope::{Level, StudyScope};
use crate::db::Db;
use serde::{Deserialize, Serialize};

/// Where the pixel data lives inside the original file (absolute byte offsets).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PixelLayout {
    /// Value representation of (7FE0,0010): OB or OW.
    pub vr: String,
    /// Native (uncompressed) pixel data: offset and length of the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub native: Option<(u64, u64)>,
    /// Encapsulated pixel data: offset and length of each fragment after the basic offset table.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fragments: Vec<(u64, u64)>,
    /// The basic offset table (empty when the file has none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub offset_table: Vec<u32>,
}

#[derive(Debug, Clone)]
pub struct InstanceRow {
    pub study_uid: String,
    pub series_uid: String,
    pub sop_instance_uid: String,
    pub sop_class_uid: String,
    pub transfer_syntax: String,
    pub size: u64,
    pub blob_path: String,
    pub blob_key: String,
    pub pixel_layout: Option<PixelLayout>,
    pub number_of_frames: i64,
    /// Who wrote the row (see [`crate::index`]) and the data key that wraps its blob key.
    pub origin: String,
    pub key_id: String,
}

const COLUMNS: &str = "study_uid, series_uid, sop_instance_uid, sop_class_uid, transfer_syntax, \
     size, blob_path, blob_key, pixel_layout, number_of_frames, origin, key_id";
/// The same columns of `instances i` in a join, for [`InstanceRow`]'s `FromRow`.
pub const COLUMNS_I: &str = "i.study_uid, i.series_uid, i.sop_instance_uid, i.sop_class_uid, i.transfer_syntax, \
     i.size, i.blob_path, i.blob_key, i.pixel_layout, i.number_of_frames, i.origin, i.key_id";
/// Retrieve order; rows of several origins under one SOP Instance UID come together, the
/// oldest origin's first.
const ORDER: &str = "ORDER BY series_uid, instance_number, sop_instance_uid, created_at, origin";

/// An instance row as stored ([`COLUMNS`]): the size as the database keeps it, the pixel layout
/// as JSON text.
#[derive(FromRow)]
struct Stored {
    study_uid: String,
    series_uid: String,
    sop_instance_uid: String,
    sop_class_uid: String,
    transfer_syntax: String,
    size: i64,
    blob_path: String,
    blob_key: String,
    pixel_layout: Option<String>,
    number_of_frames: i64,
    origin: String,
    key_id: String,
}

impl From<Stored> for InstanceRow {
    fn from(r: Stored) -> Self {
        InstanceRow {
            study_uid: r.study_uid,
            series_uid: r.series_uid,
            sop_instance_uid: r.sop_instance_uid,
            sop_class_uid: r.sop_class_uid,
            transfer_syntax: r.transfer_syntax,
            size: r.size as u64,
            blob_path: r.blob_path,
            blob_key: r.blob_key,
            pixel_layout: r.pixel_layout.and_then(|l| serde_json::from_str(&l).ok()),
            number_of_frames: r.number_of_frames,
            origin: r.origin,
            key_id: r.key_id,
        }
    }
}

/// An instance row from the columns of [`COLUMNS`] (or [`COLUMNS_I`]), by name.
impl<'r> FromRow<'r, AnyRow> for InstanceRow {
    fn from_row(r: &'r AnyRow) -> Result<Self, sqlx::Error> {
        Stored::from_row(r).map(InstanceRow::from)
    }
}

/// A stored metadata JSON document and its instance.
#[derive(FromRow)]
struct Metadata {
    metadata: String,
    sop_instance_uid: String,
}

/// Rows of `instances` in a study, series or single instance (`None` levels are not
/// constrained), in retrieve order; `columns` is the SELECT list (with `sop_instance_uid`),
/// `uid` a row's SOP Instance UID.
async fn scoped<T>(
    db: &Db,
    scope: &StudyScope,
    columns: &str,
    study: &str,
    series: Option<&str>,
    instance: Option<&str>,
    uid: fn(&T) -> &str,
) -> Result<Vec<T>, sqlx::Error>
where
    T: for<'r> FromRow<'r, AnyRow> + Send + Unpin,
{
    let mut sql = format!("SELECT {columns} FROM instances WHERE study_uid = $1");
    let mut binds: Vec<String> = vec![study.to_string()];
    for (column, value) in [("series_uid", series), ("sop_instance_uid", instance)] {
        if let Some(v) = value {
            binds.push(v.to_string());
            sql.push_str(&format!(" AND {column} = ${}", binds.len()));
        }
    }
    let mut bind = |v: String| {
        binds.push(v);
        format!("${}", binds.len())
    };
    if let Some(cond) = scope.condition("origin", "sop_instance_uid", Level::Instance, &mut bind) {
        sql.push_str(" AND ");
        sql.push_str(&cond);
    }
    sql.push(' ');
    sql.push_str(ORDER);
    let mut q = sqlx::query_as::<_, T>(sqlx::AssertSqlSafe(sql));
    for b in binds {
        q = q.bind(b);
    }
    let mut rows = q.fetch_all(db).await?;
    // One row per SOP Instance UID: where the caller may see rows of several origins under one
    // UID, the first in retrieve order.
    let mut seen = std::collections::HashSet::new();
    rows.retain(|r| seen.insert(uid(r).to_string()));
    Ok(rows)
}

/// Instances of a study, series or single instance (`None` levels are not constrained) that
/// `scope` may see.
pub async fn instances(
    db: &Db,
    scope: &StudyScope,
    study: &str,
    series: Option<&str>,
    instance: Option<&str>,
) -> Result<Vec<InstanceRow>, sqlx::Error> {
    scoped(db, scope, COLUMNS, study, series, instance, |r: &InstanceRow| &r.sop_instance_uid).await
}

/// Stored metadata JSON documents of a study/series/instance, in retrieve order.
pub async fn metadata(
    db: &Db,
    scope: &StudyScope,
    study: &str,
    series: Option<&str>,
    instance: Option<&str>,
) -> Result<Vec<String>, sqlx::Error> {
    let rows = scoped(db, scope, "metadata, sop_instance_uid", study, series, instance, |r: &Metadata| &r.sop_instance_uid).await?;
    Ok(rows.into_iter().map(|r| r.metadata).collect())
}
