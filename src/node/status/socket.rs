//! The status socket: the node answers each connection with its [`Status`] as JSON and closes
//! it; `algonet node status` asks.

use std::path::{Path, PathBuf};

use tokio::io::AsyncWriteExt;

use super::view::Status;
use crate::node::state::Node;

/// Why the status socket could not be served or asked.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("status socket {}: {source}", path.display())]
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("status socket {}: not a node's answer: {source}", path.display())]
    Garbage {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// Listens on `path` (a stale socket there is replaced; the file is made owner-only) and
/// answers each connection with the node's status as JSON, then closes it.
pub fn listen(path: &Path) -> Result<tokio::net::UnixListener, StatusError> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let error = |source| StatusError::Socket {
        path: path.into(),
        source,
    };
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if m.file_type().is_socket() {
            std::fs::remove_file(path).map_err(error)?;
        }
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(error)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(error)?;
    Ok(listener)
}

pub async fn serve(listener: tokio::net::UnixListener, node: std::sync::Arc<Node>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let node = node.clone();
        tokio::spawn(async move {
            let status = node.status().await;
            let json = serde_json::to_vec(&status).unwrap_or_default();
            let _ = stream.write_all(&json).await;
            let _ = stream.shutdown().await;
        });
    }
}

/// Asks the node listening on `path`.
pub async fn ask(path: &Path) -> Result<Status, StatusError> {
    use tokio::io::AsyncReadExt;
    let error = |source| StatusError::Socket {
        path: path.into(),
        source,
    };
    let mut stream = tokio::net::UnixStream::connect(path).await.map_err(error)?;
    let mut text = Vec::new();
    // A status is a few KB; a peer that sends without end is not a node.
    (&mut stream)
        .take(16 << 20)
        .read_to_end(&mut text)
        .await
        .map_err(error)?;
    serde_json::from_slice(&text).map_err(|source| StatusError::Garbage {
        path: path.into(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_socket_is_private_replaces_only_a_stale_socket_and_garbage_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("algonet-status-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("status.sock");
        // A stale socket (a node that was killed) is replaced.
        drop(std::os::unix::net::UnixListener::bind(&path).expect("stale"));
        let listener = listen(&path).expect("listen over a stale socket");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // Something that answers garbage is not taken for a node.
        tokio::spawn(async move {
            if let Ok((mut s, _)) = listener.accept().await {
                let _ = s.write_all(b"{\"node\": 5").await;
            }
        });
        assert!(matches!(ask(&path).await, Err(StatusError::Garbage { .. })));
        // Nothing there: the error names the socket.
        let e = ask(&dir.join("none.sock")).await.expect_err("no node");
        assert!(e.to_string().contains("none.sock"), "{e}");
        // A file that is not a socket is never removed to make room.
        let file = dir.join("file");
        std::fs::write(&file, b"keep me").expect("file");
        assert!(listen(&file).is_err());
        assert_eq!(std::fs::read(&file).expect("still there"), b"keep me");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
