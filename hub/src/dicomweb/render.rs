//! WADO-RS rendered and thumbnail resources: a frame decoded by dicom-pixeldata, windowed (from
//! the object, or `window=center,width[,function]`), scaled to `viewport=w,h` and encoded as
//! JPEG (default) or PNG. Transfer syntaxes dicom-pixeldata cannot decode answer 406.

use std::io::Cursor;

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use dicom_pixeldata::{ConvertOptions, PixelDecoder, VoiLutOption, WindowLevel};
use image::{DynamicImage, ImageFormat};

use super::DicomPath;
use super::qido::Params;
use super::wado::{blob_key, check_access, open_stored};
use crate::access::Principal;
use crate::error::{AppError, AppResult};
use crate::http::accept;
use crate::index::instances::{self as db, InstanceRow};
use crate::state::AppState;

const THUMBNAIL_SIZE: u32 = 128;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Format {
    Jpeg,
    Png,
}

struct RenderParams {
    window: Option<(f64, f64)>,
    viewport: Option<(u32, u32)>,
    quality: u8,
}

fn parse_render_params(p: &[(String, String)]) -> AppResult<RenderParams> {
    let mut r = RenderParams { window: None, viewport: None, quality: 90 };
    for (k, v) in p {
        match k.as_str() {
            "window" => {
                let parts: Vec<&str> = v.split(',').collect();
                let center = parts.first().and_then(|c| c.trim().parse::<f64>().ok());
                let width = parts.get(1).and_then(|w| w.trim().parse::<f64>().ok());
                match (center, width) {
                    (Some(c), Some(w)) if w > 0.0 => r.window = Some((c, w)),
                    _ => return Err(AppError::BadRequest("window must be center,width[,function] with width > 0".into())),
                }
            }
            "viewport" => {
                let parts: Vec<u32> = v.split(',').filter_map(|x| x.trim().parse().ok()).collect();
                match parts.as_slice() {
                    [w, h, ..] if *w > 0 && *h > 0 && *w <= 8192 && *h <= 8192 => r.viewport = Some((*w, *h)),
                    _ => return Err(AppError::BadRequest("viewport must be width,height (1–8192)".into())),
                }
            }
            "quality" => {
                r.quality = v
                    .parse::<u8>()
                    .ok()
                    .filter(|q| (1..=100).contains(q))
                    .ok_or_else(|| AppError::BadRequest("quality must be 1–100".into()))?;
            }
            _ => {}
        }
    }
    Ok(r)
}

fn negotiate(headers: &HeaderMap) -> AppResult<Format> {
    for r in accept::from_headers(headers) {
        if r.matches("image/jpeg") && r.essence != "image/png" {
            return Ok(Format::Jpeg);
        }
        if r.matches("image/png") {
            return Ok(Format::Png);
        }
    }
    Err(AppError::NotAcceptable("rendered images are available as image/jpeg or image/png".into()))
}

/// Decodes, windows, scales and encodes one frame (0-based). CPU-bound: run it blocking.
fn render_frame(file: &[u8], frame: u32, p: &RenderParams, fmt: Format) -> AppResult<Vec<u8>> {
    let obj = open_stored(file)?;
    let ts = obj.meta().transfer_syntax().to_string();
    let decoded = obj
        .decode_pixel_data_frame(frame)
        .map_err(|e| AppError::NotAcceptable(format!("cannot render pixel data in transfer syntax {ts}: {e}")))?;
    let mut opts = ConvertOptions::new().force_8bit();
    if let Some((center, width)) = p.window {
        opts = opts.with_voi_lut(VoiLutOption::Custom(WindowLevel { center, width }));
    } else if decoded.window().ok().flatten().is_some_and(|w| !w.is_empty()) {
        opts = opts.with_voi_lut(VoiLutOption::First);
    } else {
        // No window in the file: the frame's own range (a normal image, not a warning; the
        // bit depth's full range would leave a 12-bit image nearly black).
        opts = opts.with_voi_lut(VoiLutOption::Normalize);
    }
    let mut img = if decoded.bits_allocated() == 32 && decoded.samples_per_pixel() == 1 {
        wide_gray(&decoded, ts == EXPLICIT_BE, p.window)?
    } else {
        decoded.to_dynamic_image_with_options(0, &opts).map_err(|e| AppError::NotAcceptable(format!("cannot render this image: {e}")))?
    };
    if let Some((w, h)) = p.viewport
        && (img.width() > w || img.height() > h)
    {
        img = img.thumbnail(w, h);
    }
    let mut out = Cursor::new(Vec::new());
    match fmt {
        Format::Jpeg => {
            let rgb = match img {
                DynamicImage::ImageLuma8(_) => img,
                other => DynamicImage::ImageRgb8(other.to_rgb8()),
            };
            let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, p.quality);
            rgb.write_with_encoder(enc).map_err(|e| AppError::Internal(e.into()))?;
        }
        Format::Png => img.write_to(&mut out, ImageFormat::Png).map_err(|e| AppError::Internal(e.into()))?,
    }
    Ok(out.into_inner())
}

