//! Blob storage: encrypted instance files in an `object_store` (local files by default, S3-compatible
//! storage for scale-out). Nothing reaches the store unencrypted: writers take plaintext and a
//! blob key, readers give back plaintext for any byte range.

pub mod crypto;
pub mod keys;
pub mod pending;
pub mod sweep;
pub mod transit;

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use futures_util::Stream;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};

use crate::config::{Config, StorageBackend};
use crypto::{CHUNK, Decryptor, Encryptor, HEADER_LEN, Key};

/// Up to this much ciphertext is buffered and written with a single PUT; larger blobs switch to a
/// multipart upload (S3 wants parts of at least 5 MiB).
const SINGLE_PUT_MAX: usize = 8 << 20;
/// Plaintext up to this size is encrypted on the async task that finishes the blob (about a
/// millisecond of work); larger blobs are encrypted on a blocking thread.
const SMALL_SEAL_MAX: usize = 1 << 20;
/// Chunks fetched and decrypted as one piece when reading (2 MiB).
const CHUNKS_PER_PIECE: u64 = 32;

/// A run of whole chunks of one blob, and the plaintext bytes to keep of it.
#[derive(Debug, Clone)]
pub struct Piece {
    pub first: u64,
    pub last: u64,
    pub trim: Range<u64>,
}

/// One piece of one blob to read and decrypt.
#[derive(Clone)]
pub struct PieceRead {
    pub path: Arc<str>,
    pub key: Key,
    pub plain_len: u64,
    pub piece: Piece,
}

#[derive(Clone, Debug)]
pub struct BlobStore {
    store: Arc<dyn ObjectStore>,
    /// Set for the local backend, to clean up staging files of uploads a crash interrupted.
    local_root: Option<PathBuf>,
}

