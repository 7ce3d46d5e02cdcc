//! Upstream health as one shard sees it, with CoreDNS `forward` semantics: an exchange error
//! starts probing the upstream (`. IN NS`, every `health_check` interval) until a probe gets
//! any reply; each failed probe counts a failure, a good one clears them; the upstream is down
//! while it has more than `max_fails` failures (`max_fails 0`: never down). Down upstreams are
//! skipped when choosing where a query goes. No sockets, no clock: callers pass `now`.

use std::time::{Duration, Instant};

use crate::Link;
use crate::config::{Config, Policy};

/// How long a probe waits for its reply.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// What the probes of one upstream look like (from the first `forward` naming it).
#[derive(Debug, Clone)]
pub struct ProbeSpec {
    pub interval: Duration,
    pub max_fails: u32,
    /// The probe's name, lowercase wire form.
    pub name: Vec<u8>,
    pub recursion: bool,
    pub tcp: bool,
}

#[derive(Debug, Clone, Default)]
struct State {
    fails: u32,
    /// Probing until a probe succeeds: when the next one is due.
    next_probe: Option<Instant>,
    /// The probe in flight: link, wire ID, deadline.
    probe: Option<(Link, u16, Instant)>,
}

/// Health of every upstream of the configuration.
#[derive(Debug, Clone)]
pub struct Health {
    specs: Vec<ProbeSpec>,
    states: Vec<State>,
    /// Round-robin position per server block.
    rotation: Vec<usize>,
}

/// A probe to send, from [`Health::due`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub upstream: u16,
}

impl Health {
    /// Everything healthy.
    pub fn new(config: &Config) -> Health {
        let specs = (0..config.upstreams.len())
            .map(|u| {
                let forward = config
                    .servers
                    .iter()
                    .filter_map(|s| s.forward.as_ref())
                    .find(|f| f.upstreams.contains(&u));
                match forward {
                    Some(f) => ProbeSpec {
                        interval: f.health_check,
                        max_fails: f.max_fails,
                        name: f.health_domain.clone(),
                        recursion: !f.health_no_rec,
                        tcp: f.force_tcp,
                    },
                    None => ProbeSpec {
                        interval: Duration::from_millis(500),
                        max_fails: 2,
                        name: vec![0],
                        recursion: true,
                        tcp: false,
                    },
                }
            })
            .collect();
        Health {
            specs,
            states: vec![State::default(); config.upstreams.len()],
            rotation: vec![0; config.servers.len()],
        }
    }

    /// The probe settings of `upstream`.
    pub fn spec(&self, upstream: u16) -> Option<&ProbeSpec> {
        self.specs.get(upstream as usize)
    }

    /// Whether `upstream` is down (more than `max_fails` failed probes in a row).
    pub fn is_down(&self, upstream: u16) -> bool {
        let (Some(spec), Some(state)) = (
            self.specs.get(upstream as usize),
            self.states.get(upstream as usize),
        ) else {
            return false;
        };
        spec.max_fails != 0 && !spec.interval.is_zero() && state.fails > spec.max_fails
    }

    /// Failed probes in a row.
    pub fn fails(&self, upstream: u16) -> u32 {
        self.states.get(upstream as usize).map_or(0, |s| s.fails)
    }

    /// An exchange with `upstream` failed (timeout, refused, reset): probe it now, unless
    /// already probing (CoreDNS starts its health checker the same way; `max_fails 0`
    /// disables it).
    pub fn exchange_failed(&mut self, now: Instant, upstream: u16) {
        let Some(spec) = self.specs.get(upstream as usize) else {
            return;
        };
        // `max_fails 0` or `health_check 0` turn health checking off, as in CoreDNS.
        if spec.max_fails == 0 || spec.interval.is_zero() {
            return;
        }
        let state = &mut self.states[upstream as usize];
        if state.next_probe.is_none() && state.probe.is_none() {
            state.next_probe = Some(now);
        }
    }

    /// Upstreams whose probe is due at `now` (each is then marked as sent by
    /// [`Health::probe_sent`]).
    pub fn due(&self, now: Instant) -> Vec<Probe> {
        self.states
            .iter()
            .enumerate()
            .filter(|(_, s)| s.probe.is_none() && s.next_probe.is_some_and(|t| t <= now))
            .map(|(u, _)| Probe { upstream: u as u16 })
            .collect()
    }

    /// A probe went out on `link` with wire ID `id`.
    pub fn probe_sent(&mut self, now: Instant, upstream: u16, link: Link, id: u16) {
        if let Some(state) = self.states.get_mut(upstream as usize) {
            state.next_probe = None;
            state.probe = Some((link, id, now + PROBE_TIMEOUT));
        }
    }

    /// Whether wire ID `id` on `link` belongs to a probe in flight.
    pub fn is_probe(&self, link: Link, id: u16) -> bool {
        self.states
            .iter()
            .any(|s| s.probe.is_some_and(|(l, i, _)| l == link && i == id))
    }

    /// A reply (any parseable one) to the probe on `link` with ID `id`: healthy again.
    /// Returns the upstream.
    pub fn probe_answered(&mut self, link: Link, id: u16) -> Option<u16> {
        let (upstream, state) = self
            .states
            .iter_mut()
            .enumerate()
            .find(|(_, s)| s.probe.is_some_and(|(l, i, _)| l == link && i == id))?;
        *state = State::default();
        Some(upstream as u16)
    }

