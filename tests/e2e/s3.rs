//! The scale-out blob store: the hub on a real S3-compatible server (SeaweedFS, started here on
//! loopback), byte-identical round trip, nothing readable in the bucket.

use futures_util::TryStreamExt;
use object_store::ObjectStoreExt;

use crate::fixtures::seaweedfs::*;
use crate::fixtures::*;

#[tokio::test]
async fn hub_on_s3_storage_round_trips_and_keeps_the_bucket_unreadable() {
    let weed = SeaweedFs::start("ferry").await;
    let port = weed.s3;
    let app = spawn_app_with(move |c| use_bucket(c, port, "ferry")).await;
    let mut big = Synth::new(&uid(), &uid(), &uid());
    big.rows = 1024;
    big.cols = 1024;
    big.frames = 5; // 10 MiB: goes through a multipart upload
    big.patient_name = "Wolkenkuckuck^Ida".into();
    let small = pydicom_file("CT_small.dcm");
    let big_bytes = big.bytes();
    let (status, body) = app.stow(&[&big_bytes, &small]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(app.retrieve(&format!("/dicomweb/studies/{}", big.study)).await[0], big_bytes);
    let frame = 1024 * 1024 * 2;
    let r = app
        .get(
            &format!("/dicomweb/studies/{}/series/{}/instances/{}/frames/3", big.study, big.series, big.sop),
            "multipart/related; type=application/octet-stream",
        )
        .await;
    let ct = r.headers()["content-type"].to_str().expect("ct").to_string();
    let start = big_bytes.len() - 5 * frame;
    assert!(split_multipart(&ct, &r.bytes().await.expect("body"))[0] == big_bytes[start + 2 * frame..start + 3 * frame]);
    // Every object in the bucket is ciphertext.
    let store = app.state.blobs.raw().clone();
    let objects: Vec<_> = store.list(None).try_collect().await.expect("list");
    let objects: Vec<_> = objects.into_iter().filter(|o| o.location.as_ref() != "ready-probe").collect();
    assert_eq!(objects.len(), 2);
    for o in objects {
        let data = store.get(&o.location).await.expect("get").bytes().await.expect("bytes");
        for needle in [&b"DICM"[..], b"Wolkenkuckuck", b"1.2.840.10008"] {
            assert!(!data.windows(needle.len()).any(|w| w == needle), "{} holds plaintext", o.location);
        }
    }
}