impl BlobStore {
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        match config.storage.backend {
            StorageBackend::Local => {
                let dir = config.blob_dir();
                crate::files::create_dir(&dir).with_context(|| format!("creating blob folder {}", dir.display()))?;
                let dir = dir.canonicalize()?;
                // fsync of each file and its directory before a write returns: a blob counts as
                // durable only then.
                let store = object_store::local::LocalFileSystem::new_with_prefix(&dir)?.with_automatic_cleanup(true).with_fsync(true);
                Ok(Self { store: Arc::new(store), local_root: Some(dir) })
            }
            StorageBackend::S3 => {
                use secrecy::ExposeSecret;
                let s3 = &config.storage.s3;
                let mut b = object_store::aws::AmazonS3Builder::new()
                    .with_bucket_name(&s3.bucket)
                    .with_region(s3.region.clone().unwrap_or_else(|| "us-east-1".into()))
                    .with_allow_http(s3.allow_http);
                if let Some(ep) = &s3.endpoint {
                    b = b.with_endpoint(ep);
                }
                if let Some(id) = &s3.access_key_id {
                    b = b.with_access_key_id(id);
                }
                if let Some(secret) = &s3.secret_access_key {
                    b = b.with_secret_access_key(secret.expose_secret());
                }
                let store = b.build().context("configuring S3 storage")?;
                Ok(Self { store: Arc::new(store), local_root: None })
            }
        }
    }

    /// The raw object store (tests scan it to prove nothing is stored in plaintext).
    pub fn raw(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Starts writing an encrypted blob at `path`.
    pub fn writer(&self, path: &str, key: &Key) -> BlobWriter {
        let (enc, header) = Encryptor::new(key);
        BlobWriter {
            store: self.clone(),
            path: ObjPath::from(path),
            enc,
            buf: header.to_vec(),
            plain: Some(Plain::default()),
            multipart: None,
            gate: None,
        }
    }

    /// Writes a small blob whole (a report), listed as pending first ([`pending`]); the row that
    /// names it settles it. A failed write deletes what was written.
    pub async fn write_listed(&self, db: &crate::db::Db, path: &str, key: &crypto::Key, bytes: &[u8]) -> anyhow::Result<()> {
        pending::list(db, path).await?;
        let mut w = self.writer(path, key);
        let written = async {
            w.write(bytes).await?;
            w.finish().await
        }
        .await;
        if written.is_err() && self.delete(path).await.is_ok() {
            let _ = pending::forget(db, path).await;
        }
        written
    }

    /// Deletes blobs that a committed transaction listed in `pending_blobs` (see
    /// [`crate::index::release`]), each with its pending row; what fails stays listed for the
    /// sweeper.
    pub async fn delete_released(&self, db: &crate::db::Db, paths: &[String]) {
        for path in paths {
            if self.delete(path).await.is_ok() {
                let _ = pending::forget(db, path).await;
            }
        }
    }

    /// Deletes a blob; deleting a missing one is fine. On the local backend this also removes
    /// the staging files (`name#n`) of a multipart upload that a crash interrupted; on S3 a
    /// bucket lifecycle rule (AbortIncompleteMultipartUpload) does that.
    pub async fn delete(&self, path: &str) -> anyhow::Result<()> {
        match self.store.delete(&ObjPath::from(path)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        if let Some(root) = &self.local_root {
            let file = root.join(path);
            tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                let (Some(dir), Some(name)) = (file.parent(), file.file_name()) else { return Ok(()) };
                let prefix = format!("{}#", name.to_string_lossy());
                for entry in std::fs::read_dir(dir)?.flatten() {
                    if entry.file_name().to_string_lossy().starts_with(&prefix) {
                        std::fs::remove_file(entry.path())?;
                    }
                }
                Ok(())
            })
            .await
            .context("cleanup task")??;
        }
        Ok(())
    }

    /// Splits the plaintext `range` of a blob into pieces of whole chunks, each read and
    /// decrypted on its own (so pieces can be fetched ahead and decrypted in parallel).
    pub fn pieces(plain_len: u64, range: Range<u64>) -> Vec<Piece> {
        let range = range.start.min(plain_len)..range.end.min(plain_len);
        if range.is_empty() {
            return Vec::new();
        }
        let first = range.start / CHUNK as u64;
        let last = (range.end - 1) / CHUNK as u64;
        let mut out = Vec::new();
        let mut c = first;
        while c <= last {
            let upto = (c + CHUNKS_PER_PIECE - 1).min(last);
            let base = c * CHUNK as u64;
            let from = range.start.max(base) - base;
            let to = range.end.min((upto + 1) * CHUNK as u64) - base;
            out.push(Piece { first: c, last: upto, trim: from..to });
            c = upto + 1;
        }
        out
    }

    /// Fetches the ciphertext of one piece and the blob's header. The header comes with the
    /// ciphertext when the piece starts at the first chunk, so a small blob costs one storage
    /// request. The buffer is the fetched one (not copied), to be decrypted where it lies.
    async fn fetch_piece(&self, path: &str, plain_len: u64, piece: &Piece) -> std::io::Result<([u8; HEADER_LEN], bytes::BytesMut)> {
        let path = ObjPath::from(path);
        let span = crypto::chunk_span(plain_len, piece.first, piece.last);
        let (header, ct) = if piece.first == 0 {
            let all = self.store.get_range(&path, 0..span.end).await.map_err(std::io::Error::other)?;
            let header: [u8; HEADER_LEN] =
                all.get(..HEADER_LEN).and_then(|h| h.try_into().ok()).ok_or_else(|| io_err("blob shorter than its header"))?;
            // Only the slice is left referring to the buffer, so it can become mutable below.
            (header, all.slice(HEADER_LEN..))
        } else {
            let (h, c) = futures_util::try_join!(self.store.get_range(&path, 0..HEADER_LEN as u64), self.store.get_range(&path, span))
                .map_err(std::io::Error::other)?;
            (h.get(..HEADER_LEN).and_then(|h| h.try_into().ok()).ok_or_else(|| io_err("blob shorter than its header"))?, c)
        };
        Ok((header, ct.try_into_mut().unwrap_or_else(|shared| bytes::BytesMut::from(&shared[..]))))
    }

    /// Fetches one piece and runs `open` (decryption) on it on a blocking thread. On the local
    /// backend the file is read on that same thread (one hand-off per piece instead of two, and
    /// no zero-filled buffer first); other backends fetch through object_store.
    async fn with_piece<T: Send + 'static>(
        &self,
        path: &str,
        key: Key,
        plain_len: u64,
        piece: Piece,
        open: fn(Decryptor, &Piece, bytes::BytesMut) -> anyhow::Result<T>,
    ) -> std::io::Result<T> {
        let source = match &self.local_root {
            Some(root) => PieceSource::Local(root.join(path)),
            None => {
                let (header, buf) = self.fetch_piece(path, plain_len, &piece).await?;
                PieceSource::Fetched(header, buf)
            }
        };
        tokio::task::spawn_blocking(move || open_piece(source, &key, plain_len, &piece, open)).await.map_err(std::io::Error::other)?
    }

    /// Fetches and decrypts one piece into one contiguous buffer.
    pub async fn read_piece(&self, path: &str, key: Key, plain_len: u64, piece: Piece) -> std::io::Result<Bytes> {
        self.with_piece(path, key, plain_len, piece, |dec, piece, buf| {
            let plain = dec.open_in_place(piece.first, buf)?;
            let to = (piece.trim.end as usize).min(plain.len());
            let from = (piece.trim.start as usize).min(to);
            Ok(plain.slice(from..to))
        })
        .await
    }

    /// Reads and decrypts several pieces (of one or more blobs) as [`read_piece_chunks`] does,
    /// in order. On the local backend all of them are read on one blocking thread: for a series
    /// of small instances that is one hand-off per group instead of one per instance.
    ///
    /// [`read_piece_chunks`]: Self::read_piece_chunks
    pub async fn read_pieces_chunks(&self, reads: Vec<PieceRead>) -> std::io::Result<Vec<Vec<Bytes>>> {
        let Some(root) = self.local_root.clone() else {
            let mut out = Vec::with_capacity(reads.len());
            for r in reads {
                out.push(self.read_piece_chunks(&r.path, r.key, r.plain_len, r.piece).await?);
            }
            return Ok(out);
        };
        tokio::task::spawn_blocking(move || {
            reads
                .into_iter()
                .map(|r| open_piece(PieceSource::Local(root.join(&*r.path)), &r.key, r.plain_len, &r.piece, open_chunks_trimmed))
                .collect()
        })
        .await
        .map_err(std::io::Error::other)?
    }

    /// Fetches and decrypts one piece as one buffer per chunk (slices of the fetched buffer:
    /// nothing is moved or copied after the read), for writing straight to a socket.
    pub async fn read_piece_chunks(&self, path: &str, key: Key, plain_len: u64, piece: Piece) -> std::io::Result<Vec<Bytes>> {
        self.with_piece(path, key, plain_len, piece, open_chunks_trimmed).await
    }

    /// Streams the plaintext bytes `range` of a blob whose plaintext is `plain_len` long,
    /// one piece ahead.
    pub fn read(
        &self,
        path: &str,
        key: Key,
        plain_len: u64,
        range: Range<u64>,
    ) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
        use futures_util::StreamExt;
        let this = self.clone();
        let path = path.to_string();
        futures_util::stream::iter(Self::pieces(plain_len, range))
            .map(move |piece| {
                let this = this.clone();
                let path = path.clone();
                let key = key.clone();
                async move { this.read_piece(&path, key, plain_len, piece).await }
            })
            .buffered(2)
    }

    /// Reads a whole blob into memory (for rendering, where the decoder wants all of it).
    pub async fn read_all(&self, path: &str, key: Key, plain_len: u64) -> anyhow::Result<Vec<u8>> {
        use futures_util::TryStreamExt;
        let mut out = Vec::with_capacity(plain_len as usize);
        let mut s = std::pin::pin!(self.read(path, key, plain_len, 0..plain_len));
        while let Some(b) = s.try_next().await? {
            out.extend_from_slice(&b);
        }
        Ok(out)
    }
}

