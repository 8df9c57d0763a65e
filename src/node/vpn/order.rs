//! The start-up order, as vantage6 has it: try the saved profile; failing that, renew its key
//! pair (`POST /vpn/update`) and try again; failing that, or with no profile, get a new one
//! (`GET /vpn`) and try again. All failed: the node runs on without VPN, with the reasons, and
//! [`super::lifecycle`] keeps trying in the background.
//!
//! Unlike vantage6, a VPN server that sent not a single packet ends the order at once: a
//! renewed or new profile carries a new certificate, and no certificate makes a silent server
//! answer. So a node started while the VPN server is down tries one profile, asks the server
//! for no certificate, and runs on after one connect timeout.

use std::net::Ipv4Addr;

use super::{Profiles, StepError, Tunnel};

/// Where the profile that worked came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Existing,
    Renewed,
    New,
}

/// How the start-up ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Connected {
        address: Ipv4Addr,
        source: Source,
    },
    /// No VPN; each reason says which step failed and why.
    NoVpn {
        reasons: Vec<String>,
    },
}

/// Whether to go on with the next step of the order.
enum Next {
    Done(Outcome),
    Try,
    Stop,
}

async fn try_with(
    tunnel: &mut impl Tunnel,
    ovpn: &str,
    source: Source,
    reasons: &mut Vec<String>,
) -> Next {
    if source != Source::Existing {
        if let Err(e) = tunnel.save(ovpn) {
            reasons.push(format!("cannot keep the {source:?} profile: {e}"));
        }
    }
    match tunnel.connect(ovpn).await {
        Ok(address) => Next::Done(Outcome::Connected { address, source }),
        Err(e) => {
            reasons.push(format!("{source:?} profile did not connect: {e}"));
            if e.server_silent() {
                reasons.push("no new certificate asked for while the VPN server is silent".into());
                Next::Stop
            } else {
                Next::Try
            }
        }
    }
}

