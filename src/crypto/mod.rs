//! vantage6's encryption of run inputs and results in an encrypted collaboration, byte for byte
//! as `vantage6.common.encryption.RSACryptor` (4.x) writes and reads it: a fresh AES-256 key and
//! 16-byte counter block per message, the message in AES-256-CTR, the key wrapped for the
//! receiving organization with RSA PKCS#1 v1.5, and the three parts in base64 joined by `$`:
//! `<wrapped key>$<counter block>$<ciphertext>`. An organization's public key travels as base64
//! of its PEM (SubjectPublicKeyInfo), as vantage6's `public_key_str`.
//!
//! The scheme has no MAC: a ciphertext altered in transit or at the server decrypts to other
//! bytes without error. What can be checked is checked: every input and result vantage6 writes
//! is JSON, so [`PrivateKey::open`] hands over only bytes that are JSON, and everything that
//! is not — another organization's key, an altered or truncated message — is one and the same
//! error. A wrapped key whose padding is wrong is not a different error either: it is unwrapped
//! to a key derived from this organization's private key and the message (implicit rejection),
//! so that whoever can send a node ciphertexts learns nothing from how it fails (the padding
//! oracle of Bleichenbacher and its timing variants).
//!
//! The RSA and AES work is OpenSSL's (the library vantage6's Python `cryptography` binds too).

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use openssl::pkey::{Private, Public};
use openssl::rsa::{Padding, Rsa};
use openssl::symm::{Cipher, Crypter, Mode};
use sha2::{Digest, Sha256};

pub use form::check_form;
use form::Sealed;
use padding::{ct_mask, pkcs1_type2};

mod form;
mod padding;

/// vantage6's separator of the three parts.
const SEPARATOR: char = '$';
/// AES-256: the shared key's length.
const KEY_LEN: usize = 32;
/// The counter block's length.
const IV_LEN: usize = 16;
/// The smallest RSA key taken (vantage6 makes 4096-bit keys; NIST retired 1024 long ago).
const MIN_BITS: u32 = 2048;
/// The largest RSA key taken: what one wrap costs stays bounded whoever uploads the key.
const MAX_BITS: u32 = 16384;

/// Why a key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{}: readable by others (mode {mode:o}): a private key must be readable by its owner \
         only (chmod 600)",
        path.display()
    )]
    Exposed { path: PathBuf, mode: u32 },
    #[error("a private key protected by a passphrase cannot be used: store it without one, readable by its owner only")]
    Passphrase,
    #[error("not an RSA key in PEM form ({0})")]
    NotRsa(String),
    #[error("not base64 of a PEM public key")]
    NotBase64,
    #[error("an RSA key of {0} bits: from {MIN_BITS} to {MAX_BITS} bits are taken")]
    Size(u32),
    #[error("the RSA key is inconsistent")]
    Inconsistent,
}

/// Why a sealed message could not be opened.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OpenError {
    /// Not vantage6's form (the parts are public: saying which is wrong tells nothing secret).
    #[error("not an encrypted vantage6 message: {0}")]
    Form(&'static str),
    /// Decrypted, the message is not vantage6 data: it was encrypted for another key, or
    /// altered, or cut short.
    #[error(
        "cannot be read with this organization's private key: encrypted for another key, or \
         altered or cut short on the way"
    )]
    Unreadable,
}

/// Why a message could not be encrypted (the system's random source or OpenSSL failed).
#[derive(Debug, thiserror::Error)]
#[error("encryption failed: {0}")]
pub struct SealError(String);

/// An organization's public key, as the server keeps it.
pub struct PublicKey(Rsa<Public>);

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({} bits)", self.0.size() * 8)
    }
}

impl PublicKey {
    /// Reads vantage6's form: base64 of a PEM RSA public key (SubjectPublicKeyInfo, or PKCS#1
    /// as `cryptography` also takes).
    pub fn from_base64(text: &str) -> Result<PublicKey, KeyError> {
        let pem = STANDARD
            .decode(text.trim())
            .map_err(|_| KeyError::NotBase64)?;
        let rsa = Rsa::public_key_from_pem(&pem)
            .or_else(|_| Rsa::public_key_from_pem_pkcs1(&pem))
            .map_err(|e| KeyError::NotRsa(first_reason(&e)))?;
        check_bits(rsa.size())?;
        Ok(PublicKey(rsa))
    }