/// Where a piece's ciphertext comes from: fetched already (object_store), or a local blob file
/// that is read on the blocking thread that decrypts it.
enum PieceSource {
    Fetched([u8; HEADER_LEN], bytes::BytesMut),
    Local(std::path::PathBuf),
}

/// Reads a piece if it is local, then decrypts it with `open` (on a blocking thread).
fn open_piece<T>(
    source: PieceSource,
    key: &Key,
    plain_len: u64,
    piece: &Piece,
    open: fn(Decryptor, &Piece, bytes::BytesMut) -> anyhow::Result<T>,
) -> std::io::Result<T> {
    let (header, buf) = match source {
        PieceSource::Fetched(header, buf) => (header, buf),
        PieceSource::Local(file) => read_local_piece(&file, plain_len, piece)?,
    };
    let dec = Decryptor::new(key, &header, plain_len).map_err(io_err)?;
    open(dec, piece, buf).map_err(io_err)
}

/// Decrypts a piece chunk by chunk and keeps the plaintext its trim asks for.
fn open_chunks_trimmed(dec: Decryptor, piece: &Piece, buf: bytes::BytesMut) -> anyhow::Result<Vec<Bytes>> {
    let chunks = dec.open_chunks(piece.first, buf)?;
    let mut out = Vec::with_capacity(chunks.len());
    let mut at = 0u64;
    for c in chunks {
        let (start, end) = (at, at + c.len() as u64);
        at = end;
        let from = piece.trim.start.clamp(start, end) - start;
        let to = piece.trim.end.clamp(start, end) - start;
        if from < to {
            out.push(c.slice(from as usize..to as usize));
        }
    }
    Ok(out)
}

