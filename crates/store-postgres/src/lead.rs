//! The lead: which replica does the periodic work that one replica at a time should do
//! (timers, sweeps, retention). Held as a session advisory lock on a connection of its
//! own, outside the pool, keyed by the schema (two installations in one database do not
//! share it). PostgreSQL releases the lock when that connection ends, so a replica that
//! dies (or whose connection is cut) hands the lead over without anyone's help; the other
//! replicas take it at their next try.

use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection};
use switchboard_store::StoreResult;
use tokio::sync::Mutex;

use crate::map_err;

/// A replica without the lead tries to take it at most this often.
const TRY_EVERY: Duration = Duration::from_secs(1);

/// First key of the two-key advisory lock: "SB" + "LD". The second is the schema's hash.
const LOCK_CLASS: i32 = 0x5342_4c44;

#[derive(Debug)]
pub(crate) struct Lead {
    connect: PgConnectOptions,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The connection holding the lock, while this replica leads.
    holding: Option<PgConnection>,
    /// A follower's connection, kept between tries: opening one is a new backend process
    /// on the server, too dear to do every second on every follower.
    waiting: Option<PgConnection>,
    last_try: Option<Instant>,
    /// When the holding connection last answered: a leader asked every tick checks it at
    /// most every [`CHECK_EVERY`].
    last_check: Option<Instant>,
}

/// A leader checks that its connection (and so its lock) is alive at most this often.
/// Meanwhile it goes on leading, as it would between two checks anyway; a second leader
/// for a moment only loses races (the timers and sweeps are safe to run twice).
const CHECK_EVERY: Duration = Duration::from_secs(1);

impl Lead {
    pub(crate) fn new(connect: PgConnectOptions) -> Self {
        Self {
            connect,
            state: Mutex::new(State::default()),
        }
    }

    /// Whether this replica leads now: checks that the holding connection is alive, or
    /// (at most every [`TRY_EVERY`]) tries to take the lock.
    pub(crate) async fn check(&self) -> StoreResult<bool> {
        let mut state = self.state.lock().await;
        let now = Instant::now();
        if state.holding.is_some() && state.last_check.is_some_and(|at| now.duration_since(at) < CHECK_EVERY) {
            return Ok(true);
        }
        if let Some(connection) = state.holding.as_mut() {
            if connection.ping().await.is_ok() {
                state.last_check = Some(now);
                return Ok(true);
            }
            // Gone: the database released the lock with the session. Wait a turn before
            // trying again, so that another replica can take it.
            tracing::warn!("lost the lead: its connection ended");
            state.holding = None;
            state.last_try = Some(Instant::now());
        }
        let now = Instant::now();
        if state.last_try.is_some_and(|at| now.duration_since(at) < TRY_EVERY) {
            return Ok(false);
        }
        state.last_try = Some(now);
        let mut connection = match state.waiting.take() {
            Some(connection) => connection,
            None => self.connect.connect().await.map_err(map_err)?,
        };
        // On error the connection is dropped: the next try opens a fresh one.
        let (taken,): (bool,) =
            sqlx::query_as("SELECT pg_try_advisory_lock($1, hashtext('switchboard:' || current_schema()))")
                .bind(LOCK_CLASS)
                .fetch_one(&mut connection)
                .await
                .map_err(map_err)?;
        if taken {
            tracing::info!("took the lead: this replica runs the timers and sweeps");
            state.holding = Some(connection);
            state.last_check = Some(now);
        } else {
            state.waiting = Some(connection);
        }
        Ok(taken)
    }
}
