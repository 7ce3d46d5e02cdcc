//! The per-upstream pools of TCP connections of one shard, as the engine sees them: which
//! connection a query takes, how many queries each carries, and when an idle one closes (an
//! [`Timer::Idle`] in the engine's table). The driver opens a connection the first time a
//! query names it and closes it when told.
//!
//! A connection on which an exchange timed out is *retired*: it takes no new query and
//! closes once the queries it carries are done. Its peer may be gone without a word (a
//! black hole), or its byte stream may be stuck mid-frame or out of step (half a frame, a
//! bogus length), and then nothing more will ever be read from it; CoreDNS closes a
//! connection on a read timeout for the same reason.

use std::time::{Duration, Instant};

use crate::timer::{Timer, TimerTable};
use crate::{Link, Protocol};

/// One upstream TCP connection as the engine sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TcpConn {
    id: u32,
    inflight: usize,
    /// Takes no new query; closes when `inflight` reaches 0.
    retired: bool,
}

/// Per-upstream pools of TCP connections carrying several queries each.
#[derive(Debug)]
pub(crate) struct TcpPool {
    conns: Vec<Vec<TcpConn>>,
    next_id: u32,
    max_inflight: usize,
    max_conns: usize,
    /// Idle time before a connection closes, per upstream (`forward ... { expire }`).
    idle: Vec<Duration>,
}

impl TcpPool {
    /// Pools for `idle.len()` upstreams, `idle[u]` being how long upstream `u`'s connections
    /// may stay idle.
    pub(crate) fn new(idle: Vec<Duration>, max_inflight: usize, max_conns: usize) -> TcpPool {
        TcpPool {
            conns: vec![Vec::new(); idle.len()],
            next_id: 1,
            max_inflight: max_inflight.max(1),
            max_conns: max_conns.max(1),
            idle,
        }
    }

    /// Picks a connection to `upstream` for one more query: the least loaded one with fewer
    /// than `max_inflight` queries in flight, else a new one while under the cap, else the
    /// least loaded. With `max_inflight` 1, an upstream that answers a connection's queries
    /// one at a time, in order (CoreDNS), never makes a query wait behind another until the
    /// cap is reached. Retired connections are neither picked nor counted against the cap.
    /// Returns the link, and whether it is an open connection (false: new).
    pub(crate) fn acquire(&mut self, upstream: u16, timers: &mut TimerTable) -> (Link, bool) {
        let conns = &mut self.conns[upstream as usize];
        let mut reused = true;
        let least_loaded = conns
            .iter()
            .enumerate()
            .filter(|(_, c)| !c.retired)
            .min_by_key(|(_, c)| c.inflight)
            .map(|(i, c)| (i, c.inflight));
        let live = conns.iter().filter(|c| !c.retired).count();
        let index = match least_loaded {
            Some((i, load)) if load < self.max_inflight => i,
            _ if live < self.max_conns => {
                reused = false;
                conns.push(TcpConn {
                    id: self.next_id,
                    inflight: 0,
                    retired: false,
                });
                self.next_id = self.next_id.checked_add(1).unwrap_or(1);
                conns.len() - 1
            }
            Some((i, _)) => i,
            None => 0,
        };
        let conn = &mut conns[index];
        conn.inflight += 1;
        timers.clear(Timer::Idle {
            upstream,
            conn: conn.id,
        });
        let link = Link {
            upstream,
            protocol: Protocol::Tcp,
            conn: conn.id,
        };
        (link, reused)
    }

    /// A query on `link` is done (answered, timed out or moved); a connection left with
    /// nothing in flight closes after its upstream's idle time unless used again, or at once
    /// if retired: then the returned link is for the driver to close.
    pub(crate) fn release(
        &mut self,
        now: Instant,
        link: Link,
        timers: &mut TimerTable,
    ) -> Option<Link> {
        let idle = self.idle_of(link.upstream);
        let conns = self.conns.get_mut(link.upstream as usize)?;
        let index = conns.iter().position(|c| c.id == link.conn)?;
        let conn = &mut conns[index];
        conn.inflight = conn.inflight.saturating_sub(1);
        if conn.inflight > 0 {
            return None;
        }
        if conn.retired {
            conns.remove(index);
            return Some(link);
        }
        let timer = Timer::Idle {
            upstream: link.upstream,
            conn: link.conn,
        };
        timers.set(timer, now + idle);
        None
    }

    /// An exchange on `link` timed out: the connection takes no new query and closes once
    /// the queries it carries are done (see the module). Returns the link for the driver to
    /// close if it carries none.
    pub(crate) fn retire(&mut self, link: Link, timers: &mut TimerTable) -> Option<Link> {
        let conns = self.conns.get_mut(link.upstream as usize)?;
        let index = conns.iter().position(|c| c.id == link.conn)?;
        conns[index].retired = true;
        if conns[index].inflight > 0 {
            return None;
        }
        conns.remove(index);
        timers.clear(Timer::Idle {
            upstream: link.upstream,
            conn: link.conn,
        });
        Some(link)
    }

    /// The connection behind `link` is gone.
    pub(crate) fn forget(&mut self, link: Link, timers: &mut TimerTable) {
        if let Some(conns) = self.conns.get_mut(link.upstream as usize) {
            conns.retain(|c| c.id != link.conn);
        }
        timers.clear(Timer::Idle {
            upstream: link.upstream,
            conn: link.conn,
        });
    }

