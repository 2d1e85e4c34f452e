//! The hub: the delegate sockets open on this manager, by instance.
//!
//! Each socket's task owns its WebSocket; the hub holds only a sender to it, so anything
//! (a revocation, a deletion, a reconnect of the same instance, shutdown) can reach a
//! socket without touching the socket itself. A reconnect replaces the old entry and tells
//! the old socket to close; each entry carries a generation so the old socket's cleanup
//! cannot remove its replacement.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use switchboard_domain::{GroupId, InstanceId, TokenId};
use switchboard_protocol::socket::ServerMessage;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

/// What the hub asks a socket's task to do. Boxed, so that an item is 16 bytes: every
/// socket's channel allocates a block of 32 of them when it is made, idle or not.
#[derive(Debug, Clone, PartialEq)]
pub enum Outbound {
    Send(Box<ServerMessage>),
    /// Send a close frame with this code and reason, then end.
    Close(Box<(u16, String)>),
}

/// How many outbound messages may wait for one socket. A delegate that reads slower than
/// this is sent to is closed rather than allowed to grow the manager's memory.
const OUTBOUND_BUFFER: usize = 64;

#[derive(Debug)]
struct Entry {
    generation: u64,
    token: TokenId,
    group: GroupId,
    tx: mpsc::Sender<Outbound>,
}

/// The open sockets of this manager.
#[derive(Debug)]
pub struct Hub {
    /// A std mutex: every critical section is a few map operations, never an await.
    sockets: Mutex<HashMap<InstanceId, Entry>>,
    generations: AtomicU64,
    /// The `max_sockets` places: one is taken before the upgrade, so the cap holds while
    /// upgrades are in flight, and given back when the socket's task ends.
    places: Arc<Semaphore>,
    /// Set by [`Hub::shut_down`].
    shutting_down: AtomicBool,
}

/// A hub with no cap of its own (the most places a semaphore holds).
impl Default for Hub {
    fn default() -> Self {
        Self::new(Semaphore::MAX_PERMITS)
    }
}

/// A socket's membership in the hub, returned by [`Hub::attach`].
#[derive(Debug)]
pub struct Attached {
    pub generation: u64,
    pub rx: mpsc::Receiver<Outbound>,
}

impl Hub {
    /// A hub holding at most `max_sockets` sockets at once.
    pub fn new(max_sockets: usize) -> Self {
        Self {
            sockets: Mutex::default(),
            generations: AtomicU64::new(0),
            places: Arc::new(Semaphore::new(max_sockets.min(Semaphore::MAX_PERMITS))),
            shutting_down: AtomicBool::new(false),
        }
    }

    /// Takes one socket place, given back when the permit is dropped; `None` when all
    /// are taken.
    pub fn take_place(&self) -> Option<OwnedSemaphorePermit> {
        self.places.clone().try_acquire_owned().ok()
    }

    /// Registers the socket of `instance`, replacing (and closing) an older one.
    pub fn attach(&self, instance: InstanceId, token: TokenId, group: GroupId) -> Attached {
        let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = mpsc::channel(OUTBOUND_BUFFER);
        let old = self.lock().insert(
            instance,
            Entry {
                generation,
                token,
                group,
                tx,
            },
        );
        if let Some(old) = old {
            let reason = "replaced by a newer connection of the same instance".to_owned();
            let _ = old.tx.try_send(Outbound::Close(Box::new((
                switchboard_protocol::socket::close::REPLACED,
                reason,
            ))));
        }
        Attached { generation, rx }
    }

    /// Removes the socket if it is still the current one for `instance`. Returns whether it
    /// was (so the caller knows the instance is now disconnected, not replaced).
    pub fn detach(&self, instance: InstanceId, generation: u64) -> bool {
        let mut sockets = self.lock();
        match sockets.get(&instance) {
            Some(e) if e.generation == generation => {
                sockets.remove(&instance);
                true
            }
            _ => false,
        }
    }

    pub fn is_connected(&self, instance: InstanceId) -> bool {
        self.lock().contains_key(&instance)
    }