/// Runs the order with the saved profile `existing`, if any.
pub async fn bring_up(
    existing: Option<&str>,
    tunnel: &mut impl Tunnel,
    profiles: &impl Profiles,
) -> Outcome {
    let mut reasons = Vec::new();
    if let Some(current) = existing {
        match try_with(tunnel, current, Source::Existing, &mut reasons).await {
            Next::Done(done) => return done,
            Next::Stop => return Outcome::NoVpn { reasons },
            Next::Try => {}
        }
        match profiles.renew(current).await {
            Ok(Some(renewed)) => {
                match try_with(tunnel, &renewed, Source::Renewed, &mut reasons).await {
                    Next::Done(done) => return done,
                    Next::Stop => return Outcome::NoVpn { reasons },
                    Next::Try => {}
                }
            }
            Ok(None) => {}
            Err(e) => reasons.push(format!("renewal (POST /vpn/update) failed: {e}")),
        }
    }
    match profiles.fetch_new().await {
        Ok(new) => {
            if let Next::Done(done) = try_with(tunnel, &new, Source::New, &mut reasons).await {
                return done;
            }
        }
        Err(e) => reasons.push(format!("a new profile (GET /vpn) failed: {e}")),
    }
    Outcome::NoVpn { reasons }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::vpn::Change;
    use std::cell::RefCell;

    /// Scripted steps: which profiles connect, what the server answers, whether the VPN server
    /// answers at all; records the calls.
    #[derive(Default)]
    struct Script {
        good: Vec<&'static str>,
        renew: Option<&'static str>,
        /// Profiles of a kind with nothing to renew (WireGuard's).
        unrenewable: bool,
        new: Option<&'static str>,
        silent: bool,
        calls: Vec<String>,
    }

    /// A scripted failure: "silent" when the VPN server sent nothing.
    impl StepError for String {
        fn server_silent(&self) -> bool {
            self.starts_with("silent")
        }
    }

    /// The script as both the tunnel and the server (they take turns, never at once).
    #[derive(Clone, Copy)]
    struct Shared<'a>(&'a RefCell<Script>);

    impl Tunnel for Shared<'_> {
        type Error = String;
        fn saved_profile(&self) -> Option<String> {
            None
        }
        fn save(&mut self, ovpn: &str) -> Result<(), String> {
            self.0.borrow_mut().calls.push(format!("save {ovpn}"));
            Ok(())
        }
        async fn connect(&mut self, ovpn: &str) -> Result<Ipv4Addr, String> {
            let mut s = self.0.borrow_mut();
            s.calls.push(format!("connect {ovpn}"));
            if s.silent {
                Err("silent: no packet from the VPN server".into())
            } else if s.good.contains(&ovpn) {
                Ok(Ipv4Addr::new(10, 76, 0, 2))
            } else {
                Err("TLS handshake failed".into())
            }
        }
        async fn next_change(&mut self) -> Change {
            std::future::pending().await
        }
        async fn recover(&mut self) -> Result<Ipv4Addr, String> {
            Err("not in the start-up order".into())
        }
        async fn remove(&mut self) {}
    }

    impl Profiles for Shared<'_> {
        type Error = String;
        async fn renew(&self, _: &str) -> Result<Option<String>, String> {
            let mut s = self.0.borrow_mut();
            s.calls.push("renew".into());
            if s.unrenewable {
                return Ok(None);
            }
            s.renew
                .map(|r| Some(r.to_string()))
                .ok_or_else(|| "501 This server does not support VPN".into())
        }
        async fn fetch_new(&self) -> Result<String, String> {
            let mut s = self.0.borrow_mut();
            s.calls.push("new".into());
            s.new
                .map(str::to_string)
                .ok_or_else(|| "503 the VPN server is unreachable".into())
        }
    }

    fn run(existing: Option<&str>, s: &mut Script) -> Outcome {
        let cell = RefCell::new(std::mem::take(s));
        let shared = Shared(&cell);
        let outcome = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("rt")
            .block_on(bring_up(existing, &mut shared.clone(), &shared));
        *s = cell.into_inner();
        outcome
    }

    #[test]
    fn the_existing_profile_is_tried_first() {
        let mut s = Script {
            good: vec!["old"],
            ..Script::default()
        };
        assert_eq!(
            run(Some("old"), &mut s),
            Outcome::Connected {
                address: Ipv4Addr::new(10, 76, 0, 2),
                source: Source::Existing
            }
        );
        assert_eq!(s.calls, ["connect old"]);
    }

    #[test]
    fn a_broken_profile_is_renewed_then_replaced() {
        let mut s = Script {
            good: vec!["renewed"],
            renew: Some("renewed"),
            new: Some("new"),
            ..Script::default()
        };
        assert!(matches!(
            run(Some("old"), &mut s),
            Outcome::Connected {
                source: Source::Renewed,
                ..
            }
        ));
        assert_eq!(
            s.calls,
            ["connect old", "renew", "save renewed", "connect renewed"]
        );

        // Renewal refused by the server, or nothing to renew (a kept WireGuard profile: one
        // new profile follows, no renewal, so one connect timeout less while the hub is
        // silent): either way a new profile.
        for unrenewable in [false, true] {
            let mut s = Script {
                good: vec!["new"],
                renew: None,
                unrenewable,
                new: Some("new"),
                ..Script::default()
            };
            assert!(matches!(
                run(Some("old"), &mut s),
                Outcome::Connected {
                    source: Source::New,
                    ..
                }
            ));
            assert_eq!(
                s.calls,
                ["connect old", "renew", "new", "save new", "connect new"]
            );
        }
    }

    #[test]
    fn no_profile_fetches_a_new_one_and_failure_says_why() {
        let mut s = Script {
            good: vec!["new"],
            new: Some("new"),
            ..Script::default()
        };
        assert!(matches!(
            run(None, &mut s),
            Outcome::Connected {
                source: Source::New,
                ..
            }
        ));
        let mut s = Script::default();
        let Outcome::NoVpn { reasons } = run(Some("old"), &mut s) else {
            panic!("must fail")
        };
        assert_eq!(reasons.len(), 3, "{reasons:?}");
        assert!(reasons[0].contains("Existing profile did not connect: TLS handshake failed"));
        assert!(reasons[1].contains("POST /vpn/update") && reasons[1].contains("501"));
        assert!(reasons[2].contains("GET /vpn") && reasons[2].contains("503"));
    }

    #[test]
    fn a_silent_vpn_server_gets_one_try_and_no_new_certificate() {
        let mut s = Script {
            renew: Some("renewed"),
            new: Some("new"),
            silent: true,
            ..Script::default()
        };
        let Outcome::NoVpn { reasons } = run(Some("old"), &mut s) else {
            panic!("must fail")
        };
        assert_eq!(s.calls, ["connect old"], "no renewal, no new profile");
        assert!(reasons.iter().any(|r| r.contains("no new certificate")));

        // Without a saved profile the one try needs a new one, and stops there.
        let mut s = Script {
            new: Some("new"),
            silent: true,
            ..Script::default()
        };
        assert!(matches!(run(None, &mut s), Outcome::NoVpn { .. }));
        assert_eq!(s.calls, ["new", "save new", "connect new"]);
    }
}
