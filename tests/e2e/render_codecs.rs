//! Real-world compressed images (issue 22): pydicom's test files in JPEG 2000 (lossless and lossy),
//! JPEG-LS (lossless and near-lossless), RLE and JPEG are stored by STOW-RS and rendered by
//! `/rendered`; each rendered image matches pydicom's own decoding (pylibjpeg: OpenJPEG, libjpeg —
//! other implementations than the hub's openjp2 and CharLS) after the same window.

use std::process::Command;

use serde_json::Value;

use crate::fixtures::*;

/// The files, and why each is here.
const FILES: &[&str] = &[
    "MR_small_jp2klossless.dcm",     // JPEG 2000 lossless, 16-bit signed MR
    "JPEG2000.dcm",                  // JPEG 2000 (lossy), 16-bit CT
    "693_J2KI.dcm",                  // JPEG 2000 lossy
    "GDCMJ2K_TextGBR.dcm",           // JPEG 2000, colour
    "MR_small_jpeg_ls_lossless.dcm", // JPEG-LS lossless, 16-bit signed MR
    "JPEGLSNearLossless_08.dcm",     // JPEG-LS near-lossless, 8-bit
    "JPEGLSNearLossless_16.dcm",     // JPEG-LS near-lossless, 16-bit
    "SC_rgb_jls_lossy_line.dcm",     // JPEG-LS near-lossless, colour, line interleaved
    "MR_small_RLE.dcm",              // RLE, 16-bit
    "SC_rgb_rle.dcm",                // RLE, colour
    "SC_rgb_jpeg_dcmtk.dcm",         // JPEG baseline, colour
    "CT_small.dcm",                  // native, for reference
    "rtdose.dcm",                    // 32 bits allocated (RT Dose), native little endian
    "rtdose_expb.dcm",               // 32 bits allocated, explicit VR big endian
];

/// The largest mean absolute difference (of 255) and the smallest PSNR accepted: two decoders of
/// the same codestream may round a few pixels differently, nothing more.
const MAX_MAD: f64 = 1.0;
const MIN_PSNR: f64 = 40.0;

#[tokio::test]
async fn jpeg_2000_and_jpeg_ls_images_render_as_pydicom_decodes_them() {
    let app = spawn_app().await;
    let dir = pydicom_files();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e/render_check.py");
    let files: Vec<String> = FILES.iter().map(|f| dir.join(f).to_string_lossy().into_owned()).collect();
    let base = app.base.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script)
            .arg(base)
            .arg(TOKEN)
            .args(files)
            .output()
            .expect("python3 (tests/run.sh installs pydicom and pylibjpeg)")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let results: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(results.len(), FILES.len(), "{stdout}");
    let mut bad = Vec::new();
    for r in &results {
        let ok = r["stow"] == 200
            && r["render"] == 200
            && r["mad"].as_f64().is_some_and(|m| m <= MAX_MAD)
            && r["psnr"].as_f64().is_some_and(|p| p >= MIN_PSNR);
        eprintln!("{r}");
        if !ok {
            bad.push(r.to_string());
        }
    }
    assert!(bad.is_empty(), "rendered differently from pydicom's decoding (or not at all):\n{}", bad.join("\n"));
}
