//! Streaming plumbing: gzip and sha256 on a blocking thread between async streams,
//! in chunks, so no backup is ever held whole in memory.

use std::io::Write;

use bytes::Bytes;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use wharf_core::{ByteStream, Error, Result, StreamReader};

/// Bytes per chunk handed on.
const CHUNK: usize = 256 * 1024;

/// A writer feeding a channel in chunks (from a blocking thread).
pub(crate) struct ChannelWriter {
    tx: mpsc::Sender<Result<Bytes>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    pub(crate) fn new(tx: mpsc::Sender<Result<Bytes>>) -> Self {
        ChannelWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
        }
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "reader gone"))
    }
}

/// Counts and hashes what passes through to `inner`.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
    len: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(data)?;
        self.hash.update(&data[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// What compressing a stream produced.
#[derive(Debug, Clone)]
pub(crate) struct Compressed {
    /// Bytes of the compressed object.
    pub(crate) size: u64,
    /// Hex sha256 of the compressed object.
    pub(crate) sha256: String,
    /// Bytes of the uncompressed input.
    pub(crate) content_size: u64,
}

/// Gzips `input`: returns the compressed chunks as a stream, and a task answering
/// its size and checksum once the stream has ended (an error of the input ends the
/// stream with that error, and the task with it).
pub(crate) fn compress(
    input: ByteStream,
) -> (ByteStream, tokio::task::JoinHandle<Result<Compressed>>) {
    let (tx, rx) = mpsc::channel::<Result<Bytes>>(4);
    let reader = StreamReader::new(input);
    let task = tokio::task::spawn_blocking(move || {
        let err_tx = tx.clone();
        let work = || -> std::io::Result<Compressed> {
            let mut reader = reader;
            let out = Hashing {
                inner: ChannelWriter::new(tx),
                hash: Sha256::new(),
                len: 0,
            };
            let mut gz = GzEncoder::new(out, flate2::Compression::default());
            let content_size = std::io::copy(&mut reader, &mut gz)?;
            let mut out = gz.finish()?;
            out.flush()?;
            Ok(Compressed {
                size: out.len,
                sha256: hex(&out.hash.finalize()),
                content_size,
            })
        };
        work().map_err(|e| {
            let err = io_error(e);
            let _ = err_tx.blocking_send(Err(err.clone_message()));
            err
        })
    });
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    (stream.boxed(), task)
}

/// Gunzips the file at `path` into a stream.
pub(crate) fn decompress_file(path: std::path::PathBuf) -> ByteStream {
    let (tx, rx) = mpsc::channel::<Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        let err_tx = tx.clone();
        let work = || -> std::io::Result<()> {
            let mut gz = GzDecoder::new(std::io::BufReader::new(std::fs::File::open(&path)?));
            let mut out = ChannelWriter::new(tx);
            std::io::copy(&mut gz, &mut out)?;
            out.flush()
        };
        if let Err(e) = work() {
            let _ = err_tx.blocking_send(Err(io_error(e).context("decompressing the backup")));
        }
    });
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) }).boxed()
}

/// An I/O error as Wharf's, keeping a Wharf error carried inside it.
fn io_error(e: std::io::Error) -> Error {
    match e.get_ref().and_then(|i| i.downcast_ref::<Error>()) {
        Some(inner) => inner.clone_message(),
        None => Error::from(e),
    }
}

/// Copying an error's kind and message (errors are not `Clone`).
trait CloneMessage {
    fn clone_message(&self) -> Error;
}

impl CloneMessage for Error {
    fn clone_message(&self) -> Error {
        let e = Error::new(self.kind(), self.message());
        match self.backend_name() {
            Some(b) => e.with_backend(b),
            None => e,
        }
    }
}

/// Lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
