//! The environment vantage6 gives an algorithm container, by name: the node sets these, the
//! algorithm (vantage6's wrapper, or the echo algorithm) reads them.

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
