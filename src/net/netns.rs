//! Network namespaces: run work inside one on a dedicated OS thread.
//!
//! `setns(2)` changes the namespace of the calling thread only, so each entry gets a thread of its
//! own with a current-thread tokio runtime; sockets (netlink, TUN, TCP) opened there live in that
//! namespace for good, whichever thread uses them later. The thread ends with the work, so no
//! pooled thread is ever left in a foreign namespace.

use std::fs::File;
use std::future::Future;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::pin::Pin;

/// Errors of entering a namespace.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// the namespace file could not be opened
    #[error("cannot open network namespace {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    /// setns failed
    #[error("cannot enter network namespace {path}: {source}")]
    Enter {
        path: PathBuf,
        source: std::io::Error,
    },
    /// the thread or its runtime could not be started
    #[error("cannot start a thread in network namespace {path}: {source}")]
    Thread {
        path: PathBuf,
        source: std::io::Error,
    },
    /// the work panicked
    #[error("work in network namespace {path} panicked")]
    Panicked { path: PathBuf },
    /// the resident thread is gone (it panicked)
    #[error("the thread in network namespace {path} has ended")]
    Gone { path: PathBuf },
}

/// An open handle on a network namespace (keeps it alive while held).
#[derive(Debug)]
pub struct Netns {
    file: File,
    path: PathBuf,
}

impl Netns {
    /// Opens a namespace by path: `/run/netns/<name>` or `/proc/<pid>/ns/net`.
    pub fn open(path: impl AsRef<Path>) -> Result<Netns, NetnsError> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|source| NetnsError::Open {
            path: path.clone(),
            source,
        })?;
        Ok(Netns { file, path })
    }

    /// The namespace of a process (for a container, its init process).
    pub fn of_pid(pid: u32) -> Result<Netns, NetnsError> {
        Netns::open(format!("/proc/{pid}/ns/net"))
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// Runs `work` to completion inside this namespace, on a new thread with a current-thread
    /// runtime, and returns its output.
    pub fn run<F, Fut, T>(&self, work: F) -> Result<T, NetnsError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T>,
        T: Send + 'static,
    {
        let path = self.path.clone();
        self.spawn(work)?
            .join()
            .map_err(|_| NetnsError::Panicked { path })?
    }

    /// Starts `work` inside this namespace on a new thread with a current-thread runtime, for
    /// work that lives on (a data plane); joining the thread gives its output.
    pub fn spawn<F, Fut, T>(
        &self,
        work: F,
    ) -> Result<std::thread::JoinHandle<Result<T, NetnsError>>, NetnsError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T>,
        T: Send + 'static,
    {
        let path = self.path.clone();
        self.thread(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|source| NetnsError::Thread { path, source })?;
            Ok(rt.block_on(work()))
        })
    }

    /// A new thread that enters this namespace, then runs `work`.
    fn thread<F, T>(
        &self,
        work: F,
    ) -> Result<std::thread::JoinHandle<Result<T, NetnsError>>, NetnsError>
    where
        F: FnOnce() -> Result<T, NetnsError> + Send + 'static,
        T: Send + 'static,
    {
        let file = self.file.try_clone().map_err(|source| NetnsError::Open {
            path: self.path.clone(),
            source,
        })?;
        let path = self.path.clone();
        std::thread::Builder::new()
            .name("netns".into())
            .spawn(move || -> Result<T, NetnsError> {
                sys::setns_net(file.as_raw_fd())
                    .map_err(|source| NetnsError::Enter { path, source })?;
                work()
            })
            .map_err(|source| NetnsError::Thread {
                path: self.path.clone(),
                source,
            })
    }
}

/// A job for a [`Resident`] thread: given the thread's state, a future to run there.
type Job<S> = Box<dyn for<'a> FnOnce(&'a S) -> Pin<Box<dyn Future<Output = ()> + 'a>> + Send>;

/// A thread that lives in a namespace as long as its handle, with a runtime and some state it
/// made there at start (a netlink connection), and runs the jobs it is given one after another:
/// what would otherwise take a thread, a runtime and a socket per call.
#[derive(Debug)]
pub struct Resident<S> {
    jobs: tokio::sync::mpsc::UnboundedSender<Job<S>>,
    path: PathBuf,
}

