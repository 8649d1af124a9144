//! Chunked AES-256-GCM for blobs (a STREAM construction, as in Hoang–Reyhanitabar–Rogaway–Vizár).
//!
//! Layout: a 16-byte header (`FERRY\x01\0\0` + 7-byte random nonce prefix + 1 reserved byte),
//! then the plaintext in chunks of [`CHUNK`] bytes, each followed by its 16-byte tag. The nonce of
//! chunk `i` is `prefix ‖ be32(i) ‖ last`, where `last` is 1 only for the final chunk, so chunks
//! cannot be reordered, dropped or the blob truncated without detection. Fixed-size chunks let a
//! byte range be read by fetching and decrypting only the chunks that cover it.

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use rand::RngCore;

/// Plaintext bytes per chunk.
pub const CHUNK: usize = 64 * 1024;
pub const TAG_LEN: usize = 16;
pub const HEADER_LEN: usize = 16;
const MAGIC: &[u8; 8] = b"FERRY\x01\0\0";

/// A 256-bit AES key. Debug output never shows it.
#[derive(Clone)]
pub struct Key(pub [u8; 32]);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

impl Key {
    pub fn random() -> Self {
        let mut k = [0u8; 32];
        rand::rng().fill_bytes(&mut k);
        Key(k)
    }

    fn cipher(&self) -> Aes256Gcm {
        // A 32-byte slice always has the right length for AES-256.
        #[allow(clippy::expect_used)]
        Aes256Gcm::new_from_slice(&self.0).expect("32-byte key")
    }

    /// Wraps another key (or any small secret): `nonce(12) ‖ ciphertext ‖ tag`, base64.
    pub fn wrap(&self, secret: &[u8], aad: &[u8]) -> String {
        use base64::Engine;
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let mut buf = secret.to_vec();
        let tag = self.cipher().encrypt_inout_detached(&Nonce::from(nonce), aad, buf.as_mut_slice().into()).unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        out.extend_from_slice(&tag);
        base64::engine::general_purpose::STANDARD.encode(out)
    }

    /// Reverses [`Key::wrap`]; fails on a wrong key, wrong AAD or tampered input.
    pub fn unwrap_key(&self, wrapped: &str, aad: &[u8]) -> anyhow::Result<Key> {
        use base64::Engine;
        let raw = base64::engine::general_purpose::STANDARD.decode(wrapped.trim())?;
        anyhow::ensure!(raw.len() == 12 + 32 + TAG_LEN, "wrapped key has the wrong length");
        let (nonce, rest) = raw.split_at(12);
        let (ct, tag) = rest.split_at(32);
        let mut buf = [0u8; 32];
        buf.copy_from_slice(ct);
        let nonce = Nonce::try_from(nonce).map_err(|_| anyhow::anyhow!("bad nonce"))?;
        let tag = Tag::try_from(tag).map_err(|_| anyhow::anyhow!("bad tag"))?;
        self.cipher()
            .decrypt_inout_detached(&nonce, aad, buf.as_mut_slice().into(), &tag)
            .map_err(|_| anyhow::anyhow!("key unwrap failed (wrong key or tampered data)"))?;
        Ok(Key(buf))
    }
}

fn chunk_nonce(prefix: &[u8; 7], index: u64, last: bool) -> anyhow::Result<Nonce<aes_gcm::aead::consts::U12>> {
    let index = u32::try_from(index).map_err(|_| anyhow::anyhow!("blob too large"))?;
    let mut n = [0u8; 12];
    n[..7].copy_from_slice(prefix);
    n[7..11].copy_from_slice(&index.to_be_bytes());
    n[11] = u8::from(last);
    Ok(Nonce::from(n))
}

/// Streaming encryptor: feed plaintext with [`update`](Self::update), end with
/// [`finish`](Self::finish); ciphertext is appended to the caller's buffer.
pub struct Encryptor {
    cipher: Aes256Gcm,
    prefix: [u8; 7],
    index: u64,
    pending: Vec<u8>,
}

