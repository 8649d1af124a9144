//! WADO-RS retrieve: whole studies/series/instances as `multipart/related; type="application/dicom"`
//! (the original bytes, streamed while decrypting; decoded to Explicit VR Little Endian only when the
//! client does not accept the stored transfer syntax), metadata as DICOM JSON with
//! BulkDataURIs, frames and bulk data by byte range from the encrypted blob.

use std::ops::Range;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;

use super::{DICOM_JSON, DicomPath, base_url, boundary};
use crate::access::Principal;
use crate::error::{AppError, AppResult};
use crate::http::accept::{self, MediaRange};
use crate::index::instances::{self as db, InstanceRow};
use crate::ingest::describe::{BULK_BASE, valid_uid};
use crate::state::AppState;
use crate::storage::crypto::Key;
use crate::storage::keys::KeyCache;

/// Checks the UIDs of a path. What the principal may see is applied by the queries
/// ([`db::instances`] with its scope): unknown and forbidden both come back empty, so both are
/// 404 and existence is not revealed.
pub fn check_access(_principal: &Principal, study: &str, series: Option<&str>, instance: Option<&str>) -> AppResult<()> {
    if [Some(study), series, instance].into_iter().flatten().any(|u| !valid_uid(u)) {
        return Err(AppError::BadRequest("a UID in the path is not valid".into()));
    }
    Ok(())
}

async fn load(
    state: &AppState,
    principal: &Principal,
    study: &str,
    series: Option<&str>,
    instance: Option<&str>,
) -> AppResult<Vec<InstanceRow>> {
    check_access(principal, study, series, instance)?;
    let rows = db::instances(&state.db, &principal.study_scope(), study, series, instance).await?;
    if rows.is_empty() {
        return Err(AppError::NotFound("no such study, series or instance".into()));
    }
    Ok(rows)
}

/// The blob key of an instance row: one data-key unwrap per study per request.
pub async fn blob_key(state: &AppState, keys: &mut KeyCache, row: &InstanceRow) -> AppResult<Key> {
    keys.blob_key(&state.keys, &state.db, &row.key_id, &row.blob_key).await
}

/// What the client accepts for a DICOM retrieve, and whether the instances must be decoded to
/// Explicit VR Little Endian first (PS3.18 §8.7.3: the stored syntax when it is acceptable,
/// `*` included; else the uncompressed default).
enum DicomRendition {
    Multipart { decode: bool },
    Single { decode: bool },
}

/// A stored file (decrypted), parsed whole; it was checked on the way in, so failing here is the
/// hub's fault.
pub fn open_stored(file: &[u8]) -> AppResult<dicom_object::DefaultDicomObject> {
    dicom_object::OpenFileOptions::new()
        .read_preamble(dicom_object::file::ReadPreamble::Auto)
        .from_reader(file)
        .map_err(|e| AppError::Internal(anyhow::anyhow!("stored file unreadable: {e}")))
}

/// The largest instance decoded for a retrieve (stored, and decoded from its attributes): the
/// decoded image is held in memory once per render slot.
const MAX_DECODED: u64 = 1 << 30;

/// The transfer syntax the hub transcodes to when the stored one is not acceptable.
pub const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";

fn negotiate_dicom(ranges: &[MediaRange], rows: &[InstanceRow], single_ok: bool) -> AppResult<DicomRendition> {
    // Some(decode) when `ts` can be served: as stored, or decoded to Explicit VR Little Endian.
    let servable = |ts: Option<&str>| match ts {
        None | Some("*") => Some(false),
        Some(ts) if rows.iter().all(|row| row.transfer_syntax == ts) => Some(false),
        Some(EXPLICIT_VR_LE) => Some(true),
        Some(_) => None,
    };
    for r in ranges {
        let multipart = r.essence == "multipart/related" && r.param("type").is_none_or(|t| t.eq_ignore_ascii_case("application/dicom"));
        if multipart || r.essence == "*/*" || r.essence == "multipart/*" {
            if let Some(decode) = servable(r.param("transfer-syntax")) {
                return Ok(DicomRendition::Multipart { decode });
            }
            continue;
        }
        if r.essence == "application/dicom" {
            let Some(decode) = servable(r.param("transfer-syntax")) else { continue };
            return Ok(if single_ok { DicomRendition::Single { decode } } else { DicomRendition::Multipart { decode } });
        }
    }
    let mut stored: Vec<&str> = rows.iter().map(|r| r.transfer_syntax.as_str()).collect();
    stored.sort_unstable();
    stored.dedup();
    Err(AppError::NotAcceptable(format!(
        "available as stored (transfer syntax {}, or transfer-syntax=*) or decoded to Explicit VR Little Endian \
         (transfer-syntax={EXPLICIT_VR_LE}); accept multipart/related; type=\"application/dicom\" with one of them",
        stored.join(", ")
    )))
}