impl<S: 'static> Resident<S> {
    /// Starts the thread in `ns` and makes its state with `make` there.
    pub async fn start<E: Send + 'static>(
        ns: &Netns,
        make: impl FnOnce() -> Result<S, E> + Send + 'static,
    ) -> Result<Result<Resident<S>, E>, NetnsError> {
        let (jobs, mut inbox) = tokio::sync::mpsc::unbounded_channel::<Job<S>>();
        let (made_tx, made) = tokio::sync::oneshot::channel();
        // The thread ends when the handle is dropped (the inbox closes); nobody joins it.
        drop(ns.spawn(move || async move {
            let state = match make() {
                Ok(s) => {
                    let _ = made_tx.send(Ok(()));
                    s
                }
                Err(e) => {
                    let _ = made_tx.send(Err(e));
                    return;
                }
            };
            while let Some(job) = inbox.recv().await {
                // A job that panics fails its own call (its answer is dropped); the thread,
                // its state and the jobs after it carry on.
                let _ = futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(job(
                    &state,
                )))
                .await;
            }
        })?);
        let path = ns.path.clone();
        match made.await {
            Ok(Ok(())) => Ok(Ok(Resident { jobs, path })),
            Ok(Err(e)) => Ok(Err(e)),
            Err(_) => Err(NetnsError::Gone { path }),
        }
    }

    /// Runs `job` on the thread, with its state, and returns its output.
    pub async fn run<T: Send + 'static>(
        &self,
        job: impl for<'a> FnOnce(&'a S) -> Pin<Box<dyn Future<Output = T> + 'a>> + Send + 'static,
    ) -> Result<T, NetnsError> {
        let (done, answer) = tokio::sync::oneshot::channel();
        let job: Job<S> = Box::new(move |state| {
            Box::pin(async move {
                let _ = done.send(job(state).await);
            })
        });
        let gone = || NetnsError::Gone {
            path: self.path.clone(),
        };
        self.jobs.send(job).map_err(|_| gone())?;
        answer.await.map_err(|_| gone())
    }
}

/// Runs `work` inside `ns` from async code, without blocking the caller's runtime.
pub async fn in_ns<F, Fut, T>(ns: &std::sync::Arc<Netns>, work: F) -> Result<T, NetnsError>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    let ns = ns.clone();
    let path = ns.path.clone();
    tokio::task::spawn_blocking(move || ns.run(work))
        .await
        .unwrap_or_else(|_| Err(NetnsError::Panicked { path }))
}

/// Gives the calling thread a mount namespace of its own with a fresh sysfs on `/sys`, which
/// shows the devices of the thread's network namespace (a sysfs shows those of the namespace
/// that mounted it). For a short-lived thread: the mounts end with it, and none reaches the
/// host's mount namespace.
pub fn own_sysfs() -> std::io::Result<()> {
    sys::unshare_mounts()?;
    sys::mount_sysfs()
}

mod sys {
    use std::os::fd::RawFd;

    fn check(rc: libc::c_int) -> std::io::Result<()> {
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    /// Moves the calling thread into a copy of its mount namespace whose mounts no longer
    /// propagate to the original.
    pub fn unshare_mounts() -> std::io::Result<()> {
        // SAFETY: unshare takes no pointers; CLONE_NEWNS affects the calling thread alone (its
        // fs context is unshared with it), which callers dedicate to this.
        check(unsafe { libc::unshare(libc::CLONE_NEWNS) })?;
        // SAFETY: the target is a NUL-terminated literal; the null source, type and data are
        // what a propagation change takes.
        check(unsafe {
            libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_SLAVE,
                std::ptr::null(),
            )
        })
    }

    /// Mounts a sysfs on `/sys` (in the calling thread's own mount namespace).
    pub fn mount_sysfs() -> std::io::Result<()> {
        // SAFETY: source, target and type are NUL-terminated literals; sysfs takes no data.
        check(unsafe {
            libc::mount(
                c"sysfs".as_ptr(),
                c"/sys".as_ptr(),
                c"sysfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                std::ptr::null(),
            )
        })
    }

    /// Moves the calling thread into the network namespace `fd` refers to.
    pub fn setns_net(fd: RawFd) -> std::io::Result<()> {
        // SAFETY: setns only reads the descriptor, which the caller keeps open for the call; it
        // affects the calling thread alone, which is a thread created for this purpose.
        check(unsafe { libc::setns(fd, libc::CLONE_NEWNET) })
    }
}
