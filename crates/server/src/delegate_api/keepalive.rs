//! When a delegate socket is pinged, and when it is closed for silence.
//!
//! A socket is alive while something arrives on it: a protocol frame (a heartbeat, a
//! result) or a pong. Nothing for `socket_silence_timeout` (45 s) closes it. A ping asks
//! a quiet delegate to prove it is alive, and goes out only once the socket has been quiet
//! for the silence limit less the ping interval (45 - 15 = 30 s), leaving the ping
//! interval for the answer. So a delegate beating at the default 60 s is pinged once
//! between two beats, not every 15 s, and one beating more often than every 30 s is never
//! pinged: its own traffic proves it alive.
//!
//! The wakes that look for a due ping are rounded up to a grid (an eighth of the ping
//! interval, at most a second), so that the sockets of one manager that fall due within
//! the same step wake together: thousands of idle sockets cost a few busy moments a second
//! instead of a wake each, spread out, every one of which would rouse a parked runtime
//! thread. The close is never rounded: a silent socket closes at the silence limit.

use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;

/// The schedule of one manager's sockets.
#[derive(Debug, Clone, Copy)]
pub struct Liveness {
    /// Quiet for this long: ping.
    ping_after: Duration,
    /// After a ping, look again this much later (if the answer has not come first).
    answer: Duration,
    /// Quiet for this long: close.
    silence: Duration,
    grid: Duration,
}

/// What a socket's timer finds when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Silent for the limit: close the socket.
    Close,
    /// Quiet for long enough: send a ping, and wake again at `then`.
    Ping { then: Instant },
    /// Heard from recently: wake again at `then`.
    Nothing { then: Instant },
}

/// The finest grid the wakes are rounded to, and the coarsest.
const MIN_GRID: Duration = Duration::from_millis(1);
const MAX_GRID: Duration = Duration::from_secs(1);

impl Liveness {
    /// The schedule for `ping_interval` and `silence` (both positive). With a ping interval
    /// of half the silence limit or more, the ping goes out at half the limit.
    pub fn new(ping_interval: Duration, silence: Duration) -> Self {
        let ping_after = silence.saturating_sub(ping_interval).max(silence / 2);
        Self {
            ping_after,
            answer: ping_interval,
            silence,
            grid: (ping_interval / 8).clamp(MIN_GRID, MAX_GRID),
        }
    }

    /// When a socket last heard from at `heard` next needs a look (its timer is set to
    /// this on every frame received).
    pub fn next_look(&self, heard: Instant) -> Instant {
        self.round(heard + self.ping_after).min(heard + self.silence)
    }

    /// What is due at `now` for a socket last heard from at `heard`.
    pub fn due(&self, heard: Instant, now: Instant) -> Due {
        let quiet = now.saturating_duration_since(heard);
        let limit = heard + self.silence;
        if quiet >= self.silence {
            Due::Close
        } else if quiet >= self.ping_after {
            Due::Ping {
                then: self.round(now + self.answer).min(limit),
            }
        } else {
            Due::Nothing {
                then: self.round(heard + self.ping_after).min(limit),
            }
        }
    }

