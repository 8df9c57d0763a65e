//! The VPN over the node's life: brought up at start (the start-up [`order`]; without a working
//! VPN the node runs on), routed through the router and registered at the server, followed,
//! and brought back whenever the tunnel goes away. It speaks to a [`Tunnel`] and, for
//! everything else, to a [`Seat`]: the node's, or a test's.

use std::net::Ipv4Addr;
use std::time::Duration;

use super::order::{self, Outcome, Source};
use super::{Change, Profiles, Tunnel};
use crate::node::retry::Backoff;
use crate::node::status::VpnState;

/// What the VPN's life needs of the rest of the node: profiles from the server, the router, the
/// server's record of the address, and the node's own record.
pub trait Seat: Profiles {
    type PlumbError: std::fmt::Display;
    /// Routes the tunnel through the router with `address`, and tells the server.
    fn plumb(
        &self,
        address: Ipv4Addr,
    ) -> impl std::future::Future<Output = Result<(), Self::PlumbError>>;
    /// Holds back what goes to peers while the tunnel is not connected.
    fn pause(&self) -> impl std::future::Future<Output = ()>;
    /// Records where the VPN is, for `algonet node status` and the metrics.
    fn record(&self, state: VpnState);
    /// Records that the tunnel came back after it had connected.
    fn reconnected(&self);
}

/// After the start: keep trying until the tunnel connects, then follow it.
#[derive(Debug)]
pub struct Follow<S, T> {
    seat: S,
    tunnel: T,
    connected: bool,
}

/// Brings the VPN up with `tunnel`. Never fails the node: without a working VPN it warns once,
/// with the reasons, and the [`Follow`] it returns keeps trying; connected, the [`Follow`]
/// follows the tunnel. `None`: the tunnel connected but the router could not take it (the node
/// runs without VPN).
pub async fn start<S: Seat, T: Tunnel>(seat: S, mut tunnel: T) -> Option<Follow<S, T>> {
    let existing = tunnel.saved_profile();
    match order::bring_up(existing.as_deref(), &mut tunnel, &seat).await {
        Outcome::Connected { address, source } => {
            tracing::info!("VPN connected with address {address} ({source:?} profile)");
            match seat.plumb(address).await {
                Ok(()) => Some(Follow {
                    seat,
                    tunnel,
                    connected: true,
                }),
                Err(e) => {
                    seat.record(VpnState::Off);
                    tracing::warn!("VPN connected, but the router could not be set up: {e}; running without VPN");
                    tunnel.remove().await;
                    None
                }
            }
        }
        Outcome::NoVpn { reasons } => {
            seat.record(VpnState::Retrying);
            tracing::warn!(
                "running without VPN for now: {}; trying again in the background",
                reasons.join("; ")
            );
            Some(Follow {
                seat,
                tunnel,
                connected: false,
            })
        }
    }
}

/// How often a retry goes through the whole start-up order rather than only the saved profile.
const FULL_ORDER_EVERY: u32 = 10;

impl<S: Seat, T: Tunnel> Follow<S, T> {
    /// Runs for the rest of the node's life.
    pub async fn run(mut self) {
        if !self.connected {
            self.until_up(false).await;
        }
        self.watch().await;
    }

    /// Tries until the tunnel connects and the router takes it, with doubling waits up to
    /// 30 s, never giving up: after a failed start (`lost` false; from 5 s) a try connects with
    /// the kept profile, after a lost tunnel (from at once, then 1 s) [`Tunnel::recover`]
    /// brings back what went away. Every tenth try, and every try while no usable profile is
    /// kept (an expired one is not), goes through the whole start-up order instead: the kept
    /// profile may have been revoked or its key forgotten, and each renewal or new OpenVPN
    /// profile is a new certificate, of which the server allows a node only a few an hour.
    async fn until_up(&mut self, lost: bool) {
        let mut backoff = Backoff::from(Duration::from_secs(if lost { 1 } else { 5 }));
        let mut wait = if lost {
            Duration::ZERO
        } else {
            backoff.next_wait()
        };
        for attempt in 1u32.. {
            tokio::time::sleep(wait).await;
            let saved = self.tunnel.saved_profile();
            let outcome = match saved {
                Some(p) if attempt % FULL_ORDER_EVERY != 0 => {
                    let again = if lost {
                        self.tunnel.recover().await
                    } else {
                        self.tunnel.connect(&p).await
                    };
                    match again {
                        Ok(address) => Outcome::Connected {
                            address,
                            source: Source::Existing,
                        },
                        Err(e) => Outcome::NoVpn {
                            reasons: vec![format!("the saved profile did not connect: {e}")],
                        },
                    }
                }
                saved => order::bring_up(saved.as_deref(), &mut self.tunnel, &self.seat).await,
            };
            let reasons = match outcome {
                Outcome::Connected { address, .. } => {
                    if lost {
                        self.seat.reconnected();
                    }
                    match self.seat.plumb(address).await {
                        Ok(()) => {
                            let how = if lost { "back" } else { "connected" };
                            tracing::info!("VPN {how} with address {address} (try {attempt})");
                            return;
                        }
                        // A tunnel that came back stays: the router is tried again at its
                        // next change.
                        Err(e) if lost => {
                            tracing::warn!("re-plumbing the VPN: {e}");
                            return;
                        }
                        Err(e) => {
                            self.tunnel.remove().await;
                            vec![format!("the router could not be set up: {e}")]
                        }
                    }
                }
                Outcome::NoVpn { reasons } => reasons,
            };
            wait = backoff.next_wait();
            tracing::info!(
                "VPN still not up: {}; next try in {}s",
                reasons.join("; "),
                wait.as_secs()
            );
        }
    }

