//! Files and folders only their owner may read: the server's data directory and database, the
//! node's task directory, run folders, container tokens and VPN profile. Modes are set on what
//! exists already too, so a folder made by hand or by an older version is tightened.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Makes `path` (and missing parents) a folder of mode 0700.
pub fn dir(path: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
}

/// Writes `contents` to `path` with mode 0600 (replacing what was there).
pub fn file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(contents)
}

/// Sets mode 0600 on `path` if it exists.
pub fn tighten(path: &Path) -> std::io::Result<()> {
    match std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777
    }

    #[test]
    fn existing_files_and_folders_are_tightened() {
        let base = std::env::temp_dir().join(format!("algonet-private-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let folder = base.join("run-1");
        std::fs::create_dir_all(&folder).expect("mkdir");
        std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let token = folder.join("token");
        std::fs::write(&token, "old").expect("write");
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        dir(&folder).expect("dir");
        file(&token, b"secret").expect("file");
        assert_eq!((mode(&folder), mode(&token)), (0o700, 0o600));
        assert_eq!(std::fs::read_to_string(&token).expect("read"), "secret");
        let db = folder.join("db");
        std::fs::write(&db, "").expect("write");
        tighten(&db).expect("tighten");
        tighten(&folder.join("absent")).expect("absent is fine");
        assert_eq!(mode(&db), 0o600);
        std::fs::remove_dir_all(&base).expect("clean up");
    }
}
