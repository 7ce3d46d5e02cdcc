//! Waiting for replies or the next due send with sub-millisecond precision: `poll` takes
//! milliseconds, so waits shorter than [`FINE_NS`] arm a one-shot timerfd that sits in the
//! poll set.

use std::os::fd::{AsFd as _, BorrowedFd};
use std::time::Duration;

use nix::poll::PollTimeout;
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};

/// Waits below this use the timerfd.
const FINE_NS: u64 = 2_000_000;
/// The longest single wait (timeouts and the run's end are re-checked after it).
const MAX_WAIT_MS: u16 = 100;

/// The worker's timer.
#[derive(Debug)]
pub(crate) struct Waiter {
    timer: TimerFd,
}

impl Waiter {
    pub(crate) fn new() -> anyhow::Result<Self> {
        let flags = TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC;
        Ok(Waiter {
            timer: TimerFd::new(ClockId::CLOCK_MONOTONIC, flags)?,
        })
    }

    /// The timer's descriptor, to poll with the sockets.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.timer.as_fd()
    }

    /// The poll timeout for waking `wait_ns` from now; short waits arm the timer (re-arming
    /// also clears an earlier expiry, so the timer never needs reading).
    pub(crate) fn timeout(&self, wait_ns: u64) -> anyhow::Result<PollTimeout> {
        if wait_ns == 0 {
            return Ok(PollTimeout::ZERO);
        }
        if wait_ns < FINE_NS {
            let when = TimeSpec::from_duration(Duration::from_nanos(wait_ns));
            self.timer
                .set(Expiration::OneShot(when), TimerSetTimeFlags::empty())?;
            return Ok(PollTimeout::from(MAX_WAIT_MS));
        }
        let ms = (wait_ns / 1_000_000).min(u64::from(MAX_WAIT_MS)) as u16;
        Ok(PollTimeout::from(ms))
    }
}
