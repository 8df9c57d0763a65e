//! algonet's encryption against vantage6's own (`RSACryptor` of `vantage6-common` 4.14 from
//! PyPI, run by `tests/python/cipher_vectors.py`): a key vantage6 makes is read by algonet with
//! the same public key; what vantage6 seals (with its clients' form and its UI's) algonet opens;
//! what algonet seals vantage6 opens.

use algonet::crypto::{OpenError, PrivateKey, PublicKey};
use algonet_testkit as common;
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;

fn vectors(python: &str, mode: &str, place: &std::path::Path, stdin: Option<Value>) -> Value {
    let input = stdin.map(|v| v.to_string()).unwrap_or_default();
    let out = common::cipher_vectors(python, mode, place, &input).unwrap_or_else(|e| panic!("{e}"));
    serde_json::from_str(&out).expect("JSON")
}

#[test]
fn algonet_and_vantage6_read_each_others_ciphertexts() {
    let Some(python) = common::venv_python("ALGONET_V6_PYTHON") else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("algonet-cipher-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let made = vectors(&python, "make", &dir, None);
    let path = dir.join("key.pem");
    // vantage6 writes its key with the process' umask (0644 here): algonet refuses that.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let e = PrivateKey::load(&path).expect_err("a key others can read");
    assert!(e.to_string().contains("chmod 600"), "{e}");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let key = PrivateKey::load(&path).expect("vantage6's key");
    // The public key as vantage6's client uploads and compares it, byte for byte.
    assert_eq!(
        key.public_key(),
        made["public_key"].as_str().expect("public key")
    );

    let messages = made["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 5);
    // Another key of the same length.
    let other = PrivateKey::from_pem(&PrivateKey::generate_pem(4096).expect("gen")).expect("key");
    for m in messages {
        let plain = m["plain"].as_str().expect("plain");
        let sealed = m["sealed"].as_str().expect("sealed");
        let opened = key.open(sealed).expect("vantage6's ciphertext opens");
        assert_eq!(String::from_utf8(opened).expect("UTF-8"), plain);
        assert_eq!(other.open(sealed), Err(OpenError::Unreadable));
    }

    // The other way: algonet seals with the public key as the server would hand it out.
    let public = PublicKey::from_base64(made["public_key"].as_str().expect("key")).expect("public");
    let plains = [
        r#"{"method": "partial_average", "kwargs": {"column_name": "age"}}"#.to_string(),
        "{}".to_string(),
        json!({"blob": "y".repeat(20011), "text": "\u{e9} \u{2713}"}).to_string(),
    ];
    let sealed: Vec<Value> = plains
        .iter()
        .map(|p| json!({"sealed": public.seal(p.as_bytes()).expect("seal")}))
        .collect();
    let opened = vectors(&python, "open", &path, Some(Value::Array(sealed)));
    assert_eq!(opened, json!(plains));
    std::fs::remove_dir_all(&dir).expect("rm");
}
