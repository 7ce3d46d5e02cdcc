//! The state of a server block's `loop` check (CoreDNS's `loop` plugin), shared by every shard
//! and by the process's prober: at start-up the prober asks the block's first address for
//! `<random>.<random>.<zone>` type HINFO; if that query comes back through the forwarding
//! path (the block forwards to itself, or to something that forwards back), the
//! configuration loops and the process stops.
//!
//! Shards coalesce identical misses, so a looping probe arrives twice (the prober's query,
//! then the forwarded copy, which joins the first instead of going round again): a second
//! arrival is the loop. CoreDNS, which does not coalesce, sees the query go round and counts
//! more than two.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use shardns_wire::name_eq_ignore_case;

/// HINFO, the probe's type.
pub const HINFO: u16 = 13;

/// A block's `loop` check (cheap to clone: the state is shared).
#[derive(Debug, Clone)]
pub struct LoopProbe(Arc<LoopState>);

#[derive(Debug)]
struct LoopState {
    /// `<random>.<random>.<zone>`, uncompressed wire form.
    qname: Box<[u8]>,
    /// Arrivals of the probe since the prober last (re)sent it.
    seen: AtomicU32,
    /// The check is over (the probe was answered, or 30 s passed).
    off: AtomicBool,
    /// A loop was seen.
    detected: AtomicBool,
}

/// `loop` is a setting: two configurations with it on are the same configuration, whatever
/// their probes' random names (the probe is the check's running state).
impl PartialEq for LoopProbe {
    fn eq(&self, _: &LoopProbe) -> bool {
        true
    }
}

impl Eq for LoopProbe {}

impl LoopProbe {
    /// The check of the block of zone `zone` (lowercase wire form), its name drawn from
    /// `random` (two labels of decimal digits, as CoreDNS draws them).
    pub fn new(zone: &[u8], mut random: impl FnMut() -> u64) -> LoopProbe {
        let mut qname = Vec::with_capacity(zone.len() + 40);
        for _ in 0..2 {
            let label = (random() >> 2).to_string();
            qname.push(label.len() as u8);
            qname.extend_from_slice(label.as_bytes());
        }
        qname.extend_from_slice(zone);
        LoopProbe(Arc::new(LoopState {
            qname: qname.into(),
            seen: AtomicU32::new(0),
            off: AtomicBool::new(false),
            detected: AtomicBool::new(false),
        }))
    }

    /// The probe's name, uncompressed wire form.
    pub fn qname(&self) -> &[u8] {
        &self.0.qname
    }

    /// The probe is (re)sent: arrivals count from zero.
    pub fn reset(&self) {
        self.0.seen.store(0, Ordering::SeqCst);
    }

    /// The check is over: arrivals no longer count.
    pub fn disable(&self) {
        self.0.off.store(true, Ordering::SeqCst);
    }

    /// Whether the check is over.
    pub fn is_off(&self) -> bool {
        self.0.off.load(Ordering::SeqCst)
    }

    /// Whether a loop was seen.
    pub fn detected(&self) -> bool {
        self.0.detected.load(Ordering::SeqCst)
    }

    /// A query for `qname` arrived: counts it when it is the probe and the check is on.
    /// Returns `true` the first time the count shows a loop (a second arrival).
    pub fn arrived(&self, qname: &[u8]) -> bool {
        if self.is_off() || !name_eq_ignore_case(qname, &self.0.qname) {
            return false;
        }
        let seen = self.0.seen.fetch_add(1, Ordering::SeqCst) + 1;
        seen >= 2 && !self.0.detected.swap(true, Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_arrival_is_a_loop_once_until_reset_or_off() {
        let mut draws = [12u64 << 2, 345 << 2].into_iter();
        let probe = LoopProbe::new(b"\x07example\x00", || draws.next().unwrap());
        assert_eq!(probe.qname(), b"\x0212\x03345\x07example\x00");
        assert!(!probe.arrived(b"\x0212\x03345\x07EXAMPLE\x00"));
        assert!(!probe.arrived(b"\x01x\x07example\x00"), "another name");
        probe.reset();
        assert!(!probe.arrived(probe.qname()));
        assert!(probe.arrived(probe.qname()), "the second arrival");
        assert!(probe.detected());
        assert!(!probe.arrived(probe.qname()), "reported once");
        let quiet = LoopProbe::new(b"\x00", || 7);
        quiet.disable();
        assert!(!quiet.arrived(quiet.qname()) && !quiet.arrived(quiet.qname()));
        assert_eq!(quiet, probe, "a setting, whatever the name");
    }
}