fn too_large(stored_syntax: &str) -> AppError {
    AppError::NotAcceptable(format!(
        "the instance is too large to decode here (more than {} MiB decoded); ask for its stored syntax ({stored_syntax}) or for frames",
        MAX_DECODED >> 20
    ))
}

/// One instance decoded to Explicit VR Little Endian (the whole file, meta group included).
/// CPU-bound and as large as the decoded image: one per render slot at a time.
async fn decoded_instance(state: &AppState, keys: &mut KeyCache, row: &InstanceRow) -> AppResult<Vec<u8>> {
    if row.size > MAX_DECODED {
        return Err(too_large(&row.transfer_syntax));
    }
    let key = blob_key(state, keys, row).await?;
    let _slot = state.render_slots.acquire().await.map_err(|e| AppError::Internal(e.into()))?;
    let file = state.blobs.read_all(&row.blob_path, key, row.size).await.map_err(AppError::Internal)?;
    let ts = row.transfer_syntax.clone();
    tokio::task::spawn_blocking(move || {
        use dicom_pixeldata::Transcode;
        let mut obj = open_stored(&file)?;
        // What decoding would allocate, from the image's own attributes, before it does.
        let attr = |tag| obj.element(tag).ok().and_then(|e| e.to_int::<u64>().ok());
        let frames =
            obj.element(dicom_dictionary_std::tags::NUMBER_OF_FRAMES).ok().and_then(|e| e.to_str().ok()?.trim().parse::<u64>().ok());
        let decoded = [
            attr(dicom_dictionary_std::tags::ROWS),
            attr(dicom_dictionary_std::tags::COLUMNS),
            attr(dicom_dictionary_std::tags::SAMPLES_PER_PIXEL),
            attr(dicom_dictionary_std::tags::BITS_ALLOCATED).map(|b| b.div_ceil(8)),
            frames.or(Some(1)),
        ]
        .into_iter()
        .try_fold(1u64, |acc, v| acc.checked_mul(v.unwrap_or(1)));
        if decoded.is_none_or(|d| d > MAX_DECODED) {
            return Err(too_large(&ts));
        }
        let target = dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN.erased();
        obj.transcode(&target).map_err(|e| {
            AppError::NotAcceptable(format!("the instance in transfer syntax {ts} cannot be decoded to Explicit VR Little Endian: {e}"))
        })?;
        let mut out = Vec::with_capacity(file.len());
        obj.write_all(&mut out).map_err(|e| AppError::Internal(anyhow::anyhow!("writing the decoded instance: {e}")))?;
        Ok(out)
    })
    .await
    .map_err(|e| AppError::Internal(e.into()))?
}

