//! Waiting out what is away (the server, Docker, OpenVPN): doubling waits, from half a second to
//! [`MAX_WAIT`]. The one place the node's retry loops take their waits from.

use std::time::Duration;

use crate::api::client::ClientError;

/// The first wait.
const FIRST_WAIT: Duration = Duration::from_millis(500);
/// The longest wait between two tries.
pub const MAX_WAIT: Duration = Duration::from_secs(30);

/// Doubling waits between tries.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    first: Duration,
    wait: Duration,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff::from(FIRST_WAIT)
    }
}

impl From<Duration> for Backoff {
    /// Waits that start at `first`.
    fn from(first: Duration) -> Backoff {
        Backoff { first, wait: first }
    }
}

impl Backoff {
    /// The wait before the next try; the one after it is twice as long (at most [`MAX_WAIT`]).
    pub fn next_wait(&mut self) -> Duration {
        let w = self.wait;
        self.wait = (self.wait * 2).min(MAX_WAIT);
        w
    }

    /// After a success: the next failure waits the first wait again.
    pub fn reset(&mut self) {
        self.wait = self.first;
    }

    /// Sleeps the next wait.
    pub async fn sleep(&mut self) {
        tokio::time::sleep(self.next_wait()).await;
    }
}

/// Retries `f` with doubling waits while its error is transient (the server may come back).
pub async fn with_backoff<T, F: std::future::Future<Output = Result<T, ClientError>>>(
    what: &str,
    f: impl FnMut() -> F,
) -> Result<T, ClientError> {
    with_backoff_while(what, f, || true).await
}

/// How often a wait between tries looks whether to go on.
const LOOK: Duration = Duration::from_millis(250);

/// [`with_backoff`] while `go_on()` holds (looked at during the waits too): once it does not,
/// the last transient error is given back.
pub async fn with_backoff_while<T, F: std::future::Future<Output = Result<T, ClientError>>>(
    what: &str,
    mut f: impl FnMut() -> F,
    go_on: impl Fn() -> bool,
) -> Result<T, ClientError> {
    let mut backoff = Backoff::default();
    loop {
        match f().await {
            Err(e) if e.transient() && go_on() => {
                let wait = backoff.next_wait();
                tracing::warn!("{what}: {e}; retrying in {}s", wait.as_secs_f32());
                let until = tokio::time::Instant::now() + wait;
                while tokio::time::Instant::now() < until && go_on() {
                    tokio::time::sleep(LOOK.min(until - tokio::time::Instant::now())).await;
                }
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_limit_and_reset() {
        let mut b = Backoff::from(Duration::from_secs(1));
        let waits: Vec<u64> = (0..7).map(|_| b.next_wait().as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30]);
        b.reset();
        assert_eq!(b.next_wait(), Duration::from_secs(1));
    }
}
