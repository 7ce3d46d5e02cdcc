//! Upstream health as one shard sees it, with CoreDNS `forward` semantics: an exchange error
//! starts probing the upstream (`. IN NS`, every `health_check` interval) until a probe gets
//! any reply; each failed probe counts a failure, a good one clears them; the upstream is down
//! while it has more than `max_fails` failures (`max_fails 0`: never down). Down upstreams are
//! skipped when choosing where a query goes. No sockets, no clock: callers pass `now`.

use std::time::{Duration, Instant};

use crate::Link;
use crate::config::{Config, Policy};
use crate::timer::{Timer, TimerTable};

/// How long a probe waits for its reply.
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// What the probes of one upstream look like (from the first `forward` naming it).
#[derive(Debug, Clone)]
pub(crate) struct ProbeSpec {
    pub(crate) interval: Duration,
    pub(crate) max_fails: u32,
    /// The probe's name, lowercase wire form.
    pub(crate) name: Vec<u8>,
    pub(crate) recursion: bool,
    pub(crate) tcp: bool,
}

impl ProbeSpec {
    /// `max_fails 0` or `health_check 0` turn health checking off, as in CoreDNS.
    fn enabled(&self) -> bool {
        self.max_fails != 0 && !self.interval.is_zero()
    }
}

#[derive(Debug, Clone, Default)]
struct State {
    fails: u32,
    /// The probe in flight: link and wire ID (its deadline is a [`Timer::ProbeReply`]).
    probe: Option<(Link, u16)>,
}

/// Health of every upstream of the configuration. While an upstream is being probed, it
/// has either a probe in flight or a [`Timer::ProbeDue`] in the engine's table.
#[derive(Debug, Clone)]
pub(crate) struct Health {
    specs: Vec<ProbeSpec>,
    states: Vec<State>,
    /// Round-robin position per server block.
    rotation: Vec<usize>,
}

