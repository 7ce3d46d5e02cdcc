//! Bookkeeping for queries sent upstream, sans-IO: the in-flight table ([`inflight`]) and
//! the per-upstream pools of TCP connections ([`pool`]). Their deadlines live in the
//! engine's [`crate::timer::TimerTable`]; callers pass `now`.

mod inflight;
mod pool;

pub(crate) use inflight::{InFlight, Pending, PendingId, Requester, Waiter};
pub(crate) use pool::TcpPool;