impl Encryptor {
    /// Returns the encryptor and the blob header to write first.
    pub fn new(key: &Key) -> (Self, [u8; HEADER_LEN]) {
        let mut prefix = [0u8; 7];
        rand::rng().fill_bytes(&mut prefix);
        let mut header = [0u8; HEADER_LEN];
        header[..8].copy_from_slice(MAGIC);
        header[8..15].copy_from_slice(&prefix);
        let enc = Self { cipher: key.cipher(), prefix, index: 0, pending: Vec::with_capacity(CHUNK) };
        (enc, header)
    }

    /// Appends `plain` encrypted as the next chunk, and its tag.
    fn seal_chunk(&mut self, plain: &[u8], out: &mut Vec<u8>, last: bool) -> anyhow::Result<()> {
        let start = out.len();
        out.extend_from_slice(plain);
        self.seal_tail(out, start, last)
    }

    /// Encrypts `out[start..]` in place as the next chunk and appends its tag.
    fn seal_tail(&mut self, out: &mut Vec<u8>, start: usize, last: bool) -> anyhow::Result<()> {
        let nonce = chunk_nonce(&self.prefix, self.index, last)?;
        let tag = self
            .cipher
            .encrypt_inout_detached(&nonce, b"", (&mut out[start..]).into())
            .map_err(|_| anyhow::anyhow!("encryption failed"))?;
        out.extend_from_slice(&tag);
        self.index += 1;
        Ok(())
    }

    fn seal(&mut self, out: &mut Vec<u8>, last: bool) -> anyhow::Result<()> {
        let pending = std::mem::take(&mut self.pending);
        let r = self.seal_chunk(&pending, out, last);
        self.pending = pending;
        self.pending.clear();
        r
    }

