//! Bookkeeping for queries sent upstream, sans-IO: the in-flight table ([`inflight`]), the
//! per-upstream pools of TCP connections ([`pool`]) and the UDP sockets, one per exchange
//! ([`udp`], kept by the in-flight table). Their deadlines live in the engine's
//! [`crate::timer::TimerTable`]; callers pass `now`.

mod inflight;
mod pool;
mod udp;

pub(crate) use inflight::{InFlight, Pending, PendingId, Requester, Waiter};
pub(crate) use pool::TcpPool;