    /// Probes that got no reply by `now`, or whose link closed (`closed`): each counts a
    /// failure and the next probe is scheduled. Returns the upstreams that failed one.
    pub fn expire(&mut self, now: Instant, closed: Option<Link>) -> Vec<u16> {
        let mut failed = Vec::new();
        for (upstream, state) in self.states.iter_mut().enumerate() {
            let Some((link, _, deadline)) = state.probe else {
                continue;
            };
            if deadline <= now || closed == Some(link) {
                state.probe = None;
                state.fails = state.fails.saturating_add(1);
                state.next_probe = Some(now + self.specs[upstream].interval);
                failed.push(upstream as u16);
            }
        }
        failed
    }

    /// The earliest probe deadline or due time.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.states
            .iter()
            .flat_map(|s| [s.next_probe, s.probe.map(|p| p.2)])
            .flatten()
            .min()
    }

    /// The upstreams a query of server block `server` tries, in order: the healthy ones of
    /// `upstreams` ordered by `policy` (`random` draws from `pick`, called with the number of
    /// choices). `None`: every one is down.
    pub fn order(
        &mut self,
        server: usize,
        upstreams: &[usize],
        policy: Policy,
        mut pick: impl FnMut(usize) -> usize,
    ) -> Option<Vec<u16>> {
        let mut healthy: Vec<u16> = upstreams
            .iter()
            .map(|&u| u as u16)
            .filter(|&u| !self.is_down(u))
            .collect();
        if healthy.is_empty() {
            return None;
        }
        match policy {
            Policy::Sequential => {}
            Policy::RoundRobin => {
                if let Some(turn) = self.rotation.get_mut(server) {
                    let start = *turn % healthy.len();
                    *turn = turn.wrapping_add(1);
                    healthy.rotate_left(start);
                }
            }
            Policy::Random => {
                // Fisher-Yates.
                for i in (1..healthy.len()).rev() {
                    let j = pick(i + 1);
                    healthy.swap(i, j);
                }
            }
        }
        Some(healthy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Protocol;
    use crate::config::{ForwardConfig, ServerConfig, UpstreamConfig};

    fn config(max_fails: u32) -> Config {
        Config {
            listeners: Vec::new(),
            servers: vec![ServerConfig {
                zone: vec![0],
                zone_text: ".".into(),
                cache: None,
                forward: Some(ForwardConfig {
                    upstreams: vec![0, 1, 2],
                    max_fails,
                    ..ForwardConfig::default()
                }),
                log_errors: false,
            }],
            upstreams: (0..3)
                .map(|i| UpstreamConfig {
                    addr: ([127, 0, 0, 1], 1000 + i).into(),
                })
                .collect(),
            limits: Default::default(),
        }
    }

    fn link(upstream: u16) -> Link {
        Link {
            upstream,
            protocol: Protocol::Udp,
            conn: 0,
        }
    }

    #[test]
    fn failed_probes_take_an_upstream_down_and_one_answer_brings_it_back() {
        let t0 = Instant::now();
        let mut health = Health::new(&config(2));
        assert!(health.due(t0).is_empty());
        health.exchange_failed(t0, 1);
        let mut now = t0;
        for round in 1..=3u32 {
            assert_eq!(
                health.due(now),
                vec![Probe { upstream: 1 }],
                "round {round}"
            );
            health.probe_sent(now, 1, link(1), round as u16);
            assert!(health.is_probe(link(1), round as u16));
            assert!(health.due(now).is_empty(), "one probe at a time");
            now += PROBE_TIMEOUT;
            assert_eq!(health.expire(now, None), vec![1]);
            assert_eq!(health.fails(1), round);
            assert_eq!(health.is_down(1), round > 2);
            now += Duration::from_millis(500);
        }
        assert_eq!(health.next_deadline(), Some(now));
        health.probe_sent(now, 1, link(1), 9);
        assert_eq!(health.probe_answered(link(1), 9), Some(1));
        assert!(!health.is_down(1));
        assert_eq!(health.next_deadline(), None, "probing stops");
    }

    #[test]
    fn max_fails_zero_never_probes_nor_goes_down() {
        let now = Instant::now();
        let mut health = Health::new(&config(0));
        health.exchange_failed(now, 0);
        assert!(health.due(now).is_empty());
        assert!(!health.is_down(0));
    }

    #[test]
    fn order_skips_down_upstreams_and_follows_the_policy() {
        let now = Instant::now();
        let mut health = Health::new(&config(1));
        let all = [0usize, 1, 2];
        assert_eq!(
            health.order(0, &all, Policy::Sequential, |_| 0),
            Some(vec![0, 1, 2])
        );
        let turns: Vec<_> = (0..3)
            .map(|_| health.order(0, &all, Policy::RoundRobin, |_| 0).unwrap()[0])
            .collect();
        assert_eq!(turns, vec![0, 1, 2]);
        // Fisher-Yates with draws 2 (of 3: keep) then 0 (of 2: swap the first two).
        let mut draws = [2usize, 0].into_iter();
        assert_eq!(
            health.order(0, &all, Policy::Random, |_| draws.next().unwrap()),
            Some(vec![1, 0, 2])
        );
        // Take upstream 0 down: two failed probes with max_fails 1.
        health.exchange_failed(now, 0);
        for id in 0..2 {
            health.probe_sent(now, 0, link(0), id);
            health.expire(now + PROBE_TIMEOUT, Some(link(0)));
        }
        assert!(health.is_down(0));
        assert_eq!(
            health.order(0, &all, Policy::Sequential, |_| 0),
            Some(vec![1, 2])
        );
        assert_eq!(health.order(0, &[0], Policy::Sequential, |_| 0), None);
    }
}
