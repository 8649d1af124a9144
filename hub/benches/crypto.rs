//! Throughput of the blob encryption (chunked AES-256-GCM) on this machine:
//! `cargo bench -p ferry-hub --bench crypto`. Plain timing, no harness: prints MB/s for
//! encrypting and decrypting 256 MiB.

#![allow(clippy::expect_used)]

use std::time::Instant;

use ferry_hub::storage::crypto::{CHUNK, Decryptor, Encryptor, Key, chunk_count, chunk_span};

fn main() {
    let size = 256usize << 20;
    let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let key = Key::random();
    let t = Instant::now();
    let (mut enc, header) = Encryptor::new(&key);
    let mut blob = header.to_vec();
    blob.reserve(size + size / CHUNK * 16 + 64);
    for piece in data.chunks(1 << 20) {
        enc.update(piece, &mut blob).expect("encrypt");
    }
    enc.finish(&mut blob).expect("finish");
    let enc_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let dec = Decryptor::new(&key, &blob, size as u64).expect("header");
    let n = chunk_count(size as u64);
    let mut total = 0;
    let step = 32;
    let mut c = 0;
    while c < n {
        let last = (c + step - 1).min(n - 1);
        let span = chunk_span(size as u64, c, last);
        total += dec.open(c, &blob[span.start as usize..span.end as usize]).expect("decrypt").len();
        c = last + 1;
    }
    let dec_s = t.elapsed().as_secs_f64();
    assert_eq!(total, size);
    let mb = size as f64 / 1e6;
    println!("encrypt: {:.0} MB/s, decrypt: {:.0} MB/s (one core)", mb / enc_s, mb / dec_s);
}