    /// Encrypts every complete chunk; keeps the rest (a chunk is only sealed once it is known
    /// not to be the last one).
    pub fn update(&mut self, mut data: &[u8], out: &mut Vec<u8>) -> anyhow::Result<()> {
        if self.pending.len() == CHUNK && !data.is_empty() {
            self.seal(out, false)?;
        }
        // Whole chunks with more data after them go straight from `data` (no copy into
        // `pending`).
        while self.pending.is_empty() && data.len() > CHUNK {
            let (chunk, rest) = data.split_at(CHUNK);
            self.seal_chunk(chunk, out, false)?;
            data = rest;
        }
        while !data.is_empty() {
            if self.pending.len() == CHUNK {
                self.seal(out, false)?;
            }
            let take = (CHUNK - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        Ok(())
    }

    /// Encrypts a whole blob given as consecutive buffers, when nothing was fed before: each
    /// chunk is copied once, straight into its place in `out` (after what `out` holds, e.g. the
    /// header), and encrypted there.
    pub fn seal_parts(mut self, parts: &[bytes::Bytes], mut out: Vec<u8>) -> anyhow::Result<Vec<u8>> {
        anyhow::ensure!(self.index == 0 && self.pending.is_empty(), "seal_parts needs a fresh encryptor");
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let chunks = chunk_count(total as u64);
        out.reserve(total + chunks as usize * TAG_LEN);
        let mut rest = parts.iter().map(|p| &p[..]).filter(|p| !p.is_empty());
        let mut cur: &[u8] = rest.next().unwrap_or(&[]);
        for i in 0..chunks {
            let start = out.len();
            let mut want = CHUNK.min(total - i as usize * CHUNK);
            while want > 0 {
                if cur.is_empty() {
                    cur = rest.next().ok_or_else(|| anyhow::anyhow!("parts shorter than their length"))?;
                }
                let take = want.min(cur.len());
                out.extend_from_slice(&cur[..take]);
                cur = &cur[take..];
                want -= take;
            }
            self.seal_tail(&mut out, start, i + 1 == chunks)?;
        }
        Ok(out)
    }

    pub fn finish(mut self, out: &mut Vec<u8>) -> anyhow::Result<()> {
        self.seal(out, true)
    }
}

/// Number of chunks a blob of `plain_len` plaintext bytes has (an empty blob has one).
pub fn chunk_count(plain_len: u64) -> u64 {
    plain_len.div_ceil(CHUNK as u64).max(1)
}

/// Size of the encrypted blob for `plain_len` plaintext bytes.
pub fn encrypted_len(plain_len: u64) -> u64 {
    HEADER_LEN as u64 + plain_len + chunk_count(plain_len) * TAG_LEN as u64
}

/// Byte range in the encrypted blob that holds chunks `first..=last`.
pub fn chunk_span(plain_len: u64, first: u64, last: u64) -> std::ops::Range<u64> {
    let stride = (CHUNK + TAG_LEN) as u64;
    let start = HEADER_LEN as u64 + first * stride;
    let end = (HEADER_LEN as u64 + (last + 1) * stride).min(encrypted_len(plain_len));
    start..end
}

/// Decrypts chunks of one blob.
pub struct Decryptor {
    cipher: Aes256Gcm,
    prefix: [u8; 7],
    chunks: u64,
}

impl Decryptor {
    pub fn new(key: &Key, header: &[u8], plain_len: u64) -> anyhow::Result<Self> {
        anyhow::ensure!(header.len() >= HEADER_LEN && &header[..8] == MAGIC, "not a Ferry encrypted blob");
        let mut prefix = [0u8; 7];
        prefix.copy_from_slice(&header[8..15]);
        Ok(Self { cipher: key.cipher(), prefix, chunks: chunk_count(plain_len) })
    }

    /// Decrypts consecutive chunks starting at chunk `first` where they lie (each chunk is
    /// followed by its tag) and returns where each chunk's plaintext is in `buf`.
    fn open_each(&self, first: u64, buf: &mut [u8]) -> anyhow::Result<Vec<std::ops::Range<usize>>> {
        let mut bodies = Vec::with_capacity(buf.len() / (CHUNK + TAG_LEN) + 1);
        let mut at = 0usize;
        let mut index = first;
        while at < buf.len() {
            let take = (CHUNK + TAG_LEN).min(buf.len() - at);
            anyhow::ensure!(take >= TAG_LEN, "truncated chunk");
            let body_len = take - TAG_LEN;
            let tag = Tag::try_from(&buf[at + body_len..at + take]).map_err(|_| anyhow::anyhow!("bad tag"))?;
            let nonce = chunk_nonce(&self.prefix, index, index + 1 == self.chunks)?;
            self.cipher
                .decrypt_inout_detached(&nonce, b"", (&mut buf[at..at + body_len]).into(), &tag)
                .map_err(|_| anyhow::anyhow!("blob chunk {index} failed authentication"))?;
            bodies.push(at..at + body_len);
            at += take;
            index += 1;
        }
        Ok(bodies)
    }

    /// Decrypts consecutive chunks starting at chunk `first` in place: the plaintext is moved
    /// together over the tags, so no second buffer is allocated.
    pub fn open_in_place(&self, first: u64, mut buf: bytes::BytesMut) -> anyhow::Result<bytes::Bytes> {
        let mut write = 0usize;
        for body in self.open_each(first, &mut buf)? {
            let len = body.len();
            buf.copy_within(body, write);
            write += len;
        }
        buf.truncate(write);
        Ok(buf.freeze())
    }

    /// Decrypts consecutive chunks starting at chunk `first` where they lie and returns each
    /// chunk's plaintext as a slice of the same buffer (the tags stay in between, unused).
    pub fn open_chunks(&self, first: u64, mut buf: bytes::BytesMut) -> anyhow::Result<Vec<bytes::Bytes>> {
        let bodies = self.open_each(first, &mut buf)?;
        let all = buf.freeze();
        Ok(bodies.into_iter().map(|r| all.slice(r)).collect())
    }

    /// Decrypts consecutive chunks starting at chunk `first`, given their ciphertext
    /// (as returned for [`chunk_span`]). Returns the plaintext.
    pub fn open(&self, first: u64, ciphertext: &[u8]) -> anyhow::Result<Vec<u8>> {
        Ok(self.open_in_place(first, bytes::BytesMut::from(ciphertext))?.to_vec())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn seal_all(key: &Key, data: &[u8], piece: usize) -> Vec<u8> {
        let (mut enc, header) = Encryptor::new(key);
        let mut out = header.to_vec();
        for p in data.chunks(piece.max(1)) {
            enc.update(p, &mut out).unwrap();
        }
        enc.finish(&mut out).unwrap();
        out
    }

    #[test]
    fn round_trips_any_size_and_ranges() {
        let key = Key::random();
        for (len, piece) in [0usize, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 17]
            .into_iter()
            // Pieces smaller than, equal to and larger than a chunk, and everything at once
            // (which seals whole chunks straight from the input).
            .flat_map(|len| [1usize, 10_000, CHUNK, CHUNK + 1, 2 * CHUNK + 3, usize::MAX].map(|p| (len, p)))
            .filter(|&(len, p)| p != 1 || len <= CHUNK + 1)
        {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let blob = seal_all(&key, &data, piece);
            assert_eq!(blob.len() as u64, encrypted_len(len as u64));
            let dec = Decryptor::new(&key, &blob, len as u64).unwrap();
            let n = chunk_count(len as u64);
            let span = chunk_span(len as u64, 0, n - 1);
            let plain = dec.open(0, &blob[span.start as usize..span.end as usize]).unwrap();
            assert_eq!(plain, data);
            let chunks = dec.open_chunks(0, bytes::BytesMut::from(&blob[span.start as usize..span.end as usize])).unwrap();
            assert_eq!(chunks.len() as u64, n);
            assert_eq!(chunks.concat(), data);
            let parts = dec.open_in_place(0, bytes::BytesMut::from(&blob[span.start as usize..span.end as usize])).unwrap();
            assert_eq!(parts.as_ref(), data.as_slice());
            if n > 1 {
                let span = chunk_span(len as u64, 1, 1);
                let part = dec.open(1, &blob[span.start as usize..span.end as usize]).unwrap();
                assert_eq!(part, &data[CHUNK..(2 * CHUNK).min(len)]);
            }
        }
    }

    #[test]
    fn seals_whole_blobs_from_parts() {
        let key = Key::random();
        for len in [0usize, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 17] {
            let data: Vec<u8> = (0..len).map(|i| (i * 13 % 251) as u8).collect();
            for split in [1usize, 7_000, CHUNK, CHUNK + 5, usize::MAX] {
                let parts: Vec<bytes::Bytes> = data.chunks(split.min(len.max(1))).map(bytes::Bytes::copy_from_slice).collect();
                let (enc, header) = Encryptor::new(&key);
                let blob = enc.seal_parts(&parts, header.to_vec()).unwrap();
                assert_eq!(blob.len() as u64, encrypted_len(len as u64));
                let dec = Decryptor::new(&key, &blob, len as u64).unwrap();
                let n = chunk_count(len as u64);
                let span = chunk_span(len as u64, 0, n - 1);
                assert_eq!(dec.open(0, &blob[span.start as usize..span.end as usize]).unwrap(), data);
            }
        }
    }

    #[test]
    fn detects_tampering_truncation_and_wrong_key() {
        let key = Key::random();
        let data = vec![42u8; 2 * CHUNK + 5];
        let blob = seal_all(&key, &data, CHUNK);
        let len = data.len() as u64;
        let dec = Decryptor::new(&key, &blob, len).unwrap();
        let mut bad = blob.clone();
        bad[HEADER_LEN + 3] ^= 1;
        assert!(dec.open(0, &bad[HEADER_LEN..]).is_err());
        // Dropping the last chunk: the second chunk is then treated as last and fails.
        let dec_short = Decryptor::new(&key, &blob, 2 * CHUNK as u64).unwrap();
        let span = chunk_span(len, 0, 1);
        assert!(dec_short.open(0, &blob[span.start as usize..span.end as usize]).is_err());
        let other = Decryptor::new(&Key::random(), &blob, len).unwrap();
        assert!(other.open(0, &blob[HEADER_LEN..]).is_err());
    }

    #[test]
    fn wraps_keys() {
        let kek = Key::random();
        let dek = Key::random();
        let w = kek.wrap(&dek.0, b"aad");
        assert_eq!(kek.unwrap_key(&w, b"aad").unwrap().0, dek.0);
        assert!(kek.unwrap_key(&w, b"other").is_err());
        assert!(Key::random().unwrap_key(&w, b"aad").is_err());
    }
}
