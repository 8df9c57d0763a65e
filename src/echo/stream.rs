//! The child's stream protocol: `SINK` (the parent streams, the child answers the count),
//! `SOURCE <ms>` (the child streams), `QUIT`; every streamed byte follows one [`Pattern`], so a
//! byte out of place is found.

use super::*;

/// The child's commands, each a line on a fresh connection (an echoed line is random hex).
pub(super) const SINK: &[u8] = b"SINK\n";

pub(super) const SOURCE: &str = "SOURCE ";

pub(super) const QUIT: &[u8] = b"QUIT\n";

/// The longest line the child reads (an echoed line is 33 bytes).
pub(super) const MAX_LINE: usize = 4096;

/// Bytes written at a time while streaming.
pub(super) const CHUNK: usize = 64 << 10;

/// Streamed bytes repeat 0, 1, ..., 250: a period that no power-of-two chunking lines up with,
/// so a lost, repeated or reordered chunk shows.
pub(super) const PERIOD: usize = 251;

/// The streamed bytes, [`PERIOD`]-periodic; the data-plane tests' bulk transfers send and check
/// the same.
#[derive(Clone, Debug)]
pub struct Pattern(Vec<u8>);

impl Pattern {
    /// The longest run [`Pattern::at`] gives.
    pub const MAX_LEN: usize = CHUNK;

    pub fn new() -> Pattern {
        Pattern((0..CHUNK + PERIOD).map(|i| (i % PERIOD) as u8).collect())
    }

    /// The `len` bytes (at most [`Pattern::MAX_LEN`]) that follow the first `offset` of a stream.
    pub fn at(&self, offset: u64, len: usize) -> &[u8] {
        let at = (offset % PERIOD as u64) as usize;
        &self.0[at..at + len]
    }
}

impl Default for Pattern {
    fn default() -> Pattern {
        Pattern::new()
    }
}

/// Writes the pattern for `d`; returns the bytes written.
pub(super) async fn send_pattern(
    w: &mut (impl tokio::io::AsyncWrite + Unpin),
    d: Duration,
) -> std::io::Result<u64> {
    let pat = Pattern::new();
    let end = Instant::now() + d;
    let mut sent = 0u64;
    while Instant::now() < end {
        sent += w.write(pat.at(sent, CHUNK)).await? as u64;
    }
    Ok(sent)
}

/// Reads to the end, checking every byte against the pattern; returns the bytes read.
pub(super) async fn receive_pattern(
    r: &mut (impl tokio::io::AsyncRead + Unpin),
) -> Result<u64, ProbeError> {
    let pat = Pattern::new();
    let mut buf = vec![0u8; CHUNK];
    let mut got = 0u64;
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok(got);
        }
        if buf[..n] != *pat.at(got, n) {
            return Err(ProbeError::Corrupted(format!(
                "bytes {got}..{} differ from what was sent",
                got + n as u64
            )));
        }
        got += n as u64;
    }
}