/// Instances as multipart/related, each decoded to Explicit VR Little Endian unless stored so
/// (one at a time: no Content-Length, memory bounded by one decoded instance).
async fn multipart_decoded(state: AppState, rows: Vec<InstanceRow>) -> AppResult<Response> {
    let b = boundary();
    // The first one decodes before the answer starts, so a decoding failure is a clean 406.
    let mut keys = KeyCache::default();
    let mut rows = rows.into_iter();
    let Some(first_row) = rows.next() else { return Err(AppError::NotFound("no such instance".into())) };
    let first = instance_bytes(&state, &mut keys, &first_row).await?;
    let part_header = format!("--{b}\r\nContent-Type: application/dicom; transfer-syntax={EXPLICIT_VR_LE}\r\n\r\n");
    let closing = format!("--{b}--\r\n");
    let header = Bytes::from(part_header.clone());
    let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(first) })
        .chain(futures_util::stream::iter(rows).then(move |row| {
            let state = state.clone();
            async move {
                let mut keys = KeyCache::default();
                instance_bytes(&state, &mut keys, &row).await.map_err(|e| {
                    tracing::error!(error = %e, "decoding an instance failed mid-stream");
                    std::io::Error::other("decoding failed")
                })
            }
        }))
        .flat_map(move |r| {
            let header = header.clone();
            futures_util::stream::iter(match r {
                Ok(bytes) => vec![Ok(header), Ok(Bytes::from(bytes)), Ok(Bytes::from_static(b"\r\n"))],
                Err(e) => vec![Err(e)],
            })
        })
        .chain(futures_util::stream::once(async move { Ok(Bytes::from(closing)) }));
    let mut resp = Response::new(Body::from_stream(stream));
    let ct = format!("multipart/related; type=\"application/dicom\"; boundary={b}");
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_str(&ct).map_err(|e| AppError::Internal(e.into()))?);
    Ok(resp)
}

/// An instance as Explicit VR Little Endian: as stored when it is, decoded otherwise.
async fn instance_bytes(state: &AppState, keys: &mut KeyCache, row: &InstanceRow) -> AppResult<Vec<u8>> {
    if row.transfer_syntax == EXPLICIT_VR_LE {
        let key = blob_key(state, keys, row).await?;
        return state.blobs.read_all(&row.blob_path, key, row.size).await.map_err(AppError::Internal);
    }
    decoded_instance(state, keys, row).await
}

/// Streams instances as multipart/related with an exact Content-Length.
async fn multipart_dicom(state: AppState, rows: Vec<InstanceRow>) -> AppResult<Response> {
    let b = boundary();
    let part_header = format!("--{b}\r\nContent-Type: application/dicom\r\n\r\n");
    let closing = format!("--{b}--\r\n");
    let total: u64 = rows.iter().map(|r| part_header.len() as u64 + r.size + 2).sum::<u64>() + closing.len() as u64;
    // Resolve keys before the first byte goes out, so a key problem is a clean error.
    let mut study_key = KeyCache::default();
    let mut keyed = Vec::with_capacity(rows.len());
    for row in rows {
        let key = blob_key(&state, &mut study_key, &row).await?;
        keyed.push((row, key));
    }
    // Part headers, pieces of ciphertext and separators are grouped into jobs of about
    // GROUP_BYTES (several small instances, or one piece of a large one); jobs run a few ahead
    // of the socket (fetch + decrypt in parallel) and come out in order.
    const GROUP_BYTES: u64 = 2 << 20;
    enum Seg {
        Lit(Bytes),
        Piece,
    }
    #[derive(Default)]
    struct Group {
        segs: Vec<Seg>,
        pieces: Vec<crate::storage::PieceRead>,
        bytes: u64,
    }
    let mut groups = vec![Group::default()];
    for (row, key) in keyed {
        let path: std::sync::Arc<str> = row.blob_path.as_str().into();
        let lit = |g: &mut Vec<Group>, b: Bytes| g.last_mut().map(|g| g.segs.push(Seg::Lit(b)));
        lit(&mut groups, Bytes::from(part_header.clone()));
        for piece in crate::storage::BlobStore::pieces(row.size, 0..row.size) {
            let len = piece.trim.end - piece.trim.start;
            if groups.last().is_some_and(|g| g.bytes > 0 && g.bytes + len > GROUP_BYTES) {
                groups.push(Group::default());
            }
            if let Some(g) = groups.last_mut() {
                g.segs.push(Seg::Piece);
                g.pieces.push(crate::storage::PieceRead { path: path.clone(), key: key.clone(), plain_len: row.size, piece });
                g.bytes += len;
            }
        }
        lit(&mut groups, Bytes::from_static(b"\r\n"));
    }
    if let Some(g) = groups.last_mut() {
        g.segs.push(Seg::Lit(Bytes::from(closing)));
    }
    let blobs = state.blobs.clone();
    let stream = futures_util::stream::iter(groups)
        .map(move |group| {
            let blobs = blobs.clone();
            async move {
                let mut read = blobs.read_pieces_chunks(group.pieces).await.inspect_err(|e| {
                    tracing::error!(error = %e, "blob read failed mid-stream");
                })?;
                read.reverse();
                let mut out = Vec::new();
                for seg in group.segs {
                    match seg {
                        Seg::Lit(b) => out.push(b),
                        Seg::Piece => out.extend(read.pop().unwrap_or_default()),
                    }
                }
                Ok(out)
            }
        })
        .buffered(4)
        .flat_map(|r: std::io::Result<Vec<Bytes>>| {
            futures_util::stream::iter(match r {
                Ok(parts) => parts.into_iter().map(Ok).collect::<Vec<_>>(),
                Err(e) => vec![Err(e)],
            })
        });
    let body = Body::from_stream(stream);
    let mut resp = Response::new(body);
    let ct = format!("multipart/related; type=\"application/dicom\"; boundary={b}");
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_str(&ct).map_err(|e| AppError::Internal(e.into()))?);
    resp.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(total));
    Ok(resp)
}

