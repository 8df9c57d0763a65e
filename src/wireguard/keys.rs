//! WireGuard keys: made where they are used and kept there (mode 0600), in WireGuard's base64
//! form. Only the public half ever leaves.

use std::path::Path;

use base64::Engine as _;
use gotatun::x25519::{PublicKey, StaticSecret};

/// Why a key could not be read or kept.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("{0:?} is not a WireGuard key (32 bytes in base64)")]
    Form(String),
    #[error("{path}: {what}")]
    File { path: String, what: String },
}

/// Reads a key in WireGuard's base64 form.
pub fn decode_key(text: &str) -> Result<[u8; 32], KeyError> {
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| KeyError::Form(text.chars().take(60).collect()))
}

/// A key in WireGuard's base64 form.
pub fn encode_key(key: &[u8; 32]) -> String {
    base64::engine::general_purpose::STANDARD.encode(key)
}

/// A private key with its public half.
pub struct KeyPair {
    pub secret: StaticSecret,
    pub public: PublicKey,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair")
            .field("public", &encode_key(self.public.as_bytes()))
            .finish_non_exhaustive()
    }
}

impl KeyPair {
    /// A new random key pair.
    pub fn generate() -> std::io::Result<KeyPair> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(std::io::Error::other)?;
        Ok(KeyPair::from_secret(bytes))
    }

    fn from_secret(bytes: [u8; 32]) -> KeyPair {
        let secret = StaticSecret::from(bytes);
        let public = PublicKey::from(&secret);
        KeyPair { secret, public }
    }

    /// The key kept in `path`, made (0600) if there is none; a file there that is not a key is
    /// an error, never replaced (a peer may know its public half).
    pub fn load_or_create(path: &Path) -> Result<KeyPair, KeyError> {
        let err = |what: String| KeyError::File {
            path: path.display().to_string(),
            what,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                crate::private::tighten(path).map_err(|e| err(e.to_string()))?;
                decode_key(&text)
                    .map(KeyPair::from_secret)
                    .map_err(|e| err(e.to_string()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let pair = KeyPair::generate().map_err(|e| err(e.to_string()))?;
                let text = encode_key(&pair.secret.to_bytes()) + "\n";
                crate::private::file(path, text.as_bytes()).map_err(|e| err(e.to_string()))?;
                Ok(pair)
            }
            Err(e) => Err(err(e.to_string())),
        }
    }

    /// The public half in base64.
    pub fn public_b64(&self) -> String {
        encode_key(self.public.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_kept_key_is_private_and_the_same_on_every_load() {
        let dir = std::env::temp_dir().join(format!("algonet-wgkey-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("wg.key");
        let a = KeyPair::load_or_create(&path).expect("made");
        let b = KeyPair::load_or_create(&path).expect("read");
        assert_eq!(a.public_b64(), b.public_b64());
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!format!("{a:?}").contains(&encode_key(&a.secret.to_bytes())));
        std::fs::write(&path, "not a key").expect("write");
        assert!(matches!(
            KeyPair::load_or_create(&path),
            Err(KeyError::File { .. })
        ));
        assert_eq!(std::fs::read_to_string(&path).expect("kept"), "not a key");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn keys_read_back() {
        let k = [9u8; 32];
        assert_eq!(decode_key(&encode_key(&k)), Ok(k));
        assert!(decode_key("AAAA").is_err());
        assert!(decode_key("").is_err());
    }
}
