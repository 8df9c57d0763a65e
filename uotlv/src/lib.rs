//! UoTLV/1, "UDP over TCP, length and value", as eduVPN's ProxyGuard carries WireGuard where
//! a firewall lets no UDP through: after an HTTP/1.1 upgrade (`Upgrade: UoTLV/1`), each
//! datagram goes on the byte stream as its length (2 bytes, big-endian) and then its bytes.
//!
//! Sans-IO: [`encode`] frames a datagram onto an output buffer; a [`Reader`] takes the stream's
//! bytes as they come, in chunks of any size, and hands back each datagram once it is whole.
//! Any bytes are taken without panic: every length is a datagram of that length, so a stream
//! can only be cut short, never malformed; an empty datagram is skipped (WireGuard sends none).

#![forbid(unsafe_code)]

/// The protocol's name in the `Upgrade` header.
pub const UPGRADE: &str = "UoTLV/1";

/// The length before each datagram.
pub const HEADER: usize = 2;

/// The longest datagram a frame carries.
pub const MOST: usize = u16::MAX as usize;

/// The longest frame.
const FRAME: usize = HEADER + MOST;

/// A datagram longer than a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooLong(pub usize);

impl std::fmt::Display for TooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "a datagram of {} bytes is longer than UoTLV/1 carries ({MOST})",
            self.0
        )
    }
}

impl std::error::Error for TooLong {}

/// Appends `datagram`, framed, to `out`.
pub fn encode(datagram: &[u8], out: &mut Vec<u8>) -> Result<(), TooLong> {
    let len = u16::try_from(datagram.len()).map_err(|_| TooLong(datagram.len()))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(datagram);
    Ok(())
}

/// Datagrams out of a stream's bytes. Read into [`Reader::space`], tell [`Reader::filled`] how
/// much came, then take [`Reader::next`] until it has no more: then `space` is never empty, as
/// what is left is less than one frame and the buffer holds two.
#[derive(Debug)]
pub struct Reader {
    buf: Box<[u8]>,
    /// Where the first byte not yet handed back is.
    start: usize,
    /// Where the bytes read end.
    end: usize,
}

impl Default for Reader {
    fn default() -> Reader {
        Reader {
            buf: vec![0; 2 * FRAME].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }
}

impl Reader {
    /// Where the next bytes of the stream go. What is left of a frame is first moved to the
    /// front: at most one frame's worth, and only once per read.
    pub fn space(&mut self) -> &mut [u8] {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.buf[self.end..]
    }

    /// `n` bytes were read into [`Reader::space`] (more than it had room for counts as all of it).
    pub fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// The next whole datagram, if one has come.
    #[allow(clippy::should_implement_trait)] // it lends from the reader: not an Iterator
    pub fn next(&mut self) -> Option<&[u8]> {
        loop {
            let have = &self.buf[self.start..self.end];
            let [a, b, ..] = *have else {
                return None;
            };
            let len = usize::from(u16::from_be_bytes([a, b]));
            if have.len() < HEADER + len {
                return None;
            }
            let from = self.start + HEADER;
            self.start = from + len;
            if len > 0 {
                return Some(&self.buf[from..from + len]);
            }
        }
    }

    /// Bytes read that are not yet a whole datagram.
    pub fn pending(&self) -> usize {
        self.end - self.start
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every datagram of `stream`, fed in chunks of `chunks` bytes (cycled), and what is left.
    fn read_all(stream: &[u8], chunks: &[usize]) -> (Vec<Vec<u8>>, usize) {
        let mut r = Reader::default();
        let mut got = Vec::new();
        let mut at = 0;
        for &c in chunks.iter().cycle() {
            if at == stream.len() {
                break;
            }
            let space = r.space();
            assert!(!space.is_empty(), "no room after the reader was drained");
            let n = c.max(1).min(space.len()).min(stream.len() - at);
            space[..n].copy_from_slice(&stream[at..at + n]);
            r.filled(n);
            at += n;
            while let Some(d) = r.next() {
                got.push(d.to_vec());
            }
        }
        (got, r.pending())
    }

    #[test]
    fn frames_are_the_length_then_the_bytes() {
        let mut out = Vec::new();
        encode(b"abc", &mut out).expect("short enough");
        encode(&[], &mut out).expect("short enough");
        assert_eq!(out, [0, 3, b'a', b'b', b'c', 0, 0]);
        assert_eq!(encode(&vec![0; MOST + 1], &mut out), Err(TooLong(MOST + 1)));
        assert_eq!(out.len(), 7, "a refused datagram leaves nothing behind");
    }

    #[test]
    fn a_datagram_comes_out_whole_however_the_stream_is_cut() {
        let mut stream = Vec::new();
        encode(b"first", &mut stream).expect("short enough");
        encode(&[], &mut stream).expect("short enough");
        encode(&vec![7; MOST], &mut stream).expect("short enough");
        encode(b"last", &mut stream).expect("short enough");
        for chunk in [1, 2, 3, 1000, 65_537, usize::MAX] {
            let (got, left) = read_all(&stream, &[chunk]);
            assert_eq!(got.len(), 3, "chunks of {chunk}");
            assert_eq!(got[0], b"first");
            assert_eq!(got[1], vec![7; MOST]);
            assert_eq!(got[2], b"last");
            assert_eq!(left, 0);
        }
    }

    #[test]
    fn a_cut_frame_waits_for_the_rest() {
        let (got, left) = read_all(&[0, 5, 1, 2], &[1]);
        assert!(got.is_empty());
        assert_eq!(left, 4);
        let (got, left) = read_all(&[0], &[1]);
        assert!(got.is_empty());
        assert_eq!(left, 1);
    }

    proptest! {
        #[test]
        fn what_is_encoded_reads_back_in_any_chunks(
            datagrams in proptest::collection::vec(
                proptest::collection::vec(any::<u8>(), 0..3000), 0..40),
            chunks in proptest::collection::vec(1usize..70_000, 1..8),
        ) {
            let mut stream = Vec::new();
            for d in &datagrams {
                encode(d, &mut stream).expect("short enough");
            }
            let (got, left) = read_all(&stream, &chunks);
            let sent: Vec<Vec<u8>> = datagrams.into_iter().filter(|d| !d.is_empty()).collect();
            prop_assert_eq!(got, sent);
            prop_assert_eq!(left, 0);
        }

        #[test]
        fn any_bytes_are_taken_and_what_comes_out_is_within_them(
            stream in proptest::collection::vec(any::<u8>(), 0..200_000),
            chunks in proptest::collection::vec(1usize..140_000, 1..8),
        ) {
            let (got, left) = read_all(&stream, &chunks);
            let framed: usize = got.iter().map(|d| HEADER + d.len()).sum();
            prop_assert!(framed + left <= stream.len());
            prop_assert!(left < FRAME);
        }
    }
}
