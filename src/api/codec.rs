//! How vantage6 carries a run's input and result: base64 (standard alphabet, padded) of their
//! bytes, which vantage6's tools serialize as JSON first. The server stores both as the text it
//! gets; the node decodes the input into the algorithm's `INPUT_FILE` and encodes what it left in
//! `OUTPUT_FILE`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

pub use base64::DecodeError;

pub fn encode(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

pub fn decode(text: &str) -> Result<Vec<u8>, DecodeError> {
    STANDARD.decode(text.trim())
}

/// A value as vantage6's `bytes_to_base64s(serialize(value))` sends it.
pub fn encode_json(value: &impl serde::Serialize) -> String {
    // Serialising to a Vec fails only for maps with non-string keys, which no input here has.
    encode(&serde_json::to_vec(value).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_read_as_vantage6_writes_them() {
        // bytes_to_base64s(serialize({"method": "child"})) in vantage6-common 4.14.
        assert_eq!(
            encode_json(&serde_json::json!({"method": "child"})),
            "eyJtZXRob2QiOiJjaGlsZCJ9"
        );
        assert_eq!(
            decode("eyJtZXRob2QiOiAiY2hpbGQifQ==").expect("base64"),
            br#"{"method": "child"}"#
        );
        assert!(decode("not base64!").is_err());
    }
}