/// Reads the header and the ciphertext of `piece` from a local blob file.
fn read_local_piece(file: &std::path::Path, plain_len: u64, piece: &Piece) -> std::io::Result<([u8; HEADER_LEN], bytes::BytesMut)> {
    use std::io::{Read, Seek, SeekFrom};
    use std::os::unix::fs::FileExt;
    let span = crypto::chunk_span(plain_len, piece.first, piece.last);
    let mut f = std::fs::File::open(file)?;
    let mut header = [0u8; HEADER_LEN];
    let from = if piece.first == 0 { 0 } else { span.start };
    if piece.first != 0 {
        f.read_exact_at(&mut header, 0)?;
    }
    f.seek(SeekFrom::Start(from))?;
    let want = (span.end - from) as usize;
    let mut v = Vec::with_capacity(want);
    (&mut f).take(want as u64).read_to_end(&mut v)?;
    if v.len() != want {
        return Err(io_err("blob shorter than its index says"));
    }
    let mut buf = Bytes::from(v).try_into_mut().unwrap_or_else(|b| bytes::BytesMut::from(&b[..]));
    if piece.first == 0 {
        header.copy_from_slice(&buf[..HEADER_LEN]);
        bytes::Buf::advance(&mut buf, HEADER_LEN);
    }
    Ok((header, buf))
}

fn io_err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// Plaintext buffers of a small blob, in order.
#[derive(Default)]
struct Plain {
    parts: Vec<Bytes>,
    len: usize,
}

