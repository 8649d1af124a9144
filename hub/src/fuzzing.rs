//! Entry points for the fuzz targets in `hub/fuzz` (cargo-fuzz): the hostile-input paths of the
//! hub without a server around them — the DICOM parse path (walk and describe, as every upload
//! takes it), the STOW-RS multipart path (Content-Type, boundary, multer, each part parsed) and
//! the ZIP upload path (the same entry reader with its bomb and path guards, each entry parsed).
//! They must never panic, whatever the bytes; errors are fine.

use std::io::Cursor;

use axum::http::{HeaderMap, HeaderValue, header};

use crate::ingest::{describe, parse};

/// The DICOM parse path.
pub fn dicom(data: &[u8]) {
    if let Ok(w) = parse::walk(data, 1 << 20) {
        let _ = describe::describe(&w);
    }
}

/// The STOW-RS body path: the first line of `data` is the Content-Type, the rest the body.
pub fn stow(data: &[u8]) {
    let split = data.iter().position(|b| *b == b'\n').unwrap_or(data.len());
    let (ct, body) = (&data[..split], data.get(split + 1..).unwrap_or_default());
    let Ok(ct) = HeaderValue::from_bytes(ct) else { return };
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, ct);
    let Ok(boundary) = crate::dicomweb::stow::multipart_boundary(&headers) else { return };
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().build() else { return };
    let body = bytes::Bytes::copy_from_slice(body);
    rt.block_on(async move {
        let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(body) });
        let mut multipart = multer::Multipart::new(stream, boundary);
        while let Ok(Some(mut field)) = multipart.next_field().await {
            let mut part = Vec::new();
            while let Ok(Some(chunk)) = field.chunk().await {
                part.extend_from_slice(&chunk);
            }
            dicom(&part);
        }
    });
}

/// The ZIP upload path.
pub fn zip(data: &[u8]) {
    let Ok(mut archive) = zip::ZipArchive::new(Cursor::new(data)) else { return };
    let limits = crate::config::LimitsConfig::default();
    crate::uploads::read_entries_into(&mut archive, "fuzz.zip", &limits, &mut |_, bytes| dicom(bytes));
}

#[cfg(test)]
mod tests {
    fn walk_error(data: &[u8]) -> String {
        match crate::ingest::parse::walk(data, 1 << 20) {
            Err(e) => e.to_string(),
            Ok(_) => String::from("parsed"),
        }
    }

    /// Found by `hub/fuzz/run.sh`: a forged length inside the file meta group made dicom-object
    /// reserve 3 GB for a 3 KB upload. Now the group is checked first and the upload refused.
    #[test]
    fn a_forged_meta_element_length_is_refused_before_the_parser_sees_it() {
        let err = walk_error(include_bytes!("../fuzz/regressions/dicom-meta-length"));
        // This input also has an element with an unknown VR, refused first since 2026-11-26.
        assert!(err.contains("longer than the group") || err.contains("unknown value representation"), "{err}");
        // The length check itself: (0002,0010) UI claiming 256 bytes in a 12-byte group.
        let mut forged = vec![0u8; 128];
        forged.extend_from_slice(b"DICM\x02\x00\x00\x00UL\x04\x00\x0c\x00\x00\x00");
        forged.extend_from_slice(b"\x02\x00\x10\x00UI\x00\x011.2.");
        let err = walk_error(&forged);
        assert!(err.contains("longer than the group"), "{err}");
    }

    /// Found by `hub/fuzz/run.sh` (2026-11-26, with `-malloc_limit_mb=200`): a meta element
    /// with an unknown VR ("UA") passed the group check as a short element while dicom-object
    /// read a 4-byte length and reserved 775 MB for a 529-byte upload. Unknown VRs are refused.
    #[test]
    fn an_unknown_vr_in_the_meta_group_is_refused() {
        let err = walk_error(include_bytes!("../fuzz/regressions/dicom-meta-unknown-vr"));
        assert!(err.contains("unknown value representation"), "{err}");
    }

    /// Found by `hub/fuzz/run.sh` (2026-11-26): (0008,0016) with VR SL and a 30-byte value passed
    /// the walk (which skips values); dicom-object read 7 values, lost its place by 2 bytes and
    /// grew a buffer past 256 MB on a misread length. Binary numbers must come whole.
    #[test]
    fn a_binary_value_of_broken_length_is_refused() {
        let err = walk_error(include_bytes!("../fuzz/regressions/describe-sl-odd-length"));
        assert!(err.contains("not a multiple of 4"), "{err}");
    }

    /// Found by `hub/fuzz/run.sh 600` (2026-11-26, DICOM target): the same with an "other" VR —
    /// an SR whose (0008,1199) inside two sequences became OL with 106 bytes. dicom-object read
    /// 26 whole values, lost its place by 2 bytes and reserved 775 MB for a misread length.
    #[test]
    fn an_other_long_value_of_broken_length_is_refused() {
        let err = walk_error(include_bytes!("../fuzz/regressions/describe-ol-odd-length"));
        assert!(err.contains("not a multiple of 4"), "{err}");
    }

    /// Found by `hub/fuzz/run.sh` (through STOW-RS): an element claiming 4 GB inside a sequence of
    /// defined length passed the walk (which skipped the sequence whole) and made dicom-object
    /// allocate and zero 4 GB while describing the head. Now every element must fit in its item.
    #[test]
    fn a_forged_length_inside_a_sequence_is_refused() {
        let err = walk_error(include_bytes!("../fuzz/regressions/dicom-sequence-length"));
        assert!(err.contains("longer than the item or sequence holding it"), "{err}");
        super::stow(include_bytes!("../fuzz/regressions/stow-meta-length"));
    }
}
