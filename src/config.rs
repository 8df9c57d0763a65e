//! Reading the YAML configuration files of the server and the node. YAML is read with
//! `serde_yaml_ng` across the project: `serde_yaml` is unmaintained, and `serde_yaml_ng` is a
//! maintained fork with the same API. Each file's own `parse` checks keys and values; errors
//! come out as `<file>: <key>: <reason>`.

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
