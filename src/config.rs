//! Reading the YAML configuration files of the server and the node. YAML is read with
//! `yaml_serde`, the YAML organization's maintained fork of `serde_yaml` (same API, on a
//! Rust port of libyaml rather than the unmaintained `unsafe-libyaml`). Each file's own `parse`
//! checks keys and values; errors come out as `<file>: <key>: <reason>`.

use std::path::{Path, PathBuf};

/// What is wrong with a configuration file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// the file could not be read
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// the YAML is malformed or a key is wrong
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// Reads `path` and hands its text to `parse`.
pub fn load<T>(
    path: &Path,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.into(),
        source,
    })?;
    parse(&text).map_err(|message| ConfigError::Invalid {
        path: path.into(),
        message,
    })
}