const EXPLICIT_BE: &str = "1.2.840.10008.1.2.2";

/// A 32-bit grayscale frame (RT Dose, some parametric maps), which dicom-pixeldata's conversion
/// does not take: the Modality LUT (rescale), then the window asked for, else the file's first,
/// else the frame's full range, with PS3.14's linear function, to 8 bits.
fn wide_gray(decoded: &dicom_pixeldata::DecodedPixelData, big_endian: bool, window: Option<(f64, f64)>) -> AppResult<DynamicImage> {
    let (cols, rows) = (decoded.columns(), decoded.rows());
    let n = cols as usize * rows as usize;
    let data = decoded.data();
    if data.len() < n * 4 {
        return Err(AppError::NotAcceptable("the pixel data is shorter than rows × columns × 4 bytes".into()));
    }
    let signed = decoded.pixel_representation() == dicom_pixeldata::PixelRepresentation::Signed;
    let rescale = decoded.rescale().ok().and_then(|r| r.first().copied());
    let (slope, intercept) = rescale.map_or((1.0, 0.0), |r| (r.slope, r.intercept));
    let values: Vec<f64> = data[..n * 4]
        .chunks_exact(4)
        .map(|b| {
            // Big-endian pixel data arrives as 16-bit words already in host order (the parser
            // reads OW as words), so only the two words of each value are in big-endian order.
            let raw = if big_endian { [b[2], b[3], b[0], b[1]] } else { [b[0], b[1], b[2], b[3]] };
            let v = if signed { f64::from(i32::from_le_bytes(raw)) } else { f64::from(u32::from_le_bytes(raw)) };
            v * slope + intercept
        })
        .collect();
    let (center, width) = match window.or_else(|| decoded.window().ok().flatten().and_then(|w| w.first().map(|w| (w.center, w.width)))) {
        Some(w) => w,
        None => {
            let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let width = (hi - lo + 1.0).max(2.0);
            (lo + width / 2.0, width)
        }
    };
    let invert = matches!(decoded.photometric_interpretation(), dicom_pixeldata::PhotometricInterpretation::Monochrome1);
    let pixels: Vec<u8> = values
        .iter()
        .map(|&x| {
            // PS3.14 C.11.2.1.2.1 (linear).
            let y = if x <= center - 0.5 - (width - 1.0) / 2.0 {
                0.0
            } else if x > center - 0.5 + (width - 1.0) / 2.0 {
                255.0
            } else {
                (((x - (center - 0.5)) / (width - 1.0) + 0.5) * 255.0).round().clamp(0.0, 255.0)
            };
            let y = y as u8;
            if invert { 255 - y } else { y }
        })
        .collect();
    image::GrayImage::from_raw(cols, rows, pixels)
        .map(DynamicImage::ImageLuma8)
        .ok_or_else(|| AppError::Internal(anyhow::anyhow!("image buffer size mismatch")))
}

