//! Control of a running data plane from the node: a job for every worker, applied between two
//! packets, and what they have counted.

use std::sync::Arc;

use netstack::{Counters, Router};
use tokio::sync::{mpsc, oneshot};

use super::{DataplaneError, IoCounters, Snapshot, TunnelEnds};

/// Control for one worker, run between two packets.
pub(super) type Job = Box<dyn FnOnce(&mut Router, &IoCounters) + Send>;

/// Sends control to a running data plane. Cheap to clone.
#[derive(Clone, Debug)]
pub struct DataplaneHandle {
    /// One per worker (per router and queue of the device).
    jobs: Vec<mpsc::UnboundedSender<Job>>,
    tunnel: TunnelEnds,
}

impl DataplaneHandle {
    pub(super) fn new(
        jobs: Vec<mpsc::UnboundedSender<Job>>,
        tunnel: TunnelEnds,
    ) -> DataplaneHandle {
        DataplaneHandle { jobs, tunnel }
    }

    /// The port a tunnel in the node's process attaches to (see [`TunnelEnds`]).
    pub fn tunnel(&self) -> TunnelEnds {
        self.tunnel.clone()
    }

    /// Runs `f` on every router between two packets and returns the first router's result:
    /// the routers sharing the traffic hold the same control (VPN, containers, mappings,
    /// scopes), so control answers alike on each. What is counted or tracked differs by router;
    /// [`DataplaneHandle::snapshot`] adds it up.
    pub async fn with<T: Send + 'static>(
        &self,
        f: impl Fn(&mut Router) -> T + Send + Sync + 'static,
    ) -> Result<T, DataplaneError> {
        let f = Arc::new(f);
        let answers = self.ask(move |r, _| f(r))?;
        let mut first = None;
        for answer in answers {
            let t = answer.await.map_err(|_| DataplaneError::Stopped)?;
            first.get_or_insert(t);
        }
        first.ok_or(DataplaneError::Stopped)
    }

    /// Queues `f` on every worker; its answers, in the workers' order.
    fn ask<T: Send + 'static>(
        &self,
        f: impl Fn(&mut Router, &IoCounters) -> T + Send + Sync + 'static,
    ) -> Result<Vec<oneshot::Receiver<T>>, DataplaneError> {
        let f = Arc::new(f);
        let mut answers = Vec::with_capacity(self.jobs.len());
        for jobs in &self.jobs {
            let (tx, rx) = oneshot::channel();
            let f = Arc::clone(&f);
            let job: Job = Box::new(move |r, io| {
                let _ = tx.send(f(r, io));
            });
            jobs.send(job).map_err(|_| DataplaneError::Stopped)?;
            answers.push(rx);
        }
        Ok(answers)
    }

    /// What the routers and the device have counted, read between two batches of packets and
    /// added up over the workers.
    pub async fn snapshot(&self) -> Result<Snapshot, DataplaneError> {
        let answers = self.ask(|r, io| Snapshot {
            counters: r.counters(),
            io: io.clone(),
            io_by_queue: vec![io.clone()],
            connections: r.connections(),
            capacity: r.capacity(),
            fragments: r.fragmented(),
            runs: r.run_traffic(),
        })?;
        let mut total = Snapshot::default();
        for answer in answers {
            total.add(answer.await.map_err(|_| DataplaneError::Stopped)?);
        }
        Ok(total)
    }

    /// The routers' and the device's counters.
    pub async fn counters(&self) -> Result<(Counters, IoCounters), DataplaneError> {
        self.snapshot().await.map(|s| (s.counters, s.io))
    }
}