    /// `at` rounded up to the grid, counted from a process-wide origin.
    fn round(&self, at: Instant) -> Instant {
        static ORIGIN: OnceLock<Instant> = OnceLock::new();
        let origin = *ORIGIN.get_or_init(Instant::now);
        let since = at.saturating_duration_since(origin).as_nanos();
        let grid = self.grid.as_nanos().max(1);
        let steps = since.div_ceil(grid);
        let rounded = u64::try_from(steps.saturating_mul(grid)).unwrap_or(u64::MAX);
        origin + Duration::from_nanos(rounded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PING: Duration = Duration::from_secs(15);
    const SILENCE: Duration = Duration::from_secs(45);

    /// What one socket's timer did over a span.
    #[derive(Debug, PartialEq)]
    struct Run {
        pings: u32,
        /// Times the timer fired (pings and closes included).
        wakes: u32,
        closed: Option<Duration>,
    }

    /// Runs one socket's timer for `span`, as the socket loop does (every frame received
    /// moves the timer to the next look), against a delegate that sends a frame every
    /// `beat` (if any) and answers each ping 1 ms later (if it answers).
    fn simulate(beat: Option<Duration>, answers: bool, span: Duration) -> Run {
        let live = Liveness::new(PING, SILENCE);
        let start = Instant::now();
        let end = start + span;
        let mut wake = live.next_look(start);
        let mut heard = start;
        let mut next_beat = beat.map(|b| start + b);
        let mut pong: Option<Instant> = None;
        let mut run = Run {
            pings: 0,
            wakes: 0,
            closed: None,
        };
        loop {
            let frame = [next_beat, pong].into_iter().flatten().min();
            match frame {
                Some(at) if at <= wake => {
                    if at >= end {
                        return run;
                    }
                    if Some(at) == pong {
                        pong = None;
                    } else {
                        next_beat = beat.map(|b| at + b);
                    }
                    heard = at;
                    wake = live.next_look(heard);
                }
                _ => {
                    if wake >= end {
                        return run;
                    }
                    run.wakes += 1;
                    match live.due(heard, wake) {
                        Due::Close => {
                            run.closed = Some(wake - start);
                            return run;
                        }
                        Due::Ping { then } => {
                            run.pings += 1;
                            if answers {
                                pong = Some(wake + Duration::from_millis(1));
                            }
                            wake = then;
                        }
                        Due::Nothing { then } => wake = then,
                    }
                }
            }
        }
    }

    #[test]
    fn a_delegate_beating_every_minute_is_pinged_once_between_two_beats() {
        let run = simulate(Some(Duration::from_secs(60)), true, Duration::from_secs(600));
        assert_eq!(run.closed, None);
        // One ping in each of the ten minutes, and the timer fires for nothing else: the
        // beats and the pongs move it on.
        assert_eq!(run.pings, 10, "{run:?}");
        assert_eq!(run.wakes, run.pings, "{run:?}");
    }

    #[test]
    fn a_delegate_beating_more_often_than_the_ping_threshold_is_never_pinged() {
        let run = simulate(Some(Duration::from_secs(20)), true, Duration::from_secs(600));
        assert_eq!(
            run,
            Run {
                pings: 0,
                wakes: 0,
                closed: None
            }
        );
    }

    #[test]
    fn a_silent_socket_is_pinged_then_closed_at_the_silence_limit() {
        let run = simulate(None, false, Duration::from_secs(600));
        assert_eq!(run.pings, 1);
        assert_eq!(run.closed, Some(SILENCE), "closed exactly at the limit, never rounded");
    }

    #[test]
    fn a_quiet_socket_that_answers_its_pings_stays_open() {
        let run = simulate(None, true, Duration::from_secs(300));
        assert_eq!(run.closed, None);
        // Pinged every 30 s or so.
        assert!((9..=10).contains(&run.pings), "{run:?}");
    }

    #[test]
    fn wakes_fall_on_a_grid_so_that_sockets_due_together_wake_together() {
        let live = Liveness::new(PING, SILENCE);
        let base = Instant::now();
        let wakes: Vec<Instant> = (0..100)
            .map(|n| live.next_look(base + Duration::from_millis(n * 7)))
            .collect();
        let mut distinct = wakes.clone();
        distinct.dedup();
        // 700 ms of arrivals fall in at most two one-second steps.
        assert!(distinct.len() <= 2, "{} distinct wakes", distinct.len());
        for (n, wake) in wakes.iter().enumerate() {
            let heard = base + Duration::from_millis(n as u64 * 7);
            let after = wake.duration_since(heard);
            assert!(
                after >= Duration::from_secs(30) && after <= Duration::from_secs(31),
                "{after:?}"
            );
        }
    }

    #[test]
    fn a_ping_interval_of_half_the_limit_or_more_pings_at_half_the_limit() {
        let live = Liveness::new(Duration::from_secs(2), Duration::from_secs(2));
        let heard = Instant::now();
        assert!(matches!(
            live.due(heard, heard + Duration::from_millis(999)),
            Due::Nothing { .. }
        ));
        match live.due(heard, heard + Duration::from_secs(1)) {
            Due::Ping { then } => assert_eq!(then, heard + Duration::from_secs(2)),
            other => panic!("{other:?}"),
        }
        assert_eq!(live.due(heard, heard + Duration::from_secs(2)), Due::Close);
    }
}