async fn single_dicom(state: AppState, row: InstanceRow) -> AppResult<Response> {
    let key = blob_key(&state, &mut KeyCache::default(), &row).await?;
    let stream = state.blobs.read(&row.blob_path, key, row.size, 0..row.size);
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/dicom"));
    resp.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(row.size));
    Ok(resp)
}

/// WADO-RS retrieve of a study, series or instance (whichever the path names).
pub async fn retrieve(
    State(state): State<AppState>,
    principal: Principal,
    DicomPath { study, series, instance }: DicomPath,
    headers: HeaderMap,
) -> AppResult<Response> {
    let study = study.unwrap_or_default();
    let rows = load(&state, &principal, &study, series.as_deref(), instance.as_deref()).await?;
    let ranges = accept::from_headers(&headers);
    let single_ok = instance.is_some();
    match negotiate_dicom(&ranges, &rows, single_ok)? {
        DicomRendition::Single { decode } => {
            let row = rows.into_iter().next().ok_or_else(|| AppError::NotFound("no such instance".into()))?;
            if decode && row.transfer_syntax != EXPLICIT_VR_LE {
                let bytes = decoded_instance(&state, &mut KeyCache::default(), &row).await?;
                let ct = format!("application/dicom; transfer-syntax={EXPLICIT_VR_LE}");
                return Ok(([(header::CONTENT_TYPE, ct)], bytes).into_response());
            }
            single_dicom(state, row).await
        }
        DicomRendition::Multipart { decode: true } if rows.iter().any(|r| r.transfer_syntax != EXPLICIT_VR_LE) => {
            multipart_decoded(state, rows).await
        }
        DicomRendition::Multipart { .. } => multipart_dicom(state, rows).await,
    }
}

/// The metadata of a study, series or instance (whichever the path names).
pub async fn metadata(
    State(state): State<AppState>,
    principal: Principal,
    DicomPath { study, series, instance }: DicomPath,
    headers: HeaderMap,
) -> AppResult<Response> {
    let study = study.unwrap_or_default();
    check_access(&principal, &study, series.as_deref(), instance.as_deref())?;
    let ranges = accept::from_headers(&headers);
    if !ranges.iter().any(|r| r.matches(DICOM_JSON) || r.essence == "application/json") {
        return Err(AppError::NotAcceptable("metadata is available as application/dicom+json".into()));
    }
    let docs = db::metadata(&state.db, &principal.study_scope(), &study, series.as_deref(), instance.as_deref()).await?;
    if docs.is_empty() {
        return Err(AppError::NotFound("no such study, series or instance".into()));
    }
    let base = base_url(&state, &headers);
    let mut body = String::with_capacity(docs.iter().map(|d| d.len() + 1).sum::<usize>() + 2);
    body.push('[');
    for (i, d) in docs.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&d.replace(BULK_BASE, &base));
    }
    body.push(']');
    Ok(([(header::CONTENT_TYPE, DICOM_JSON)], body).into_response())
}