    /// Encrypts `plain` for this key's holder, as `RSACryptor.encrypt_bytes_to_str`.
    pub fn seal(&self, plain: &[u8]) -> Result<String, SealError> {
        let mut key = [0u8; KEY_LEN];
        let mut iv = [0u8; IV_LEN];
        getrandom::fill(&mut key).map_err(|e| SealError(e.to_string()))?;
        getrandom::fill(&mut iv).map_err(|e| SealError(e.to_string()))?;
        let body = ctr(&key, &iv, plain).map_err(|e| SealError(first_reason(&e)))?;
        let mut wrapped = vec![0u8; self.0.size() as usize];
        let n = self
            .0
            .public_encrypt(&key, &mut wrapped, Padding::PKCS1)
            .map_err(|e| SealError(first_reason(&e)))?;
        key.fill(0);
        wrapped.truncate(n);
        Ok([
            STANDARD.encode(wrapped),
            STANDARD.encode(iv),
            STANDARD.encode(body),
        ]
        .join("$"))
    }
}

/// An organization's private key, read from the file the node's configuration names.
pub struct PrivateKey {
    rsa: Rsa<Private>,
    /// Its public half, in vantage6's form.
    public: String,
    /// The secret the key of a wrong wrap is derived from (implicit rejection).
    rejection: [u8; 32],
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PrivateKey({} bits, {})",
            self.rsa.size() * 8,
            self.fingerprint()
        )
    }
}

impl PrivateKey {
    /// Reads a PEM RSA private key (PKCS#1 as vantage6 writes it, or PKCS#8) from a file that
    /// only its owner may read.
    pub fn load(path: &Path) -> Result<PrivateKey, KeyError> {
        let read = |source| KeyError::Read {
            path: path.to_path_buf(),
            source,
        };
        let mode = std::fs::metadata(path).map_err(read)?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(KeyError::Exposed {
                path: path.to_path_buf(),
                mode: mode & 0o777,
            });
        }
        let mut pem = std::fs::read(path).map_err(read)?;
        let key = PrivateKey::from_pem(&pem);
        pem.fill(0);
        key
    }

    /// Reads a PEM RSA private key without a passphrase.
    pub fn from_pem(pem: &[u8]) -> Result<PrivateKey, KeyError> {
        if pem.windows(9).any(|w| w == b"ENCRYPTED") {
            return Err(KeyError::Passphrase);
        }
        // An empty passphrase, so that OpenSSL never asks for one on a terminal.
        let rsa = openssl::pkey::PKey::private_key_from_pem_passphrase(pem, b"")
            .and_then(|k| k.rsa())
            .map_err(|e| KeyError::NotRsa(first_reason(&e)))?;
        check_bits(rsa.size())?;
        if !rsa.check_key().unwrap_or(false) {
            return Err(KeyError::Inconsistent);
        }
        let public = rsa
            .public_key_to_pem()
            .map_err(|e| KeyError::NotRsa(first_reason(&e)))?;
        let mut der = rsa
            .private_key_to_der()
            .map_err(|e| KeyError::NotRsa(first_reason(&e)))?;
        let rejection = Sha256::new()
            .chain_update(b"algonet implicit rejection\0")
            .chain_update(&der)
            .finalize()
            .into();
        der.fill(0);
        Ok(PrivateKey {
            rsa,
            public: STANDARD.encode(public),
            rejection,
        })
    }

    /// A new key of `bits`, in PEM as vantage6 writes its keys (PKCS#1).
    pub fn generate_pem(bits: u32) -> Result<Vec<u8>, KeyError> {
        check_bits(bits / 8)?;
        Rsa::generate(bits)
            .and_then(|k| k.private_key_to_pem())
            .map_err(|e| KeyError::NotRsa(first_reason(&e)))
    }

    /// The public half in vantage6's form (base64 of the PEM), as the server should hold it.
    pub fn public_key(&self) -> &str {
        &self.public
    }

    /// A short name of the key for logs: the start of the SHA-256 of its public half.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::digest(self.public.as_bytes());
        let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        format!("sha256:{hex}")
    }

    /// Decrypts a message sealed for this key, as `RSACryptor.decrypt_str_to_bytes` (with its
    /// allowance for vantage6's UI, which base64-encodes key and message once more), and hands
    /// it over only if it is JSON.
    pub fn open(&self, sealed: &str) -> Result<Vec<u8>, OpenError> {
        let Sealed { wrapped, iv, body } = Sealed::parse(sealed)?;
        if wrapped.len() != self.rsa.size() as usize {
            return Err(OpenError::Form(
                "the wrapped key is not as long as this organization's key",
            ));
        }
        let mut key = self.unwrap_key(&wrapped);
        let plain = ctr(&key, &iv, &body).map_err(|_| OpenError::Unreadable);
        key.fill(0);
        let plain = plain?;
        if is_json(&plain) {
            return Ok(plain);
        }
        // vantage6's UI encrypts base64 of the message.
        match STANDARD.decode(&plain) {
            Ok(inner) if is_json(&inner) => Ok(inner),
            _ => Err(OpenError::Unreadable),
        }
    }

    /// The shared key of a wrap, or — when the wrap is not a valid PKCS#1 v1.5 encryption of a
    /// key — one derived from `rejection` and the wrap, chosen without branching on which.
    fn unwrap_key(&self, wrapped: &[u8]) -> [u8; KEY_LEN] {
        let k = wrapped.len();
        let mut em = vec![0u8; k];
        // A raw RSA decryption (OpenSSL blinds it) cannot fail for an input of the modulus'
        // length other than by being larger than the modulus: then the padding check below
        // fails on the zero block, as for any other bad wrap.
        let decrypted = self.rsa.private_decrypt(wrapped, &mut em, Padding::NONE);
        let ok = ct_mask(decrypted.is_ok_and(|n| n == k));
        let (valid, start) = pkcs1_type2(&em);
        let len = k - start;
        // vantage6's own clients wrap the 32 key bytes; its UI wraps their base64 (44 bytes).
        let raw = ct_mask(len == KEY_LEN);
        let mut ui_key = [0u8; KEY_LEN];
        let ui = ct_mask(
            len == 44
                && STANDARD
                    .decode_slice(&em[k - 44..], &mut ui_key)
                    .is_ok_and(|n| n == KEY_LEN),
        );
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.rejection)
            .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
        mac.update(wrapped);
        let synthetic: [u8; KEY_LEN] = mac.finalize().into_bytes().into();
        let take_raw = ok & valid & raw;
        let take_ui = ok & valid & ui & !raw;
        let mut key = [0u8; KEY_LEN];
        for i in 0..KEY_LEN {
            let r = em[k - KEY_LEN + i];
            key[i] =
                (r & take_raw) | (ui_key[i] & take_ui) | (synthetic[i] & !(take_raw | take_ui));
        }
        em.fill(0);
        ui_key.fill(0);
        key
    }
}

