//! The environment vantage6 gives an algorithm container, by name: the node sets these, the
//! algorithm (vantage6's wrapper, or the echo algorithm) reads them, each value encoded as
//! vantage6 encodes it ([`encode`], [`decode`]).

/// The proxy's base URL (`http://<gateway>`).
pub const HOST: &str = "HOST";
/// The proxy's port.
pub const PORT: &str = "PORT";
/// The API path below the proxy (empty: the proxy adds the server's).
pub const API_PATH: &str = "API_PATH";
/// A file holding the container token.
pub const TOKEN_FILE: &str = "TOKEN_FILE";
/// A file holding the run's input.
pub const INPUT_FILE: &str = "INPUT_FILE";
/// The file the algorithm writes its result to.
pub const OUTPUT_FILE: &str = "OUTPUT_FILE";
/// A folder the algorithm may use for scratch files.
pub const TEMPORARY_FOLDER: &str = "TEMPORARY_FOLDER";

/// vantage6's encoding of an environment variable's value, which its algorithm wrapper undoes:
/// base32 of the UTF-8 bytes, `=` written `!`, so no value can be read as code on its way.
pub fn encode(value: &str) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let bytes = value.as_bytes();
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    for chunk in bytes.chunks(5) {
        let mut block = [0u8; 5];
        block[..chunk.len()].copy_from_slice(chunk);
        let bits = block.iter().fold(0u64, |acc, &b| acc << 8 | u64::from(b));
        let symbols = (chunk.len() * 8).div_ceil(5);
        for i in 0..8 {
            if i < symbols {
                let index = (bits >> (35 - 5 * i)) & 31;
                out.push(char::from(ALPHABET[index as usize]));
            } else {
                out.push('!');
            }
        }
    }
    out
}

/// The value of an environment variable the node encoded ([`encode`]), or the value itself if
/// it is not an encoding (as vantage6's `get_env_var` reads them).
pub fn decode(value: &str) -> String {
    let text = value.replace('!', "=");
    if text.is_empty() || !text.len().is_multiple_of(8) {
        return value.to_string();
    }
    let mut bytes = Vec::new();
    for chunk in text.as_bytes().chunks(8) {
        let mut bits = 0u64;
        let mut symbols = 0;
        for &c in chunk {
            let v = match c {
                b'A'..=b'Z' => c - b'A',
                b'2'..=b'7' => c - b'2' + 26,
                b'=' => break,
                _ => return value.to_string(),
            };
            bits = bits << 5 | u64::from(v);
            symbols += 1;
        }
        bits <<= 5 * (8 - symbols);
        let n = symbols * 5 / 8;
        for i in 0..n {
            bytes.push((bits >> (32 - 8 * i)) as u8);
        }
    }
    String::from_utf8(bytes).unwrap_or_else(|_| value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_encoded_as_vantage6_encodes_them_and_read_back() {
        // vantage6's own example: _encode("abc") == 'MFRGG!!!'.
        assert_eq!(encode("abc"), "MFRGG!!!");
        assert_eq!(encode(""), "");
        assert_eq!(encode("foobar"), "MZXW6YTBOI!!!!!!");
        for v in [
            "",
            "a",
            "/mnt/data/x.csv",
            "SELECT * FROM t WHERE a = 'b';",
            "Zürich",
        ] {
            assert_eq!(decode(&encode(v)), v);
        }
        // What is no encoding comes back as it is.
        for v in ["http://169.254.1.1", "8080", "abc", "MFRGG"] {
            assert_eq!(decode(v), v);
        }
    }
}