/// The media type of a compressed frame of the given transfer syntax (PS3.18 Table 8.7.3-2).
pub fn frame_media_type(ts: &str) -> Option<&'static str> {
    Some(match ts {
        "1.2.840.10008.1.2.4.50" | "1.2.840.10008.1.2.4.51" | "1.2.840.10008.1.2.4.57" | "1.2.840.10008.1.2.4.70" => "image/jpeg",
        "1.2.840.10008.1.2.4.80" | "1.2.840.10008.1.2.4.81" => "image/jls",
        "1.2.840.10008.1.2.4.90" | "1.2.840.10008.1.2.4.91" => "image/jp2",
        "1.2.840.10008.1.2.4.92" | "1.2.840.10008.1.2.4.93" => "image/jpx",
        "1.2.840.10008.1.2.5" => "image/x-dicom-rle",
        "1.2.840.10008.1.2.4.100" | "1.2.840.10008.1.2.4.101" => "video/mpeg",
        "1.2.840.10008.1.2.4.102" | "1.2.840.10008.1.2.4.103" => "video/mp4",
        _ => return None,
    })
}

/// Byte ranges (in the original file) that hold frame `n` (1-based).
#[allow(clippy::single_range_in_vec_init)] // a list of ranges, often of one
pub fn frame_ranges(row: &InstanceRow, n: u64) -> AppResult<Vec<Range<u64>>> {
    let layout = row.pixel_layout.as_ref().ok_or_else(|| AppError::NotFound("the instance has no pixel data".into()))?;
    let frames = row.number_of_frames.max(1) as u64;
    if n == 0 || n > frames {
        return Err(AppError::NotFound(format!("frame {n} does not exist (the instance has {frames})")));
    }
    if let Some((offset, len)) = layout.native {
        let per = len / frames;
        return Ok(vec![offset + (n - 1) * per..offset + n * per]);
    }
    let frags = &layout.fragments;
    if frags.len() as u64 == frames {
        let (o, l) = frags[(n - 1) as usize];
        return Ok(vec![o..o + l]);
    }
    if frames == 1 {
        return Ok(frags.iter().map(|(o, l)| *o..*o + *l).collect());
    }
    if layout.offset_table.len() as u64 == frames {
        // Offsets in the table count from the first fragment's item tag (8 bytes before its value).
        let first_item = frags.first().map(|(o, _)| o - 8).unwrap_or(0);
        let start = u64::from(layout.offset_table[(n - 1) as usize]);
        let end = layout.offset_table.get(n as usize).map(|e| u64::from(*e)).unwrap_or(u64::MAX);
        let ranges: Vec<_> = frags
            .iter()
            .filter(|(o, _)| {
                let rel = o - 8 - first_item;
                rel >= start && rel < end
            })
            .map(|(o, l)| *o..*o + *l)
            .collect();
        if !ranges.is_empty() {
            return Ok(ranges);
        }
    }
    Err(AppError::NotAcceptable("the frames of this instance cannot be located without decoding".into()))
}

fn parse_frame_list(s: &str) -> AppResult<Vec<u64>> {
    let list: Result<Vec<u64>, _> = s.split(',').map(|f| f.trim().parse::<u64>()).collect();
    match list {
        Ok(l) if !l.is_empty() && l.len() <= 10_000 => Ok(l),
        _ => Err(AppError::BadRequest("frame list must be comma-separated frame numbers (1-based)".into())),
    }
}

/// Streams the given byte ranges of one instance's original file.
async fn read_ranges(state: &AppState, row: &InstanceRow, key: &Key, ranges: &[Range<u64>]) -> AppResult<Vec<u8>> {
    let mut out = Vec::new();
    for r in ranges {
        let mut s = std::pin::pin!(state.blobs.read(&row.blob_path, key.clone(), row.size, r.clone()));
        while let Some(chunk) = s.next().await {
            out.extend_from_slice(&chunk.map_err(|e| AppError::Internal(e.into()))?);
        }
    }
    Ok(out)
}

