//! One process per node configuration: a lock on `<task_dir>/node.lock`, taken before the node
//! touches anything (its containers, its status socket) and held until the process ends. A
//! second start with the same configuration (a service running, an operator starting it by hand)
//! exits naming the running one, and leaves that one's containers alone.

use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The held lock; released when dropped (or when the process ends, however it ends).
#[derive(Debug)]
pub struct Held {
    _file: std::fs::File,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// the lock file could not be opened or written
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    /// another process holds it
    #[error(
        "another algonet node (pid {pid}) runs with this configuration (its lock is {}); stop it first",
        path.display()
    )]
    Taken { pid: String, path: PathBuf },
}

/// Takes the lock of the node whose task directory is `task_dir`.
pub fn take(task_dir: &Path) -> Result<Held, LockError> {
    let path = task_dir.join("node.lock");
    let file_error = |source| LockError::File {
        path: path.clone(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(file_error)?;
    // SAFETY: flock only reads the descriptor, which `file` owns and keeps open.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if locked != 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::WouldBlock {
            return Err(file_error(e));
        }
        let mut pid = String::new();
        let _ = file.read_to_string(&mut pid);
        let pid = pid.trim();
        return Err(LockError::Taken {
            pid: if pid.is_empty() {
                "?".into()
            } else {
                pid.into()
            },
            path,
        });
    }
    file.set_len(0).map_err(file_error)?;
    file.rewind().map_err(file_error)?;
    writeln!(file, "{}", std::process::id()).map_err(file_error)?;
    Ok(Held { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_naming_the_first_until_it_lets_go() {
        let dir = std::env::temp_dir().join(format!("algonet-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let held = take(&dir).expect("first");
        match take(&dir) {
            Err(LockError::Taken { pid, .. }) => assert_eq!(pid, std::process::id().to_string()),
            other => panic!("a second holder: {other:?}"),
        }
        drop(held);
        take(&dir).expect("free again");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
