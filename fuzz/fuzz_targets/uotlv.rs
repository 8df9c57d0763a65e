//! ProxyGuard's framing: any stream, cut anywhere, is taken without panic; what comes out lies
//! within what went in; and a stream of frames made from datagrams gives them back in order.
#![no_main]

use libfuzzer_sys::fuzz_target;
use uotlv::{encode, Reader, HEADER};

/// Feeds `stream` to a reader in chunks whose sizes come from `cuts`; every datagram out.
fn read(stream: &[u8], cuts: &[u8]) -> (Vec<Vec<u8>>, usize) {
    let mut r = Reader::default();
    let mut got = Vec::new();
    let mut at = 0;
    let mut cut = cuts.iter().cycle();
    while at < stream.len() {
        let space = r.space();
        assert!(!space.is_empty());
        let want = usize::from(*cut.next().unwrap_or(&255)).max(1) * 97;
        let n = want.min(space.len()).min(stream.len() - at);
        space[..n].copy_from_slice(&stream[at..at + n]);
        r.filled(n);
        at += n;
        while let Some(d) = r.next() {
            got.push(d.to_vec());
        }
    }
    (got, r.pending())
}

fuzz_target!(|data: &[u8]| {
    let (cuts, stream) = data.split_at(data.len().min(8));
    let (got, left) = read(stream, cuts);
    let framed: usize = got.iter().map(|d| HEADER + d.len()).sum();
    assert!(framed + left <= stream.len());

    // The same bytes as datagrams (split at every 0xff), framed, read back.
    let datagrams: Vec<&[u8]> = stream.split(|b| *b == 0xff).filter(|d| !d.is_empty()).collect();
    let mut framed = Vec::new();
    for d in &datagrams {
        encode(d, &mut framed).expect("short enough");
    }
    let (back, left) = read(&framed, cuts);
    assert_eq!(left, 0);
    assert_eq!(back.len(), datagrams.len());
    assert!(back.iter().zip(&datagrams).all(|(a, b)| a == b));
});