pub async fn retrieve_frames(
    State(state): State<AppState>,
    principal: Principal,
    Path((study, series, instance, frames)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> AppResult<Response> {
    let rows = load(&state, &principal, &study, Some(&series), Some(&instance)).await?;
    let row = &rows[0];
    let list = parse_frame_list(&frames)?;
    let native = row.pixel_layout.as_ref().is_some_and(|l| l.native.is_some());
    let compressed_type = if native { None } else { frame_media_type(&row.transfer_syntax) };
    let ranges = accept::from_headers(&headers);
    // Decide the part media type: octet-stream for native data; the compressed type, or
    // octet-stream with transfer-syntax=* (as OHIF asks), for compressed data.
    let mut part_type: Option<String> = None;
    // Compressed frames asked for as Explicit VR Little Endian: decoded, one frame at a time.
    let mut decode = false;
    for r in &ranges {
        let wanted = if r.essence == "multipart/related" {
            r.param("type").unwrap_or("application/octet-stream").to_ascii_lowercase()
        } else {
            r.essence.clone()
        };
        let ts = r.param("transfer-syntax");
        let any = wanted == "*/*" || r.essence == "*/*";
        if native {
            let ts_ok = ts.is_none_or(|t| t == "*" || t == row.transfer_syntax || t == "1.2.840.10008.1.2.1");
            if (any || wanted == "application/octet-stream") && ts_ok {
                part_type = Some("application/octet-stream".into());
                break;
            }
        } else if let Some(ct) = compressed_type {
            let ts_ok = ts.is_none_or(|t| t == "*" || t == row.transfer_syntax);
            if (any || wanted == ct) && ts_ok {
                part_type = Some(format!("{ct}; transfer-syntax={}", row.transfer_syntax));
                break;
            }
            if wanted == "application/octet-stream" && (ts == Some("*") || ts == Some(row.transfer_syntax.as_str())) {
                part_type = Some(format!("application/octet-stream; transfer-syntax={}", row.transfer_syntax));
                break;
            }
            if wanted == "application/octet-stream" && ts == Some(EXPLICIT_VR_LE) {
                part_type = Some(format!("application/octet-stream; transfer-syntax={EXPLICIT_VR_LE}"));
                decode = true;
                break;
            }
        }
    }
    let Some(part_type) = part_type else {
        return Err(AppError::NotAcceptable(format!(
            "frames of this instance are available as {}",
            compressed_type
                .map(|c| format!(
                    "{c} (or application/octet-stream with transfer-syntax=*), or decoded as application/octet-stream with \
                     transfer-syntax={EXPLICIT_VR_LE}"
                ))
                .unwrap_or_else(|| "application/octet-stream".into())
        )));
    };
    let key = blob_key(&state, &mut KeyCache::default(), row).await?;
    let b = boundary();
    let mut body = Vec::new();
    let decoded = if decode { Some(decoded_frames(&state, row, key.clone(), list.clone()).await?) } else { None };
    for (i, n) in list.into_iter().enumerate() {
        let data = match &decoded {
            Some(frames) => frames[i].clone(),
            None => read_ranges(&state, row, &key, &frame_ranges(row, n)?).await?,
        };
        body.extend_from_slice(format!("--{b}\r\nContent-Type: {part_type}\r\n\r\n").as_bytes());
        body.extend_from_slice(&data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{b}--\r\n").as_bytes());
    let outer_type = part_type.split(';').next().unwrap_or("application/octet-stream");
    let ct = format!("multipart/related; type=\"{outer_type}\"; boundary={b}");
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, ct)], body).into_response())
}

