//! A transfer's images as one ZIP, streamed: instances are decrypted piece by piece and written
//! as stored (uncompressed — DICOM pixel data rarely shrinks) entries by the zip crate's
//! streaming writer on a blocking thread, so memory stays flat for studies of any size.

use std::io::Write;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use bytes::Bytes;
use sqlx::Row;
use tokio::sync::mpsc;
use zip::write::SimpleFileOptions;

use crate::access::Principal;
use crate::dicomweb::db::InstanceRow;
use crate::error::{AppError, AppResult};
use crate::state::AppState;

/// `Write` into a bounded channel: the blocking ZIP writer's output becomes the response body.
struct ChannelWriter {
    tx: mpsc::Sender<std::io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn push(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(256 * 1024)));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= 256 * 1024 {
            self.push()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.push()
    }
}

/// The instances of a transfer in a stable order, with the folder each goes to.
async fn entries(state: &AppState, id: &str) -> AppResult<Vec<(String, InstanceRow)>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {}, s.study_date, se.modality \
         FROM transfer_instances ti JOIN instances i ON i.sop_instance_uid = ti.sop_instance_uid \
         JOIN series se ON se.series_uid = i.series_uid JOIN studies s ON s.study_uid = i.study_uid \
         WHERE ti.transfer_id = $1 ORDER BY s.study_date, i.study_uid, i.series_uid, i.instance_number, i.sop_instance_uid",
        crate::dicomweb::db::COLUMNS_I
    )))
    .bind(id)
    .fetch_all(&state.db)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    let (mut study_no, mut series_no, mut image_no) = (0, 0, 0);
    let (mut last_study, mut last_series) = (String::new(), String::new());
    for r in &rows {
        let row = crate::dicomweb::db::from_row(r)?;
        let date: String = r.try_get(10)?;
        let modality: String = r.try_get(11)?;
        if row.study_uid != last_study {
            study_no += 1;
            series_no = 0;
            last_study = row.study_uid.clone();
            last_series.clear();
        }
        if row.series_uid != last_series {
            series_no += 1;
            image_no = 0;
            last_series = row.series_uid.clone();
        }
        image_no += 1;
        let safe = |s: &str| s.chars().filter(|c| c.is_ascii_alphanumeric()).collect::<String>();
        let name = format!(
            "STUDY{study_no:02}_{}/SERIES{series_no:03}_{}/IMG{image_no:05}.dcm",
            safe(&date),
            safe(&modality)
        );
        out.push((name, row));
    }
    Ok(out)
}

pub async fn api_download(State(state): State<AppState>, who: Principal, Path(id): Path<String>) -> AppResult<Response> {
    let (t, _) = super::visible(&state, &who, &id).await?;
    let entries = entries(&state, &t.id).await?;
    if entries.is_empty() {
        return Err(AppError::NotFound("the transfer holds no images".into()));
    }
    // Keys first: a missing key is a clean error before the first byte goes out.
    let mut study_key = None;
    let mut keyed = Vec::with_capacity(entries.len());
    for (name, row) in entries {
        let key = crate::dicomweb::wado::blob_key(&state, &mut study_key, &row).await?;
        keyed.push((name, row, key));
    }
    tracing::info!(transfer = %t.id, principal = %who.log_id(), instances = keyed.len(), "transfer download");
    let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(8);
    let blobs = state.blobs.clone();
    let handle = tokio::runtime::Handle::current();
    let folder = format!("ferry-{}", &t.id[..8]);
    tokio::task::spawn_blocking(move || {
        let err_tx = tx.clone();
        let result = (|| -> anyhow::Result<()> {
            let mut zip = zip::ZipWriter::new_stream(ChannelWriter { tx, buf: Vec::with_capacity(256 * 1024) });
            for (name, row, key) in keyed {
                let opts = SimpleFileOptions::default()
                    .compression_method(zip::CompressionMethod::Stored)
                    .large_file(row.size >= u32::MAX as u64);
                zip.start_file(format!("{folder}/{name}"), opts)?;
                for piece in crate::storage::BlobStore::pieces(row.size, 0..row.size) {
                    let bytes = handle.block_on(blobs.read_piece(&row.blob_path, key.clone(), row.size, piece))?;
                    zip.write_all(&bytes)?;
                }
            }
            let mut inner = zip.finish()?.into_inner();
            inner.flush()?;
            Ok(())
        })();
        if let Err(e) = result {
            tracing::warn!(error = %format!("{e:#}"), "transfer download ended early");
            let _ = err_tx.blocking_send(Err(std::io::Error::other("download interrupted")));
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/zip"));
    let disposition = format!("attachment; filename=\"ferry-{}.zip\"", &t.id[..8]);
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        resp.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}
