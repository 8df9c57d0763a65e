//! A TUN device `tun0` standing in for the node's routers at a tunnel's port: what the tunnel
//! hands in is written to `tun0`, what is read from `tun0` goes to the tunnel. Tests of the
//! tunnel itself (handshakes, hubs, profiles) put the node's address on `tun0` and use sockets;
//! the routers' own path is shown with a data plane (`tests/netns_wireguard.rs`).

use algonet::net::dataplane::{standalone, TunnelEnds};
use algonet::net::links::{set_sysctl, IfName, Netlink};
use tokio::sync::oneshot;

use crate::TestNs;

/// Work on a thread of its own in a test's namespace, told to stop and waited for when dropped.
#[derive(Debug)]
pub struct Running {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), algonet::net::netns::NetnsError>>>,
}

impl Running {
    /// Runs `work` in `ns` until the receiver it is given says stop; returns once `work` has
    /// sent on the ready channel it is given.
    pub fn start<F, Fut>(ns: &TestNs, work: F) -> Running
    where
        F: FnOnce(std::sync::mpsc::Sender<()>, oneshot::Receiver<()>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()>,
    {
        let (stop, stopped) = oneshot::channel();
        let (ready, made) = std::sync::mpsc::channel();
        let thread = ns
            .ns
            .spawn(move || work(ready, stopped))
            .expect("a thread in the namespace");
        made.recv().expect("the work started");
        Running {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The running stand-in; dropping it removes `tun0`.
pub type StandIn = Running;

/// Makes `tun0` in `ns` with `mtu` and the port a tunnel attaches to.
pub fn stand_in(ns: &TestNs, mtu: u16) -> (TunnelEnds, StandIn) {
    let (mut router, ends) = standalone();
    let running = Running::start(ns, move |ready, mut stopped| async move {
        let name = IfName::new("tun0").expect("name");
        let dev = algonet::net::tun::open(&name, false, false).expect("tun0");
        let nl = Netlink::connect().expect("netlink");
        nl.configure(&name, Some(u32::from(mtu)), None)
            .await
            .expect("tun0 up");
        let _ = set_sysctl("net/ipv6/conf/tun0/disable_ipv6", "1");
        ready.send(()).expect("the test waits");
        let mut buf = vec![0u8; 65_536];
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                Some(p) = router.recv() => {
                    let _ = dev.send(&p).await;
                }
                Ok(n) = dev.recv(&mut buf) => {
                    router.send(&buf[..n]);
                }
            }
        }
    });
    (ends, running)
}
