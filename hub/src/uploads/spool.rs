//! An encrypted temporary spool: a request body that must be read with random access (a ZIP's
//! central directory sits at its end) is written to a temp file under an ephemeral in-memory key,
//! then read back through a decrypting `Read + Seek`. No plaintext touches the disk, and the key
//! dies with the request.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::storage::crypto::{self, CHUNK, Decryptor, Encryptor, HEADER_LEN, Key};

pub struct SpoolWriter {
    file: File,
    key: Key,
    enc: Encryptor,
    buf: Vec<u8>,
    len: u64,
}

impl SpoolWriter {
    pub fn create(dir: &Path) -> std::io::Result<Self> {
        crate::files::create_dir(dir)?;
        let mut file = tempfile::tempfile_in(dir)?;
        let key = Key::random();
        let (enc, header) = Encryptor::new(&key);
        file.write_all(&header)?;
        Ok(Self { file, key, enc, buf: Vec::with_capacity(CHUNK * 2), len: 0 })
    }

    pub fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.len += data.len() as u64;
        self.enc.update(data, &mut self.buf).map_err(std::io::Error::other)?;
        if self.buf.len() >= CHUNK {
            self.file.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn finish(mut self) -> std::io::Result<SpoolReader> {
        self.enc.finish(&mut self.buf).map_err(std::io::Error::other)?;
        self.file.write_all(&self.buf)?;
        self.file.seek(SeekFrom::Start(0))?;
        let mut header = [0u8; HEADER_LEN];
        self.file.read_exact(&mut header)?;
        let dec = Decryptor::new(&self.key, &header, self.len).map_err(std::io::Error::other)?;
        Ok(SpoolReader { file: self.file, dec, len: self.len, pos: 0, cached: None })
    }
}

pub struct SpoolReader {
    file: File,
    dec: Decryptor,
    len: u64,
    pos: u64,
    cached: Option<(u64, Vec<u8>)>,
}

impl Read for SpoolReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.len || buf.is_empty() {
            return Ok(0);
        }
        let chunk = self.pos / CHUNK as u64;
        if self.cached.as_ref().is_none_or(|(c, _)| *c != chunk) {
            let span = crypto::chunk_span(self.len, chunk, chunk);
            self.file.seek(SeekFrom::Start(span.start))?;
            let mut ct = vec![0u8; (span.end - span.start) as usize];
            self.file.read_exact(&mut ct)?;
            let plain = self.dec.open(chunk, &ct).map_err(std::io::Error::other)?;
            self.cached = Some((chunk, plain));
        }
        let Some((_, plain)) = &self.cached else { return Ok(0) };
        let off = (self.pos - chunk * CHUNK as u64) as usize;
        let n = (plain.len() - off).min(buf.len());
        buf[..n].copy_from_slice(&plain[off..off + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for SpoolReader {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let new = match to {
            SeekFrom::Start(p) => p as i128,
            SeekFrom::End(d) => self.len as i128 + d as i128,
            SeekFrom::Current(d) => self.pos as i128 + d as i128,
        };
        if new < 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before start"));
        }
        self.pos = new as u64;
        Ok(self.pos)
    }
}
