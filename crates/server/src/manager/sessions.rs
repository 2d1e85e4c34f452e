//! [`Sessions`]: the delegate sessions (`sbs_…` credentials) this manager has checked
//! against the store and may trust from memory.
//!
//! The socket is authenticated against the store each time it connects. The task
//! endpoints (acquire, progress, result: several calls per task) take a session from
//! memory once it has been checked ([`Sessions`]), with no store read, for as long as
//! nothing can have made it invalid. What makes a session invalid, and how each replica
//! learns of it at once:
//!
//! - **Its token revoked, its group deleted** (with the group's instances), on any
//!   replica: the same signal that closes their sockets ([`super::cluster::Sockets::close`])
//!   forgets their sessions on every replica, before the sockets close.
//! - **Its instance removed by the retention sweep**: the replica that sweeps forgets the
//!   removed instances; the others need no signal, because the sweep removes only an
//!   instance silent for longer than `instance_retention`, so a session is trusted only
//!   until its instance's last heartbeat (as read when it was checked) plus that retention,
//!   less [`CLOCK_ALLOWANCE`], and is checked again after (which reads the newer
//!   heartbeat). A delegate that beats is checked once per retention period (6 h by
//!   default): that is the only expiry, so no other safety net is kept.
//! - **A gap in the replicas' signals**: while this replica may not hear the others
//!   ([`super::cluster::Cluster::is_listening`]), nothing is taken from memory and every
//!   session is forgotten when the gap starts and again when it ends.
//!
//! Disabling a group does not touch its sessions: a disabled delegate gets no new tasks
//! but finishes (acquires, reports) what it holds, as before, so it is no invalidation.
//!
//! A check that raced a forget is not remembered: [`Sessions`] counts forgets, and a check
//! that began before one (its store read may predate the revocation) answers its own
//! request but leaves nothing in memory.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use switchboard_domain::{DelegateInstance, GroupId, InstanceId, SecretHash, TokenId};

/// How many sessions are kept at most: twice the 100,000 instances a fleet is sized for,
/// so that the sessions of processes gone without being removed yet (they wait for the
/// retention sweep) leave room for the live ones. An entry is its 32-byte hash, three ids
/// and a time, about 93 bytes in the table, so a full map holds about 24 MB (a table of
/// 2^18 slots). Past the bound, arbitrary entries are dropped: their sessions are checked
/// against the store again on their next request, nothing else.
pub const MAX_SESSIONS: usize = 200_000;

/// Subtracted from the retention when trusting a session, for clocks of replicas that
/// disagree (the sweep compares heartbeats written by one replica with another's clock).
pub const CLOCK_ALLOWANCE: Duration = Duration::from_secs(60);

/// What the task endpoints need to know of the instance a session belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustedInstance {
    pub id: InstanceId,
    pub group_id: GroupId,
    pub token_id: TokenId,
    /// It has a limit of tasks in its life: it is retired once they ended.
    pub single_use: bool,
}

impl From<&DelegateInstance> for TrustedInstance {
    fn from(instance: &DelegateInstance) -> Self {
        Self {
            id: instance.id,
            group_id: instance.group_id,
            token_id: instance.token_id,
            single_use: instance.max_tasks.is_some(),
        }
    }
}