    /// The idle timer of connection `conn` to `upstream` fired: it leaves the pool, and the
    /// returned link is for the driver to close (`None`: it was in use again or gone).
    pub(crate) fn idle_expired(&mut self, upstream: u16, conn: u32) -> Option<Link> {
        let conns = self.conns.get_mut(upstream as usize)?;
        let index = conns.iter().position(|c| c.id == conn && c.inflight == 0)?;
        conns.remove(index);
        Some(Link {
            upstream,
            protocol: Protocol::Tcp,
            conn,
        })
    }

    fn idle_of(&self, upstream: u16) -> Duration {
        self.idle
            .get(upstream as usize)
            .copied()
            .unwrap_or_default()
    }

    /// This pool, numbering its connections after `previous`'s (so that IDs the driver still
    /// knows are never reused).
    pub(crate) fn continuing(mut self, previous: &TcpPool) -> TcpPool {
        self.next_id = previous.next_id;
        self
    }

    /// Forgets every connection (the upstream list changed) and returns their links, for
    /// the driver to close. Connection IDs keep counting, so new ones never reuse an old ID.
    pub(crate) fn reset(&mut self, timers: &mut TimerTable) -> Vec<Link> {
        let links: Vec<Link> = self
            .conns
            .iter()
            .enumerate()
            .flat_map(|(upstream, conns)| {
                conns.iter().map(move |c| Link {
                    upstream: upstream as u16,
                    protocol: Protocol::Tcp,
                    conn: c.id,
                })
            })
            .collect();
        for link in &links {
            self.forget(*link, timers);
        }
        links
    }

    /// Open connections to `upstream` (as the engine counts them).
    pub(crate) fn open(&self, upstream: u16) -> usize {
        self.conns.get(upstream as usize).map_or(0, Vec::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_loaded_then_new_then_shared_and_idle_closing() {
        let now = Instant::now();
        let mut timers = TimerTable::default();
        let idle = vec![Duration::from_secs(10), Duration::from_secs(1)];
        let mut pool = TcpPool::new(idle, 2, 2);
        let (a, reused) = pool.acquire(0, &mut timers);
        assert!(!reused);
        let (b, reused) = pool.acquire(0, &mut timers);
        assert_eq!((b, reused), (a, true), "room on the first");
        let (c, reused) = pool.acquire(0, &mut timers);
        assert!(!reused && c != a, "full: a second connection");
        let (d, _) = pool.acquire(0, &mut timers);
        assert_eq!(d, c);
        let (e, reused) = pool.acquire(0, &mut timers);
        assert!(reused && (e == a || e == c), "at the cap: shared");
        assert_eq!(pool.open(0), 2);
        // Upstream 1 idles out sooner than upstream 0, whatever the order released.
        pool.release(now, a, &mut timers);
        pool.release(now, a, &mut timers);
        if e == a {
            pool.release(now, a, &mut timers);
        }
        let (f, _) = pool.acquire(1, &mut timers);
        pool.release(now, f, &mut timers);
        let first = timers.pop_due(now + Duration::from_secs(1));
        assert_eq!(
            first,
            Some(Timer::Idle {
                upstream: 1,
                conn: f.conn
            })
        );
        assert_eq!(pool.idle_expired(1, f.conn), Some(f));
        assert_eq!(pool.open(1), 0);
        // A connection used again before its idle time is not closed.
        let (again, _) = pool.acquire(0, &mut timers);
        assert_eq!(again, a, "the idle one is the least loaded");
        assert!(timers.pop_due(now + Duration::from_secs(60)).is_none());
        assert_eq!(pool.idle_expired(0, a.conn), None, "in use");
        let closed = pool.reset(&mut timers);
        assert_eq!(closed.len(), 2);
        assert_eq!(timers.len(), 0);
        let (next, reused) = pool.acquire(0, &mut timers);
        assert!(!reused && next.conn > f.conn, "IDs keep counting");
    }

    #[test]
    fn a_retired_connection_takes_no_query_and_closes_when_done() {
        let now = Instant::now();
        let mut timers = TimerTable::default();
        let mut pool = TcpPool::new(vec![Duration::from_secs(10)], 2, 1);
        let (a, _) = pool.acquire(0, &mut timers);
        let (b, _) = pool.acquire(0, &mut timers);
        assert_eq!(a, b, "two queries on the one connection");
        // The first query's attempt timed out on it.
        assert_eq!(pool.retire(a, &mut timers), None, "still carries two");
        let (c, reused) = pool.acquire(0, &mut timers);
        assert!(!reused && c != a, "a new one, although at the cap of 1");
        assert_eq!(pool.release(now, a, &mut timers), None, "one left on it");
        assert_eq!(pool.release(now, a, &mut timers), Some(a), "done: close it");
        assert_eq!(pool.open(0), 1);
        assert_eq!(pool.release(now, a, &mut timers), None, "gone already");
        // An idle one retired closes at once, its idle timer cleared.
        assert_eq!(pool.release(now, c, &mut timers), None);
        assert_eq!(timers.len(), 1);
        assert_eq!(pool.retire(c, &mut timers), Some(c));
        assert_eq!((pool.open(0), timers.len()), (0, 0));
    }
}