impl Health {
    /// Everything healthy.
    pub(crate) fn new(config: &Config) -> Health {
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
    pub(crate) fn spec(&self, upstream: u16) -> Option<&ProbeSpec> {
        self.specs.get(upstream as usize)
    }

    /// Whether `upstream` is down (more than `max_fails` failed probes in a row).
    pub(crate) fn is_down(&self, upstream: u16) -> bool {
        let (Some(spec), Some(state)) = (
            self.specs.get(upstream as usize),
            self.states.get(upstream as usize),
        ) else {
            return false;
        };
        spec.enabled() && state.fails > spec.max_fails
    }

    /// An exchange with `upstream` failed (timeout, refused, reset): probe it now, unless
    /// already probing (CoreDNS starts its health checker the same way).
    pub(crate) fn exchange_failed(&mut self, now: Instant, upstream: u16, timers: &mut TimerTable) {
        let (Some(spec), Some(state)) = (
            self.specs.get(upstream as usize),
            self.states.get(upstream as usize),
        ) else {
            return;
        };
        let probing = state.probe.is_some() || timers.contains(Timer::ProbeDue(upstream));
        if spec.enabled() && !probing {
            timers.set(Timer::ProbeDue(upstream), now);
        }
    }

    /// A probe went out to `upstream` on `link` with wire ID `id`.
    pub(crate) fn probe_sent(
        &mut self,
        now: Instant,
        upstream: u16,
        (link, id): (Link, u16),
        timers: &mut TimerTable,
    ) {
        if let Some(state) = self.states.get_mut(upstream as usize) {
            state.probe = Some((link, id));
            timers.clear(Timer::ProbeDue(upstream));
            timers.set(Timer::ProbeReply(upstream), now + PROBE_TIMEOUT);
        }
    }

    /// The link of `upstream`'s probe in flight, if any.
    pub(crate) fn probe_link(&self, upstream: u16) -> Option<Link> {
        self.states
            .get(usize::from(upstream))?
            .probe
            .map(|(link, _)| link)
    }

    /// The links of every probe in flight.
    pub(crate) fn probe_links(&self) -> Vec<Link> {
        self.states
            .iter()
            .filter_map(|s| s.probe.map(|(link, _)| link))
            .collect()
    }

    /// Whether wire ID `id` on `link` belongs to a probe in flight.
    pub(crate) fn is_probe(&self, link: Link, id: u16) -> bool {
        self.states.iter().any(|s| s.probe == Some((link, id)))
    }

    /// A reply (any parseable one) to the probe on `link` with ID `id`: healthy again, and
    /// probing stops. Returns the upstream, and whether it was down until now.
    pub(crate) fn probe_answered(
        &mut self,
        link: Link,
        id: u16,
        timers: &mut TimerTable,
    ) -> Option<(u16, bool)> {
        let upstream = self
            .states
            .iter()
            .position(|s| s.probe == Some((link, id)))? as u16;
        let was_down = self.is_down(upstream);
        self.states[usize::from(upstream)] = State::default();
        timers.clear(Timer::ProbeReply(upstream));
        timers.clear(Timer::ProbeDue(upstream));
        Some((upstream, was_down))
    }

    /// The probe of `upstream` failed (no reply by its deadline, or its link closed): one
    /// more failure, and the next probe is due after the interval. Returns whether this
    /// failure took the upstream down.
    pub(crate) fn probe_failed(
        &mut self,
        now: Instant,
        upstream: u16,
        timers: &mut TimerTable,
    ) -> bool {
        let was_down = self.is_down(upstream);
        let (Some(spec), Some(state)) = (
            self.specs.get(upstream as usize),
            self.states.get_mut(upstream as usize),
        ) else {
            return false;
        };
        state.probe = None;
        state.fails = state.fails.saturating_add(1);
        timers.clear(Timer::ProbeReply(upstream));
        timers.set(Timer::ProbeDue(upstream), now + spec.interval);
        !was_down && self.is_down(upstream)
    }

    /// Failed probes in a row of `upstream`.
    pub(crate) fn fails(&self, upstream: u16) -> u32 {
        self.states
            .get(usize::from(upstream))
            .map_or(0, |s| s.fails)
    }

    /// `link` closed: the probes in flight on it failed. Returns their upstreams, each with
    /// whether this took it down.
    pub(crate) fn link_closed(
        &mut self,
        now: Instant,
        link: Link,
        timers: &mut TimerTable,
    ) -> Vec<(u16, bool)> {
        let failed: Vec<u16> = (0..self.states.len())
            .filter(|&u| self.states[u].probe.is_some_and(|(l, _)| l == link))
            .map(|u| u as u16)
            .collect();
        failed
            .into_iter()
            .map(|upstream| (upstream, self.probe_failed(now, upstream, timers)))
            .collect()
    }

    /// The upstreams a query of server block `server` tries, in order: the healthy ones of
    /// `upstreams` ordered by `policy` (`random` draws from `pick`, called with the number of
    /// choices). `None`: every one is down.
    pub(crate) fn order(
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
                log_queries: None,
                loop_probe: None,
                acl: None,
                ratelimit: None,
                fastpath: None,
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
        let mut timers = TimerTable::default();
        let mut health = Health::new(&config(2));
        assert_eq!(timers.next_deadline(), None);
        health.exchange_failed(t0, 1, &mut timers);
        health.exchange_failed(t0, 1, &mut timers);
        let mut now = t0;
        for round in 1..=3u32 {
            assert_eq!(
                timers.pop_due(now),
                Some(Timer::ProbeDue(1)),
                "round {round}"
            );
            health.probe_sent(now, 1, (link(1), round as u16), &mut timers);
            assert!(health.is_probe(link(1), round as u16));
            health.exchange_failed(now, 1, &mut timers);
            assert_eq!(timers.len(), 1, "one probe at a time");
            now += PROBE_TIMEOUT;
            assert_eq!(timers.pop_due(now), Some(Timer::ProbeReply(1)));
            let went_down = health.probe_failed(now, 1, &mut timers);
            assert_eq!(went_down, round == 3, "down once, at the third failure");
            assert_eq!(health.states[1].fails, round);
            assert_eq!(health.is_down(1), round > 2);
            now += Duration::from_millis(500);
        }
        assert_eq!(timers.next_deadline(), Some(now));
        assert_eq!(timers.pop_due(now), Some(Timer::ProbeDue(1)));
        health.probe_sent(now, 1, (link(1), 9), &mut timers);
        assert_eq!(
            health.probe_answered(link(1), 9, &mut timers),
            Some((1, true)),
            "it was down"
        );
        assert!(!health.is_down(1));
        assert_eq!(timers.next_deadline(), None, "probing stops");
    }

    #[test]
    fn a_closed_link_fails_its_probe() {
        let now = Instant::now();
        let mut timers = TimerTable::default();
        let mut health = Health::new(&config(2));
        health.exchange_failed(now, 2, &mut timers);
        assert_eq!(timers.pop_due(now), Some(Timer::ProbeDue(2)));
        health.probe_sent(now, 2, (link(2), 5), &mut timers);
        assert!(health.link_closed(now, link(1), &mut timers).is_empty());
        assert_eq!(
            health.link_closed(now, link(2), &mut timers),
            vec![(2, false)]
        );
        assert_eq!(health.states[2].fails, 1);
        assert!(!timers.contains(Timer::ProbeReply(2)));
        assert_eq!(
            timers.pop_due(now + Duration::from_millis(500)),
            Some(Timer::ProbeDue(2))
        );
    }

    #[test]
    fn max_fails_zero_never_probes_nor_goes_down() {
        let now = Instant::now();
        let mut timers = TimerTable::default();
        let mut health = Health::new(&config(0));
        health.exchange_failed(now, 0, &mut timers);
        assert_eq!(timers.next_deadline(), None);
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
        let mut timers = TimerTable::default();
        health.exchange_failed(now, 0, &mut timers);
        for id in 0..2 {
            health.probe_sent(now, 0, (link(0), id), &mut timers);
            health.link_closed(now + PROBE_TIMEOUT, link(0), &mut timers);
        }
        assert!(health.is_down(0));
        assert_eq!(
            health.order(0, &all, Policy::Sequential, |_| 0),
            Some(vec![1, 2])
        );
        assert_eq!(health.order(0, &[0], Policy::Sequential, |_| 0), None);
    }
}