/// Frames (1-based) of a compressed instance decoded to native pixel data (little endian,
/// samples interleaved), one frame at a time, in a render slot.
async fn decoded_frames(state: &AppState, row: &InstanceRow, key: Key, frames: Vec<u64>) -> AppResult<Vec<Vec<u8>>> {
    if row.size > MAX_DECODED {
        return Err(AppError::NotAcceptable("the instance is too large to decode here; ask for its frames in their stored syntax".into()));
    }
    let _slot = state.render_slots.acquire().await.map_err(|e| AppError::Internal(e.into()))?;
    let file = state.blobs.read_all(&row.blob_path, key, row.size).await.map_err(AppError::Internal)?;
    let ts = row.transfer_syntax.clone();
    let count = row.number_of_frames.max(1) as u64;
    tokio::task::spawn_blocking(move || {
        use dicom_pixeldata::PixelDecoder;
        let obj = open_stored(&file)?;
        let mut out = Vec::with_capacity(frames.len());
        let mut total = 0u64;
        for n in frames {
            if n == 0 || n > count {
                return Err(AppError::NotFound(format!("frame {n} does not exist (the instance has {count})")));
            }
            let data = obj
                .decode_pixel_data_frame((n - 1) as u32)
                .map(|d| d.data().to_vec())
                .map_err(|e| AppError::NotAcceptable(format!("frames in transfer syntax {ts} cannot be decoded: {e}")))?;
            total += data.len() as u64;
            if total > MAX_DECODED {
                return Err(AppError::NotAcceptable("the frames asked for are too large to decode at once; ask for fewer".into()));
            }
            out.push(data);
        }
        Ok(out)
    })
    .await
    .map_err(|e| AppError::Internal(e.into()))?
}

/// Bulk data of a top-level element. Pixel data comes by byte range (all frames, each as a
/// part); other elements are read from the stored file.
pub async fn retrieve_bulk(
    State(state): State<AppState>,
    principal: Principal,
    Path((study, series, instance, tag)): Path<(String, String, String, String)>,
) -> AppResult<Response> {
    let rows = load(&state, &principal, &study, Some(&series), Some(&instance)).await?;
    let row = &rows[0];
    let tag = tag.to_ascii_uppercase();
    if tag.len() != 8 || !tag.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(AppError::BadRequest("bulk data tag must be 8 hex digits".into()));
    }
    let key = blob_key(&state, &mut KeyCache::default(), row).await?;
    let b = boundary();
    let mut body = Vec::new();
    if tag == "7FE00010" {
        let frames = row.number_of_frames.max(1) as u64;
        let native = row.pixel_layout.as_ref().and_then(|l| l.native);
        let parts: Vec<Vec<Range<u64>>> = match native {
            Some((o, l)) => vec![vec![o..o + l]],
            None => (1..=frames).map(|n| frame_ranges(row, n)).collect::<AppResult<_>>()?,
        };
        for ranges in parts {
            let data = read_ranges(&state, row, &key, &ranges).await?;
            body.extend_from_slice(format!("--{b}\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes());
            body.extend_from_slice(&data);
            body.extend_from_slice(b"\r\n");
        }
    } else {
        let file = state.blobs.read_all(&row.blob_path, key, row.size).await.map_err(AppError::Internal)?;
        let value = tokio::task::spawn_blocking(move || element_bytes(&file, &tag)).await.map_err(|e| AppError::Internal(e.into()))??;
        body.extend_from_slice(format!("--{b}\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes());
        body.extend_from_slice(&value);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{b}--\r\n").as_bytes());
    let ct = format!("multipart/related; type=\"application/octet-stream\"; boundary={b}");
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, ct)], body).into_response())
}

fn element_bytes(file: &[u8], tag: &str) -> AppResult<Vec<u8>> {
    let group = u16::from_str_radix(&tag[..4], 16).map_err(|_| AppError::BadRequest("bad tag".into()))?;
    let elem = u16::from_str_radix(&tag[4..], 16).map_err(|_| AppError::BadRequest("bad tag".into()))?;
    let obj = open_stored(file)?;
    let el = obj.get(dicom_core::Tag(group, elem)).ok_or_else(|| AppError::NotFound("the instance has no such element".into()))?;
    let bytes = el.value().to_bytes().map_err(|_| AppError::NotFound("the element has no bulk value".into()))?;
    Ok(bytes.into_owned())
}