    /// Follows the tunnel: a new address or a reconnect re-plumbs and re-registers; a tunnel
    /// down pauses forwarding to peers until it connects again; a lost tunnel is brought back.
    async fn watch(&mut self) {
        loop {
            match self.tunnel.next_change().await {
                Change::Connected(a) => {
                    tracing::info!("VPN connected again with address {a}");
                    self.seat.reconnected();
                    if let Err(e) = self.seat.plumb(a).await {
                        tracing::warn!("re-plumbing the VPN: {e}");
                    }
                }
                Change::Down(state) => {
                    tracing::info!("VPN state {state}; forwarding to peers paused until CONNECTED");
                    self.seat.record(VpnState::Tunnel(state));
                    self.seat.pause().await;
                }
                Change::Lost(why) => {
                    tracing::warn!("{why}; bringing the tunnel back");
                    self.seat.record(VpnState::Lost);
                    self.seat.pause().await;
                    self.until_up(true).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::vpn::StepError;
    use crate::sync::lock;
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};
    use tokio::sync::mpsc;

    fn note(log: &Mutex<Vec<String>>, what: impl Into<String>) {
        lock(log).push(what.into());
    }

    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 76, 0, last)
    }

    /// A failure of the fake tunnel: "silent" when its server sent nothing.
    #[derive(Debug)]
    struct Failed(&'static str);

    impl std::fmt::Display for Failed {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl StepError for Failed {
        fn server_silent(&self) -> bool {
            self.0 == "silent"
        }
    }

    /// A tunnel that answers as scripted: each connect and recover takes the next result; the
    /// test sends the changes of the connected tunnel.
    struct Fake {
        saved: Option<String>,
        connects: VecDeque<Result<Ipv4Addr, &'static str>>,
        recovers: VecDeque<Result<Ipv4Addr, &'static str>>,
        changes: mpsc::UnboundedReceiver<Change>,
        log: Arc<Mutex<Vec<String>>>,
    }

    impl Tunnel for Fake {
        type Error = Failed;
        fn saved_profile(&self) -> Option<String> {
            self.saved.clone()
        }
        fn save(&mut self, profile: &str) -> Result<(), Failed> {
            self.saved = Some(profile.into());
            Ok(())
        }
        async fn connect(&mut self, profile: &str) -> Result<Ipv4Addr, Failed> {
            note(&self.log, format!("connect {profile}"));
            self.connects
                .pop_front()
                .unwrap_or(Err("silent"))
                .map_err(Failed)
        }
        async fn next_change(&mut self) -> Change {
            match self.changes.recv().await {
                Some(c) => c,
                None => std::future::pending().await,
            }
        }
        async fn recover(&mut self) -> Result<Ipv4Addr, Failed> {
            note(&self.log, "recover");
            self.recovers
                .pop_front()
                .unwrap_or(Err("down"))
                .map_err(Failed)
        }
        async fn remove(&mut self) {
            note(&self.log, "remove");
        }
    }

    /// The rest of the node, as a log of what was asked of it.
    #[derive(Clone)]
    struct Seen {
        log: Arc<Mutex<Vec<String>>>,
        new_profile: Option<&'static str>,
    }

    impl Profiles for Seen {
        type Error = String;
        async fn renew(&self, _: &str) -> Result<Option<String>, String> {
            note(&self.log, "renew");
            Err("501".into())
        }
        async fn fetch_new(&self) -> Result<String, String> {
            note(&self.log, "new profile");
            self.new_profile.map(str::to_string).ok_or("503".into())
        }
    }

    impl Seat for Seen {
        type PlumbError = String;
        async fn plumb(&self, address: Ipv4Addr) -> Result<(), String> {
            note(&self.log, format!("plumb {address}"));
            Ok(())
        }
        async fn pause(&self) {
            note(&self.log, "pause");
        }
        fn record(&self, state: VpnState) {
            note(&self.log, format!("state {}", state.name()));
        }
        fn reconnected(&self) {
            note(&self.log, "reconnected");
        }
    }

    fn fake(
        saved: Option<&str>,
        connects: Vec<Result<Ipv4Addr, &'static str>>,
        recovers: Vec<Result<Ipv4Addr, &'static str>>,
    ) -> (Fake, Seen, mpsc::UnboundedSender<Change>) {
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, changes) = mpsc::unbounded_channel();
        let tunnel = Fake {
            saved: saved.map(str::to_string),
            connects: connects.into(),
            recovers: recovers.into(),
            changes,
            log: log.clone(),
        };
        let seat = Seen {
            log,
            new_profile: Some("new"),
        };
        (tunnel, seat, tx)
    }

    /// Waits (in the paused clock's time) until the log holds `n` entries, and takes them.
    async fn take(seat: &Seen, n: usize) -> Vec<String> {
        for _ in 0..100_000 {
            if lock(&seat.log).len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        std::mem::take(&mut *lock(&seat.log))
    }

    /// Connected at start, the life follows the tunnel: a tunnel down pauses the peers, back
    /// with a new address re-plumbs, a lost tunnel is brought back after a failed try.
    #[tokio::test(start_paused = true)]
    async fn a_connected_tunnel_is_followed_down_up_and_back_from_lost() {
        let (tunnel, seat, changes) = fake(Some("saved"), vec![Ok(ip(2))], vec![]);
        let mut tunnel = tunnel;
        tunnel.recovers = [Err("container gone"), Ok(ip(2))].into();
        let follow = start(seat.clone(), tunnel).await.expect("connected");
        assert_eq!(take(&seat, 2).await, ["connect saved", "plumb 10.76.0.2"]);
        let running = tokio::spawn(follow.run());

        changes
            .send(Change::Down("RECONNECTING".into()))
            .expect("send");
        assert_eq!(take(&seat, 2).await, ["state RECONNECTING", "pause"]);
        changes.send(Change::Connected(ip(7))).expect("send");
        assert_eq!(take(&seat, 2).await, ["reconnected", "plumb 10.76.0.7"]);
        changes
            .send(Change::Lost("socket closed".into()))
            .expect("send");
        assert_eq!(
            take(&seat, 6).await,
            [
                "state lost",
                "pause",
                "recover",
                "recover",
                "reconnected",
                "plumb 10.76.0.2"
            ]
        );
        running.abort();
    }

    /// A lost tunnel whose kept profile no longer connects (revoked, its key forgotten) gets
    /// a new profile on the tenth try; with no usable profile kept (one that expired) the
    /// first try already goes through the whole order.
    #[tokio::test(start_paused = true)]
    async fn a_lost_tunnel_gets_a_new_profile_when_the_kept_one_fails() {
        let (tunnel, seat, changes) = fake(Some("saved"), vec![Ok(ip(2))], vec![]);
        let mut tunnel = tunnel;
        // The saved profile at the whole order's first step fails, the new one connects.
        tunnel.connects.extend([Err("refused"), Ok(ip(2))]);
        let follow = start(seat.clone(), tunnel).await.expect("connected");
        take(&seat, 2).await;
        let running = tokio::spawn(follow.run());
        changes.send(Change::Lost("expired".into())).expect("send");
        let log = take(&seat, 2 + 9 + 6).await;
        let recovers = log.iter().filter(|l| *l == "recover").count();
        assert_eq!(recovers, 9, "{log:?}");
        assert_eq!(
            log[log.len() - 6..],
            [
                "connect saved",
                "renew",
                "new profile",
                "connect new",
                "reconnected",
                "plumb 10.76.0.2"
            ]
        );
        running.abort();

        let (mut tunnel, seat, changes) = fake(Some("saved"), vec![Ok(ip(2))], vec![]);
        tunnel.connects.push_back(Ok(ip(2)));
        let follow = start(seat.clone(), tunnel).await.expect("connected");
        take(&seat, 2).await;
        let mut follow = follow;
        follow.tunnel.saved = None;
        let running = tokio::spawn(follow.run());
        changes.send(Change::Lost("expired".into())).expect("send");
        assert_eq!(
            take(&seat, 6).await,
            [
                "state lost",
                "pause",
                "new profile",
                "connect new",
                "reconnected",
                "plumb 10.76.0.2"
            ]
        );
        running.abort();
    }

    /// A silent VPN server at start: one try, no new certificate, the node runs on; the
    /// background tries use the saved profile and connect once the server answers.
    #[tokio::test(start_paused = true)]
    async fn without_a_tunnel_the_node_runs_on_and_keeps_trying() {
        let (tunnel, seat, _changes) = fake(
            Some("saved"),
            vec![Err("silent"), Err("silent"), Ok(ip(3))],
            vec![],
        );
        let follow = start(seat.clone(), tunnel).await.expect("keeps trying");
        assert_eq!(take(&seat, 2).await, ["connect saved", "state retrying"]);
        let running = tokio::spawn(follow.run());
        assert_eq!(
            take(&seat, 3).await,
            ["connect saved", "connect saved", "plumb 10.76.0.3"]
        );
        running.abort();
    }
}