async fn render(state: &AppState, row: &InstanceRow, frame: u64, params: RenderParams, fmt: Format) -> AppResult<Response> {
    if row.pixel_layout.is_none() {
        return Err(AppError::NotAcceptable("the instance has no pixel data to render".into()));
    }
    let frames = row.number_of_frames.max(1) as u64;
    if frame == 0 || frame > frames {
        return Err(AppError::NotFound(format!("frame {frame} does not exist (the instance has {frames})")));
    }
    let key = blob_key(state, &mut crate::storage::keys::KeyCache::default(), row).await?;
    let _slot = state.render_slots.acquire().await.map_err(|e| AppError::Internal(e.into()))?;
    let file = state.blobs.read_all(&row.blob_path, key, row.size).await.map_err(AppError::Internal)?;
    let image = tokio::task::spawn_blocking(move || render_frame(&file, (frame - 1) as u32, &params, fmt))
        .await
        .map_err(|e| AppError::Internal(e.into()))??;
    let ct = match fmt {
        Format::Jpeg => "image/jpeg",
        Format::Png => "image/png",
    };
    Ok(([(header::CONTENT_TYPE, ct), (header::CACHE_CONTROL, "private, max-age=3600")], image).into_response())
}

async fn one_instance(state: &AppState, principal: &Principal, study: &str, series: &str, instance: &str) -> AppResult<InstanceRow> {
    check_access(principal, study, Some(series), Some(instance))?;
    db::instances(&state.db, &principal.study_scope(), study, Some(series), Some(instance))
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| AppError::NotFound("no such instance".into()))
}

/// The representative image of a study or series: the middle instance with pixel data of the
/// first series that has one.
async fn representative(state: &AppState, principal: &Principal, study: &str, series: Option<&str>) -> AppResult<InstanceRow> {
    check_access(principal, study, series, None)?;
    let rows = db::instances(&state.db, &principal.study_scope(), study, series, None).await?;
    let first_series = rows.iter().find(|r| r.pixel_layout.is_some()).map(|r| r.series_uid.clone());
    let with_pixels: Vec<&InstanceRow> =
        rows.iter().filter(|r| r.pixel_layout.is_some() && Some(&r.series_uid) == first_series.as_ref()).collect();
    if rows.is_empty() {
        return Err(AppError::NotFound("no such study or series".into()));
    }
    with_pixels
        .get(with_pixels.len() / 2)
        .map(|r| (*r).clone())
        .ok_or_else(|| AppError::NotAcceptable("nothing in it has pixel data to render".into()))
}

fn thumbnail_params(p: &[(String, String)]) -> AppResult<RenderParams> {
    let mut r = parse_render_params(p)?;
    r.viewport = r.viewport.or(Some((THUMBNAIL_SIZE, THUMBNAIL_SIZE)));
    r.quality = r.quality.min(80);
    Ok(r)
}

/// The frame a `…/frames/{frames}/rendered` path names (one number); none on other routes.
pub struct FramePath(Option<u64>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for FramePath {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Ok(params) = axum::extract::RawPathParams::from_request_parts(parts, state).await else { return Ok(FramePath(None)) };
        match params.iter().find(|(name, _)| *name == "frames") {
            None => Ok(FramePath(None)),
            Some((_, frames)) => frames
                .trim()
                .parse::<u64>()
                .map(|f| FramePath(Some(f)))
                .map_err(|_| AppError::BadRequest("rendered frames take a single frame number".into())),
        }
    }
}

/// `…/rendered` of a series, an instance or a frame (PS3.18 §9.5).
pub async fn rendered(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    path: DicomPath,
    FramePath(frame): FramePath,
    Params(p): Params,
) -> AppResult<Response> {
    respond(&state, &principal, &headers, path, frame, parse_render_params(&p)?).await
}

/// `…/thumbnail` of a study, a series, an instance or a frame.
pub async fn thumbnail(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    path: DicomPath,
    FramePath(frame): FramePath,
    Params(p): Params,
) -> AppResult<Response> {
    respond(&state, &principal, &headers, path, frame, thumbnail_params(&p)?).await
}

/// An instance's frame (the first unless the path names one), or the representative image of a
/// study or series.
async fn respond(
    state: &AppState,
    principal: &Principal,
    headers: &HeaderMap,
    path: DicomPath,
    frame: Option<u64>,
    params: RenderParams,
) -> AppResult<Response> {
    let fmt = negotiate(headers)?;
    let study = path.study.as_deref().ok_or_else(|| AppError::NotFound("no study named".into()))?;
    let row = match (path.series.as_deref(), path.instance.as_deref()) {
        (Some(series), Some(instance)) => one_instance(state, principal, study, series, instance).await?,
        (series, _) => representative(state, principal, study, series).await?,
    };
    render(state, &row, frame.unwrap_or(1), params, fmt).await
}
