//! The manager's engine room: everything that runs without a request in hand.
//!
//! * [`dispatch`]: placement (the engine against the kept snapshot of the registry), the
//!   task lifecycle's timers and the long-poll waiters; it runs with a
//!   [`dispatch::Placer`] and reaches delegates through [`dispatch::Reach`].
//! * [`hub`], [`heartbeats`], [`sessions`]: this manager's delegate sockets, their latest
//!   heartbeats (ahead of the store by up to one flush interval) and the sessions it has
//!   checked; [`liveness`] is the one rule for "is this instance connected" built on them.
//! * [`cluster`]: the bus to the other replicas, and [`cluster::Sockets`], the four
//!   pieces above as one value; it is the server's [`dispatch::Reach`].
//! * [`housekeeping`]: the lease, the heartbeat flush and the retention sweep.
//! * [`demand`]: what an autoscaler needs to size a delegate.
//! * [`queue`]: the queue explained as a whole, by what holds its tasks.
//! * [`masks`]: the secret values of running tasks, delivered at acquire and masked in
//!   what the tasks report.
//! * [`workers`]: how each of these starts its background tasks and stops them.
//!
//! Nothing here sees HTTP or the server's whole state: each part takes the few things it
//! uses, so each can be run and tested alone.

pub mod cluster;
pub mod demand;
pub mod dispatch;
pub mod heartbeats;
pub mod housekeeping;
pub mod hub;
pub mod liveness;
pub mod masks;
pub mod queue;
pub mod sessions;
pub mod workers;