/// Writes one encrypted blob. Small blobs (up to [`SINGLE_PUT_MAX`]) are kept as plaintext in
/// memory and encrypted at [`finish`](Self::finish) on a blocking thread, then go out in one PUT:
/// the encryption runs beside the receiving of the next file instead of on the request's task.
/// Larger ones are encrypted as they arrive and stream through a multipart upload. Dropping it
/// without `finish` leaves no visible blob (multipart uploads are aborted by
/// [`abort`](Self::abort); a single PUT never started).
pub struct BlobWriter {
    store: BlobStore,
    path: ObjPath,
    enc: Encryptor,
    /// Ciphertext not yet written (starts with the blob header).
    buf: Vec<u8>,
    /// Plaintext of a blob still small enough for one PUT (the received buffers themselves, not
    /// copied); `None` once it streams.
    plain: Option<Plain>,
    multipart: Option<WriteMultipart>,
    gate: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl BlobWriter {
    /// Makes the writer wait for `gate` (e.g. the blob's registration in `pending_blobs`)
    /// before anything reaches the store, without holding up the encryption meanwhile.
    pub fn with_gate(mut self, gate: tokio::task::JoinHandle<anyhow::Result<()>>) -> Self {
        self.gate = Some(gate);
        self
    }

    async fn pass_gate(&mut self) -> anyhow::Result<()> {
        if let Some(gate) = self.gate.take() {
            gate.await.context("gate task")??;
        }
        Ok(())
    }

    /// Adds plaintext (copied).
    pub async fn write(&mut self, data: &[u8]) -> anyhow::Result<()> {
        self.write_bytes(Bytes::copy_from_slice(data)).await
    }

    /// Adds plaintext; a small blob keeps the buffer itself until [`finish`](Self::finish).
    pub async fn write_bytes(&mut self, data: Bytes) -> anyhow::Result<()> {
        if let Some(plain) = self.plain.as_mut() {
            if plain.len + data.len() <= SINGLE_PUT_MAX {
                plain.len += data.len();
                plain.parts.push(data);
                return Ok(());
            }
            // Too large for one PUT: encrypt what came so far and stream from here on.
            for part in self.plain.take().map(|p| p.parts).unwrap_or_default() {
                self.enc.update(&part, &mut self.buf)?;
            }
        }
        self.enc.update(&data, &mut self.buf)?;
        if self.multipart.is_none() && self.buf.len() > SINGLE_PUT_MAX {
            self.pass_gate().await?;
            let upload = self.store.store.put_multipart(&self.path).await?;
            self.multipart = Some(WriteMultipart::new(upload));
        }
        if let Some(mp) = self.multipart.as_mut()
            && !self.buf.is_empty()
        {
            mp.wait_for_capacity(4).await?;
            mp.write(&self.buf);
            self.buf.clear();
        }
        Ok(())
    }

    /// Completes the blob and makes it durable (fsync on the local backend).
    pub async fn finish(mut self) -> anyhow::Result<()> {
        self.pass_gate().await?;
        if let Some(plain) = self.plain.take() {
            let big = plain.len > SMALL_SEAL_MAX;
            let (enc, out) = (self.enc, std::mem::take(&mut self.buf));
            let seal = move || enc.seal_parts(&plain.parts, out);
            // Up to 1 MiB (about a millisecond) is sealed right here; more on a blocking thread.
            let out = if big { tokio::task::spawn_blocking(seal).await.context("encryption task")?? } else { seal()? };
            self.store.store.put(&self.path, PutPayload::from(out)).await?;
            return Ok(());
        }
        self.enc.finish(&mut self.buf)?;
        match self.multipart.take() {
            Some(mut mp) => {
                mp.write(&self.buf);
                mp.finish().await?;
            }
            None => {
                let payload = PutPayload::from(std::mem::take(&mut self.buf));
                self.store.store.put(&self.path, payload).await?;
            }
        }
        Ok(())
    }

    /// Gives up the blob. Waits for the gate first, so a cleanup that follows comes after it.
    pub async fn abort(mut self) {
        let _ = self.pass_gate().await;
        if let Some(mp) = self.multipart.take() {
            let _ = mp.abort().await;
        }
    }
}
