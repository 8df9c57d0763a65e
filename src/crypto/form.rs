//! The form of a sealed message, `<wrapped key>$<counter block>$<ciphertext>`, each part base64:
//! what can be checked of it without a key (its parts are public).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use super::{OpenError, IV_LEN, MIN_BITS, SEPARATOR};

/// A sealed message taken apart.
pub(super) struct Sealed {
    pub wrapped: Vec<u8>,
    pub iv: [u8; IV_LEN],
    pub body: Vec<u8>,
}

impl Sealed {
    pub fn parse(text: &str) -> Result<Sealed, OpenError> {
        let parts: Vec<&str> = text.trim().splitn(3, SEPARATOR).collect();
        let [wrapped, iv, body] = parts[..] else {
            return Err(OpenError::Form("not three parts joined by $"));
        };
        let decode = |text, what| STANDARD.decode(text).map_err(|_| OpenError::Form(what));
        let wrapped = decode(wrapped, "the wrapped key is not base64")?;
        let iv = decode(iv, "the counter block is not base64")?;
        let body = decode(body, "the message is not base64")?;
        let iv: [u8; IV_LEN] = iv
            .try_into()
            .map_err(|_| OpenError::Form("the counter block is not 16 bytes"))?;
        if wrapped.len() < (MIN_BITS / 8) as usize {
            return Err(OpenError::Form(
                "the wrapped key is shorter than any key taken",
            ));
        }
        Ok(Sealed { wrapped, iv, body })
    }
}

/// Whether `text` has the form of a sealed message (what the server, which holds no private
/// key, can check of an input in an encrypted collaboration).
pub fn check_form(text: &str) -> Result<(), OpenError> {
    Sealed::parse(text).map(|_| ())
}
