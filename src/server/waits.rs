//! The long-polls of `GET /vpn/peers?known=`: a few per node and a bounded number in all, and
//! none of them costs anything while nothing changes. They wait on one shared change signal,
//! which this process's changes raise at once and another process's (on the same database) at
//! the next look at the database's change counter, one cheap read a second for the process.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use crate::api::NodeId;
use crate::server::store::{self, Store};

/// Waits one node may hold; a further one ends the oldest (a node follows its peers with one).
pub const PER_NODE: usize = 2;
/// How often the database's change counter is read.
const LOOK: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
struct Book {
    next: u64,
    total: usize,
    by_node: HashMap<NodeId, VecDeque<(u64, Arc<Notify>)>>,
}

/// The waits under way.
#[derive(Debug)]
pub struct Waits {
    book: Mutex<Book>,
    max: usize,
}

/// One wait's place; given back when dropped. `ended` is notified when a newer wait of the
/// same node takes its place.
#[derive(Debug)]
pub struct Wait {
    waits: Arc<Waits>,
    node: NodeId,
    id: u64,
    pub ended: Arc<Notify>,
}

impl Waits {
    pub fn new(max: usize) -> Waits {
        Waits {
            book: Mutex::default(),
            max,
        }
    }

    /// A place for a wait of `node`: the oldest of its own if it holds [`PER_NODE`] already,
    /// else a new one while fewer than the maximum are under way; `None` past that.
    pub fn enter(self: &Arc<Self>, node: NodeId) -> Option<Wait> {
        let mut b = crate::sync::lock(&self.book);
        let held = b.by_node.get(&node).map_or(0, VecDeque::len);
        if held >= PER_NODE {
            if let Some((_, oldest)) = b.by_node.get_mut(&node).and_then(VecDeque::pop_front) {
                oldest.notify_one();
                b.total -= 1;
            }
        } else if b.total >= self.max {
            return None;
        }
        b.next += 1;
        let id = b.next;
        let ended = Arc::new(Notify::new());
        b.by_node
            .entry(node)
            .or_default()
            .push_back((id, ended.clone()));
        b.total += 1;
        Some(Wait {
            waits: self.clone(),
            node,
            id,
            ended,
        })
    }

    /// How many waits are under way.
    pub fn waiting(&self) -> usize {
        self.book.lock().map_or(0, |b| b.total)
    }
}

impl Drop for Wait {
    fn drop(&mut self) {
        let mut b = crate::sync::lock(&self.waits.book);
        let Some(queue) = b.by_node.get_mut(&self.node) else {
            return;
        };
        let before = queue.len();
        queue.retain(|(id, _)| *id != self.id);
        let gone = before - queue.len();
        if queue.is_empty() {
            b.by_node.remove(&self.node);
        }
        b.total -= gone;
    }
}

/// Follows the database's change counter and raises `changes` when another process counted
/// one; runs until the server ends.
pub async fn follow_changes(store: Store, changes: Arc<tokio::sync::watch::Sender<u64>>) {
    let mut seen = None;
    loop {
        let now = match store.connection().await {
            Ok(mut db) => store::changes(&mut db).await.ok(),
            Err(_) => None,
        };
        if now.is_some() && seen.is_some() && now != seen {
            changes.send_modify(|v| *v = v.wrapping_add(1));
        }
        if now.is_some() {
            seen = now;
        }
        tokio::time::sleep(LOOK).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_holds_a_few_waits_and_all_together_are_bounded() {
        let waits = Arc::new(Waits::new(3));
        let (a, b) = (NodeId(1), NodeId(2));
        let first = waits.enter(a).expect("first");
        let second = waits.enter(a).expect("second");
        let third = waits.enter(a).expect("a third replaces the first");
        assert_eq!(waits.waiting(), PER_NODE);
        // The first was told to end (a permit is stored for it).
        let told = first.ended.clone();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(1), told.notified())
                .await
                .expect("the oldest wait is ended");
        });
        drop(first);
        assert_eq!(
            waits.waiting(),
            PER_NODE,
            "dropping a replaced wait gives nothing back"
        );
        let other = waits.enter(b).expect("room for one more");
        assert!(waits.enter(NodeId(3)).is_none(), "the bound in all");
        drop(second);
        drop(third);
        drop(other);
        assert_eq!(waits.waiting(), 0);
        assert!(waits.enter(NodeId(3)).is_some());
    }
}