    /// The instances whose socket is open here.
    pub fn instances(&self) -> Vec<InstanceId> {
        self.lock().keys().copied().collect()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sends a message to one instance's socket; false when it has none here or its
    /// buffer is full.
    pub fn send(&self, instance: InstanceId, message: ServerMessage) -> bool {
        self.lock()
            .get(&instance)
            .is_some_and(|e| e.tx.try_send(Outbound::Send(Box::new(message))).is_ok())
    }

    /// The tokens and groups of the sockets open here, each once.
    pub fn targets(&self) -> (Vec<TokenId>, Vec<GroupId>) {
        let sockets = self.lock();
        let tokens: std::collections::BTreeSet<TokenId> = sockets.values().map(|e| e.token).collect();
        let groups: std::collections::BTreeSet<GroupId> = sockets.values().map(|e| e.group).collect();
        (tokens.into_iter().collect(), groups.into_iter().collect())
    }

    /// Tells every socket registered with `token` that it was revoked, then to close.
    /// Returns how many.
    pub fn close_token(&self, token: TokenId, code: u16, reason: &str) -> usize {
        let revoked = ServerMessage::Revoked {
            reason: reason.to_owned(),
        };
        self.close_where(|_, e| e.token == token, code, reason, Some(revoked))
    }

    /// Tells every socket of `group` to drain and close. Returns how many.
    pub fn close_group(&self, group: GroupId, code: u16, reason: &str) -> usize {
        let drain = ServerMessage::Drain {
            reason: reason.to_owned(),
        };
        self.close_where(|_, e| e.group == group, code, reason, Some(drain))
    }

    /// Tells the socket of `instance`, if it is here, to drain and close. Returns 1 if it
    /// was here, else 0.
    pub fn close_instance(&self, instance: InstanceId, code: u16, reason: &str) -> usize {
        let drain = ServerMessage::Drain {
            reason: reason.to_owned(),
        };
        self.close_where(|id, _| *id == instance, code, reason, Some(drain))
    }

    /// Shutdown: tells every socket to close, and from now on sockets that end are not
    /// instances lost but delegates leaving for another replica (or for this manager once
    /// it is back), with their tasks: see `crate::delegate_api::socket`.
    pub fn shut_down(&self, code: u16, reason: &str) -> usize {
        self.shutting_down.store(true, Ordering::Release);
        self.close_where(|_, _| true, code, reason, None)
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    fn close_where(
        &self,
        matches: impl Fn(&InstanceId, &Entry) -> bool,
        code: u16,
        reason: &str,
        first: Option<ServerMessage>,
    ) -> usize {
        let sockets = self.lock();
        let mut n = 0;
        for (_, entry) in sockets.iter().filter(|(id, e)| matches(id, e)) {
            if let Some(message) = &first {
                let _ = entry.tx.try_send(Outbound::Send(Box::new(message.clone())));
            }
            // A full buffer means the socket is hopelessly behind; dropping our sender
            // cannot close it from here, so the socket's own silence check ends it.
            let _ = entry.tx.try_send(Outbound::Close(Box::new((code, reason.to_owned()))));
            n += 1;
        }
        n
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<InstanceId, Entry>> {
        // A panic while holding this lock cannot leave the map half-updated (each
        // operation is a single insert or remove), so a poisoned lock is still usable.
        self.sockets.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_protocol::socket::close;

    #[test]
    fn the_socket_cap_holds_and_a_place_given_back_is_taken_again() {
        let hub = Hub::new(2);
        let first = hub.take_place().expect("a first place");
        let second = hub.take_place().expect("a second place");
        assert!(hub.take_place().is_none(), "a third socket past the cap of 2");
        drop(first);
        let again = hub.take_place();
        assert!(again.is_some(), "the place the first socket gave back");
        assert!(hub.take_place().is_none());
        drop((second, again));
        assert!(Hub::new(0).take_place().is_none(), "a cap of 0 takes no socket");
    }

    #[test]
    fn a_reconnect_replaces_and_closes_the_old_socket() {
        let hub = Hub::default();
        let (i, t, g) = (InstanceId::new(), TokenId::new(), GroupId::new());
        let mut old = hub.attach(i, t, g);
        let new = hub.attach(i, t, g);
        assert!(matches!(old.rx.try_recv(), Ok(Outbound::Close(c)) if c.0 == close::REPLACED));
        assert!(
            !hub.detach(i, old.generation),
            "the old socket's cleanup leaves the new one alone"
        );
        assert!(hub.is_connected(i));
        assert!(hub.detach(i, new.generation));
        assert!(!hub.is_connected(i));
    }

    #[test]
    fn revoking_a_token_closes_only_its_sockets() {
        let hub = Hub::default();
        let (t1, t2, g) = (TokenId::new(), TokenId::new(), GroupId::new());
        let mut a = hub.attach(InstanceId::new(), t1, g);
        let mut b = hub.attach(InstanceId::new(), t2, g);
        assert_eq!(hub.close_token(t1, close::TOKEN_REVOKED, "revoked"), 1);
        assert!(matches!(a.rx.try_recv(), Ok(Outbound::Send(m)) if matches!(*m, ServerMessage::Revoked { .. })));
        assert!(matches!(a.rx.try_recv(), Ok(Outbound::Close(c)) if c.0 == close::TOKEN_REVOKED));
        assert!(b.rx.try_recv().is_err());
    }

    #[test]
    fn deleting_a_group_drains_then_closes_its_sockets() {
        let hub = Hub::default();
        let g = GroupId::new();
        let mut a = hub.attach(InstanceId::new(), TokenId::new(), g);
        assert_eq!(hub.close_group(g, close::REMOVED, "deleted"), 1);
        assert!(matches!(a.rx.try_recv(), Ok(Outbound::Send(m)) if matches!(*m, ServerMessage::Drain { .. })));
        assert!(matches!(a.rx.try_recv(), Ok(Outbound::Close(c)) if c.0 == close::REMOVED));
    }
}

#[cfg(test)]
mod size {
    #[test]
    fn an_outbound_item_is_two_words() {
        // Each socket's channel allocates 32 items up front (tokio's block): 512 bytes
        // at this size, against 1.5 KiB with the message inline.
        assert_eq!(std::mem::size_of::<super::Outbound>(), 16);
    }
}
