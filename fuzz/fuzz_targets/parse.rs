//! The checked door: any bytes parse or are refused, and what parses is within the buffer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netstack::wire;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = wire::parse(data) {
        assert!(p.ip.header_len >= 20 && p.ip.header_len <= p.ip.total_len);
        assert!(p.ip.total_len <= data.len());
        if let wire::L4::IcmpError { .. } = p.l4 {
            if let Ok(q) = wire::parse_quoted(&data[p.ip.header_len..p.ip.total_len]) {
                assert!(q.header_len + 8 <= q.len);
            }
        }
    }
    let _ = wire::parse_quoted(data);
});