/// Until when a session checked now may be trusted: the retention sweep cannot remove its
/// instance before its last heartbeat is `retention` old (see the module's doc).
pub fn trusted_until(last_heartbeat_at: DateTime<Utc>, retention: Duration) -> DateTime<Utc> {
    let allowance = CLOCK_ALLOWANCE.min(retention / 2);
    let span = chrono::Duration::from_std(retention - allowance).unwrap_or(chrono::Duration::MAX);
    last_heartbeat_at
        .checked_add_signed(span)
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Sessions checked against the store and not invalidated since, by the hash of their
/// credential.
#[derive(Debug, Default)]
pub struct Sessions {
    /// A std mutex: lookups, inserts, forgets and sweeps, never held across an await.
    known: Mutex<Known>,
}

#[derive(Debug, Default)]
struct Known {
    by_hash: HashMap<SecretHash, Entry>,
    /// How many forgets there have been: a check that saw another count when it began
    /// is not remembered.
    forgets: u64,
    /// How many entries the map may hold before expired ones are swept out: twice what
    /// was left after the last sweep, so sweeping costs O(1) per insert on average.
    sweep_at: usize,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    instance: TrustedInstance,
    /// When the retention sweep could first remove the instance ([`trusted_until`]).
    until: DateTime<Utc>,
}

/// What [`Sessions::begin`] hands to [`Sessions::remember`]: the count of forgets when a
/// check began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckStarted(u64);

impl Sessions {
    pub fn trusted(&self, hash: &SecretHash, now: DateTime<Utc>) -> Option<TrustedInstance> {
        let known = lock(&self.known);
        let entry = known.by_hash.get(hash)?;
        (now < entry.until).then_some(entry.instance)
    }

    /// Marks the start of a check against the store, before its first read.
    pub fn begin(&self) -> CheckStarted {
        CheckStarted(lock(&self.known).forgets)
    }

    /// Remembers a session checked since `started`, unless something was forgotten since
    /// (the check may have read what that forget undid). Returns whether it did.
    pub fn remember(
        &self,
        hash: SecretHash,
        instance: TrustedInstance,
        until: DateTime<Utc>,
        started: CheckStarted,
        now: DateTime<Utc>,
    ) -> bool {
        let mut known = lock(&self.known);
        if known.forgets != started.0 || now >= until {
            return false;
        }
        // Room is made before the insert, so the session just checked always stays.
        if known.by_hash.len() >= known.sweep_at.clamp(1024, MAX_SESSIONS) {
            known.by_hash.retain(|_, e| now < e.until);
            if known.by_hash.len() >= MAX_SESSIONS {
                let excess = known.by_hash.len() - MAX_SESSIONS * 3 / 4;
                let dropped: Vec<SecretHash> = known.by_hash.keys().take(excess).copied().collect();
                for hash in &dropped {
                    known.by_hash.remove(hash);
                }
            }
            known.sweep_at = known.by_hash.len() * 2;
        }
        known.by_hash.insert(hash, Entry { instance, until });
        true
    }

    fn forget_where(&self, gone: impl Fn(&TrustedInstance) -> bool) {
        let mut known = lock(&self.known);
        known.forgets += 1;
        known.by_hash.retain(|_, e| !gone(&e.instance));
    }

    /// Forgets the sessions of instances registered with `token` (it was revoked).
    pub fn forget_token(&self, token: TokenId) {
        self.forget_where(|i| i.token_id == token);
    }

    /// Forgets the sessions of the instances of `group` (it was deleted).
    pub fn forget_group(&self, group: GroupId) {
        self.forget_where(|i| i.group_id == group);
    }

    /// Forgets the sessions of `instances` (they were removed).
    pub fn forget_instances(&self, instances: &[InstanceId]) {
        let gone: HashSet<InstanceId> = instances.iter().copied().collect();
        self.forget_where(|i| gone.contains(&i.id));
    }

    /// Forgets every session (signals from other replicas may have been missed).
    pub fn forget_all(&self) {
        let mut known = lock(&self.known);
        known.forgets += 1;
        known.by_hash.clear();
    }

    /// How many sessions are held.
    pub fn len(&self) -> usize {
        lock(&self.known).by_hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Each critical section is one lookup, insert, forget or sweep of a map: a panic cannot
    // leave it half-updated in a way that matters (at worst an entry is checked again).
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn instance(n: u128, token: u128, group: u128) -> TrustedInstance {
        TrustedInstance {
            id: InstanceId(uuid::Uuid::from_u128(n)),
            group_id: GroupId(uuid::Uuid::from_u128(group)),
            token_id: TokenId(uuid::Uuid::from_u128(token)),
            single_use: false,
        }
    }

    fn hash(n: u32) -> SecretHash {
        let mut bytes = [0u8; 32];
        bytes[..4].copy_from_slice(&n.to_le_bytes());
        SecretHash(bytes)
    }

    /// Checks and remembers `n`'s session at `now`, trusted for an hour.
    fn check(sessions: &Sessions, n: u32, i: TrustedInstance, now: DateTime<Utc>) -> bool {
        let started = sessions.begin();
        sessions.remember(hash(n), i, now + HOUR, started, now)
    }

    #[test]
    fn a_checked_session_is_trusted_until_the_retention_sweep_could_remove_its_instance() {
        let sessions = Sessions::default();
        let t0 = Utc::now();
        let heartbeat = t0 - chrono::Duration::minutes(30);
        let until = trusted_until(heartbeat, HOUR);
        assert_eq!(
            until,
            heartbeat + chrono::Duration::minutes(59),
            "less the clock allowance"
        );
        let started = sessions.begin();
        assert!(sessions.remember(hash(1), instance(1, 10, 20), until, started, t0));

        let a_bit_later = t0 + chrono::Duration::minutes(28);
        assert_eq!(sessions.trusted(&hash(1), a_bit_later), Some(instance(1, 10, 20)));
        assert_eq!(sessions.trusted(&hash(1), until), None, "the sweep may have removed it");
        assert_eq!(sessions.trusted(&hash(2), t0), None, "never checked");
    }

    #[test]
    fn a_session_whose_instance_is_already_removable_is_not_remembered() {
        let sessions = Sessions::default();
        let t0 = Utc::now();
        let until = trusted_until(t0 - chrono::Duration::hours(2), HOUR);
        let started = sessions.begin();
        assert!(!sessions.remember(hash(1), instance(1, 10, 20), until, started, t0));
        assert!(sessions.is_empty());
    }

    #[test]
    fn a_short_retention_keeps_half_of_itself_as_allowance() {
        let t0 = Utc::now();
        let retention = Duration::from_secs(10);
        assert_eq!(trusted_until(t0, retention), t0 + chrono::Duration::seconds(5));
        assert_eq!(
            trusted_until(t0, Duration::MAX),
            DateTime::<Utc>::MAX_UTC,
            "no overflow"
        );
    }

    #[test]
    fn revoking_a_token_deleting_a_group_or_removing_an_instance_forgets_its_sessions_only() {
        let sessions = Sessions::default();
        let t0 = Utc::now();
        check(&sessions, 1, instance(1, 10, 20), t0);
        check(&sessions, 2, instance(2, 11, 20), t0);
        check(&sessions, 3, instance(3, 12, 21), t0);
        check(&sessions, 4, instance(4, 12, 21), t0);

        sessions.forget_token(TokenId(uuid::Uuid::from_u128(10)));
        assert_eq!(sessions.trusted(&hash(1), t0), None);
        assert!(sessions.trusted(&hash(2), t0).is_some());

        sessions.forget_group(GroupId(uuid::Uuid::from_u128(20)));
        assert_eq!(sessions.trusted(&hash(2), t0), None);
        assert!(sessions.trusted(&hash(3), t0).is_some());

        sessions.forget_instances(&[InstanceId(uuid::Uuid::from_u128(3))]);
        assert_eq!(sessions.trusted(&hash(3), t0), None);
        assert!(sessions.trusted(&hash(4), t0).is_some());

        sessions.forget_all();
        assert!(sessions.is_empty());
    }

    #[test]
    fn a_check_that_began_before_a_forget_is_not_remembered() {
        let sessions = Sessions::default();
        let t0 = Utc::now();
        // The check reads the store (token active), then the token is revoked and its
        // sessions forgotten, then the check finishes: its answer must not stay.
        let started = sessions.begin();
        sessions.forget_token(TokenId(uuid::Uuid::from_u128(10)));
        assert!(!sessions.remember(hash(1), instance(1, 10, 20), t0 + HOUR, started, t0));
        assert_eq!(sessions.trusted(&hash(1), t0), None);
        // Forgetting everything (a gap in the signals) counts as well.
        let started = sessions.begin();
        sessions.forget_all();
        assert!(!sessions.remember(hash(1), instance(1, 10, 20), t0 + HOUR, started, t0));
        // A check begun afterwards is remembered.
        assert!(check(&sessions, 1, instance(1, 10, 20), t0));
    }

    #[test]
    fn expired_sessions_are_swept_out_as_new_ones_arrive() {
        let sessions = Sessions::default();
        let t0 = Utc::now();
        for n in 0..2000u32 {
            let started = sessions.begin();
            let until = t0 + chrono::Duration::seconds(1);
            sessions.remember(hash(n), instance(u128::from(n), 1, 1), until, started, t0);
        }
        let later = t0 + chrono::Duration::seconds(2);
        for n in 10_000..11_100u32 {
            check(&sessions, n, instance(u128::from(n), 1, 1), later);
        }
        assert!(
            sessions.len() <= 1100,
            "the 2000 expired sessions were swept: {}",
            sessions.len()
        );
        assert!(sessions.trusted(&hash(10_000), later).is_some());
    }

    #[test]
    fn the_map_never_holds_more_than_its_bound() {
        let sessions = Sessions::default();
        let t0 = Utc::now();
        for n in 0..(MAX_SESSIONS as u32 + 10) {
            check(&sessions, n, instance(u128::from(n), 1, 1), t0);
            assert!(sessions.len() <= MAX_SESSIONS);
        }
        assert!(sessions.len() >= MAX_SESSIONS / 2, "{}", sessions.len());
        let last = MAX_SESSIONS as u32 + 9;
        assert!(sessions.trusted(&hash(last), t0).is_some(), "the newest stays");
    }
}
