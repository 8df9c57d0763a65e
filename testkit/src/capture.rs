//! What a link in a test's namespace receives, seen by tcpdump: how tests show that nothing
//! leaves in clear.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::TestNs;

/// A tcpdump we started (ended by PID on drop), its standard output in a file.
#[derive(Debug)]
pub struct Capture {
    child: Child,
    out: PathBuf,
}

impl Capture {
    /// tcpdump of what `link` in `ns` receives, one line per packet that matches `filter`.
    pub fn start(ns: &TestNs, link: &str, filter: &str, out: &Path) -> Capture {
        let file = std::fs::File::create(out).expect("capture file");
        let child = Command::new("ip")
            .args([
                "netns", "exec", &ns.name, "tcpdump", "-n", "-l", "-Z", "root",
            ])
            .args(["-Q", "in", "-i", link, filter])
            .stdout(file)
            .stderr(Stdio::null())
            .spawn()
            .expect("start tcpdump");
        // tcpdump needs a moment before it sees packets.
        std::thread::sleep(Duration::from_secs(1));
        Capture {
            child,
            out: out.to_path_buf(),
        }
    }

    /// Stops the capture and returns what it saw.
    pub fn stop(mut self) -> String {
        // SIGTERM: tcpdump writes out what it buffered.
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) on the PID of a child this capture started and has not reaped.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let _ = self.child.wait();
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