fn check_bits(bytes: u32) -> Result<(), KeyError> {
    let bits = bytes * 8;
    if (MIN_BITS..=MAX_BITS).contains(&bits) {
        Ok(())
    } else {
        Err(KeyError::Size(bits))
    }
}

/// AES-256-CTR over all of `data` (encryption and decryption are the same).
fn ctr(
    key: &[u8; KEY_LEN],
    iv: &[u8; IV_LEN],
    data: &[u8],
) -> Result<Vec<u8>, openssl::error::ErrorStack> {
    let cipher = Cipher::aes_256_ctr();
    let mut c = Crypter::new(cipher, Mode::Encrypt, key, Some(iv))?;
    let mut out = vec![0u8; data.len() + cipher.block_size()];
    let mut n = c.update(data, &mut out)?;
    n += c.finalize(&mut out[n..])?;
    out.truncate(n);
    Ok(out)
}

fn is_json(bytes: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok()
}

/// OpenSSL's first reason, without its internal codes.
fn first_reason(e: &openssl::error::ErrorStack) -> String {
    e.errors()
        .first()
        .and_then(|e| e.reason().map(str::to_string))
        .unwrap_or_else(|| "unreadable".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::OnceLock;

    /// One 2048-bit key for all tests (making one takes a while).
    fn key() -> &'static PrivateKey {
        static KEY: OnceLock<PrivateKey> = OnceLock::new();
        KEY.get_or_init(|| {
            PrivateKey::from_pem(&PrivateKey::generate_pem(2048).expect("generate")).expect("key")
        })
    }

    fn public() -> PublicKey {
        PublicKey::from_base64(key().public_key()).expect("public key")
    }

    #[test]
    fn what_is_sealed_opens_and_is_vantage6s_form() {
        let sealed = public().seal(br#"{"method": "partial"}"#).expect("seal");
        let parts: Vec<&str> = sealed.split('$').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(STANDARD.decode(parts[0]).expect("b64").len(), 256);
        assert_eq!(STANDARD.decode(parts[1]).expect("b64").len(), 16);
        assert_eq!(
            key().open(&sealed).expect("open"),
            br#"{"method": "partial"}"#
        );
        // A fresh key and counter block every time.
        assert_ne!(
            sealed,
            public().seal(br#"{"method": "partial"}"#).expect("seal")
        );
    }

    #[test]
    fn only_json_is_handed_over() {
        let sealed = public().seal(b"not json at all").expect("seal");
        assert_eq!(key().open(&sealed), Err(OpenError::Unreadable));
        // vantage6's UI: base64 of the JSON.
        let ui = public()
            .seal(STANDARD.encode(b"[1, 2]").as_bytes())
            .expect("seal");
        assert_eq!(key().open(&ui).expect("open"), b"[1, 2]");
    }

    #[test]
    fn another_key_and_tampering_give_one_error() {
        let other =
            PrivateKey::from_pem(&PrivateKey::generate_pem(2048).expect("gen")).expect("key");
        let theirs = PublicKey::from_base64(other.public_key()).expect("public");
        let sealed = theirs.seal(br#"{"secret": 1}"#).expect("seal");
        assert_eq!(key().open(&sealed), Err(OpenError::Unreadable));
        // A flipped bit in the wrapped key: a wrong padding, the same error.
        let mine = public().seal(br#"{"secret": 1}"#).expect("seal");
        let parts: Vec<&str> = mine.split('$').collect();
        let mut wrapped = STANDARD.decode(parts[0]).expect("b64");
        wrapped[100] ^= 1;
        let bad_wrap = format!("{}${}${}", STANDARD.encode(&wrapped), parts[1], parts[2]);
        assert_eq!(key().open(&bad_wrap), Err(OpenError::Unreadable));
        // A flipped bit in the message: AES-CTR flips the same bit of the plain text, which is
        // then no longer JSON here ('{' becomes 'z').
        let mut body = STANDARD.decode(parts[2]).expect("b64");
        body[0] ^= 0x01;
        let bad_body = format!("{}${}${}", parts[0], parts[1], STANDARD.encode(&body));
        assert_eq!(key().open(&bad_body), Err(OpenError::Unreadable));
        // Cut short: the JSON is no longer whole.
        let short = format!("{}${}${}", parts[0], parts[1], STANDARD.encode(&body[..5]));
        assert_eq!(key().open(&short), Err(OpenError::Unreadable));
    }

    #[test]
    fn malformed_messages_say_what_is_wrong() {
        for (text, part) in [
            ("", "not three parts"),
            ("abc", "not three parts"),
            ("!!$AAAA$AAAA", "wrapped key is not base64"),
            ("AAAA$!!$AAAA", "counter block is not base64"),
            ("AAAA$AAAA$AAAA", "counter block is not 16 bytes"),
            ("AAAA$AAAAAAAAAAAAAAAAAAAAAA==$AAAA", "shorter than any key"),
        ] {
            let e = key().open(text).expect_err(text);
            assert!(e.to_string().contains(part), "{text}: {e}");
        }
    }

    #[test]
    fn keys_that_cannot_be_used_are_refused() {
        assert!(matches!(
            PublicKey::from_base64("!!"),
            Err(KeyError::NotBase64)
        ));
        assert!(matches!(
            PublicKey::from_base64(
                &STANDARD.encode("-----BEGIN PUBLIC KEY-----\nAA==\n-----END PUBLIC KEY-----\n")
            ),
            Err(KeyError::NotRsa(_))
        ));
        let small = Rsa::generate(1024)
            .expect("gen")
            .public_key_to_pem()
            .expect("pem");
        assert!(matches!(
            PublicKey::from_base64(&STANDARD.encode(small)),
            Err(KeyError::Size(1024))
        ));
        let pem = PrivateKey::generate_pem(2048).expect("gen");
        let locked = openssl::pkey::PKey::from_rsa(Rsa::private_key_from_pem(&pem).expect("rsa"))
            .expect("pkey")
            .private_key_to_pem_pkcs8_passphrase(Cipher::aes_256_cbc(), b"secret")
            .expect("pkcs8");
        assert!(matches!(
            PrivateKey::from_pem(&locked),
            Err(KeyError::Passphrase)
        ));
        assert!(matches!(
            PrivateKey::from_pem(b"junk"),
            Err(KeyError::NotRsa(_))
        ));
    }

    #[test]
    fn a_key_file_others_can_read_is_refused() {
        let dir = std::env::temp_dir().join(format!("algonet-crypto-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("key.pem");
        std::fs::write(&path, PrivateKey::generate_pem(2048).expect("gen")).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let e = PrivateKey::load(&path).expect_err("0640");
        assert!(e.to_string().contains("chmod 600"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let k = PrivateKey::load(&path).expect("0600");
        assert!(
            !format!("{k:?}").contains("PRIVATE"),
            "Debug shows no key material"
        );
        std::fs::remove_dir_all(&dir).expect("rm");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any text, and any change to a sealed message: an error or JSON, never a panic.
        #[test]
        fn anything_opens_to_an_error_or_json(text in ".{0,600}", flip in 0usize..2000, bit in 0u8..8) {
            if let Ok(plain) = key().open(&text) {
                prop_assert!(is_json(&plain));
            }
            let mut sealed = public().seal(br#"{"a": [1, 2, 3], "b": "text"}"#).expect("seal").into_bytes();
            let i = flip % sealed.len();
            sealed[i] ^= 1 << bit;
            if let Ok(s) = String::from_utf8(sealed) {
                if let Ok(plain) = key().open(&s) {
                    prop_assert!(is_json(&plain));
                }
            }
        }
    }
}
