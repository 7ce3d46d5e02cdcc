//! Live configuration reload: on SIGUSR1, and every `reload` INTERVAL ± JITTER, the Corefile is
//! read and built again; if what it says changed, every shard gets the new [`Config`] and
//! swaps it keeping its cache (CoreDNS empties its cache on reload). A Corefile that does not
//! build is logged with its FILE:LINE and the running configuration stays. Server blocks may
//! come and go (a stub domain added to the kube-dns ConfigMap): the new configuration is
//! re-indexed so that running blocks keep their index ([`Config::aligned_to`]). Listening
//! addresses and HTTP endpoints (checked here, and by [`Config::check_reload`], the rule every
//! shard applies too) need a restart: such a change is refused.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rand::Rng;
use shardns_shard::{Config, Control, ShardControl};

use super::readiness::Readiness;
use crate::corefile::{self, ConfigError, ProcessConfig, ReloadSettings};
use crate::metrics::Exposition;

/// How often the reload thread looks at its flags.
const TICK: Duration = Duration::from_millis(50);

/// Why a reload was not applied.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(
        "{0} changed; a restart is needed to apply it (still serving the previous configuration)"
    )]
    RestartNeeded(&'static str),
}

/// What the running process was started with, and how to read it again.
#[derive(Debug)]
pub(crate) struct Reloader {
    conf: Option<PathBuf>,
    resolv_conf: PathBuf,
    /// The listening addresses as the Corefile writes them (port 0 included).
    written: Vec<SocketAddr>,
    /// The same, as bound (port 0 replaced by the port the kernel gave).
    bound: Vec<SocketAddr>,
    metrics: Vec<SocketAddr>,
    health: Vec<SocketAddr>,
    ready: Vec<SocketAddr>,
    current: Arc<Config>,
    /// `reload` directive of the running configuration.
    pub interval: Option<ReloadSettings>,
    /// The metrics page, relabelled for the new upstreams on reload; failed reloads are
    /// counted there.
    page: Option<Arc<Mutex<Exposition>>>,
    /// `/ready`'s state, told the new cluster zone's upstreams on reload.
    readiness: Option<Arc<Readiness>>,
    /// Node-local mode: the generated Corefile while `conf` does not hold it (it could not
    /// be written); a reload builds it instead of the file.
    unwritten: Option<Arc<Mutex<Option<String>>>>,
}

impl Reloader {
    /// `started` is the configuration as built from the Corefile; `running` the same with the
    /// bound addresses, as the shards run it.
    pub(crate) fn new(
        conf: Option<PathBuf>,
        resolv_conf: PathBuf,
        started: &ProcessConfig,
        running: Arc<Config>,
    ) -> Reloader {
        Reloader {
            conf,
            resolv_conf,
            written: started.config.listeners.iter().map(|l| l.addr).collect(),
            bound: running.listeners.iter().map(|l| l.addr).collect(),
            metrics: started.metrics.clone(),
            health: started.health.clone(),
            ready: started.ready.clone(),
            current: running,
            interval: started.reload,
            page: None,
            readiness: None,
            unwritten: None,
        }
    }

    /// Builds `unwritten` instead of the file while it holds a Corefile (node-local mode's
    /// Corefile that could not be written to `conf`).
    pub(crate) fn with_unwritten(mut self, unwritten: Arc<Mutex<Option<String>>>) -> Reloader {
        self.unwritten = Some(unwritten);
        self
    }

    /// Keeps `exposition`'s labels in step with reloads, and counts failed reloads on it
    /// (`coredns_reload_failed_total`).
    pub(crate) fn with_metrics(mut self, exposition: Arc<Mutex<Exposition>>) -> Reloader {
        self.page = Some(exposition);
        self
    }

    /// Tells `readiness` of each new configuration.
    pub(crate) fn with_readiness(mut self, readiness: Arc<Readiness>) -> Reloader {
        self.readiness = Some(readiness);
        self
    }

    /// Relabels the metrics page for `config`, and tells readiness.
    fn relabel(&self, config: &Config) {
        if let Some(exposition) = &self.page {
            let mut page = exposition.lock().unwrap_or_else(PoisonError::into_inner);
            *page = page.relabel(config);
        }
        if let Some(readiness) = &self.readiness {
            readiness.reconfigured(config);
        }
    }

    /// Counts a failed reload.
    fn count_failure(&self) {
        if let Some(exposition) = &self.page {
            let page = exposition.lock().unwrap_or_else(PoisonError::into_inner);
            page.process().reload_failed.inc();
        }
    }

    /// Reads and builds the Corefile again. `Ok(Some(config))`: it changed, and `config` is
    /// what the shards must now run; `Ok(None)`: nothing changed.
    pub(crate) fn check(&mut self) -> Result<Option<Arc<Config>>, ReloadError> {
        let unwritten = self
            .unwritten
            .as_ref()
            .and_then(|text| text.lock().unwrap_or_else(PoisonError::into_inner).clone());
        let process = match (unwritten, &self.conf) {
            (Some(text), Some(conf)) => {
                corefile::build_process(&conf.display().to_string(), &text)?
            }
            _ => corefile::load(self.conf.as_deref(), &self.resolv_conf)?,
        };
        let mut next = process.config;
        let written: Vec<SocketAddr> = next.listeners.iter().map(|l| l.addr).collect();
        if written != self.written {
            return Err(ReloadError::RestartNeeded("the listening addresses"));
        }
        if process.metrics != self.metrics {
            return Err(ReloadError::RestartNeeded("the prometheus addresses"));
        }
        if process.health != self.health {
            return Err(ReloadError::RestartNeeded("the health addresses"));
        }
        if process.ready != self.ready {
            return Err(ReloadError::RestartNeeded("the ready addresses"));
        }
        // As written they are the same, so they are the same as bound (port 0 included).
        for (listener, addr) in next.listeners.iter_mut().zip(&self.bound) {
            listener.addr = *addr;
        }
        // Blocks keep their index: new ones after, removed ones retired.
        let mut next = next.aligned_to(&self.current);
        // What the shards may take without a restart: the rule they apply themselves.
        self.current
            .check_reload(&next)
            .map_err(|restart| ReloadError::RestartNeeded(restart.what()))?;
        // Limits come from the command line, not the Corefile.
        next.limits = self.current.limits;
        // The `loop` checks running are the blocks' (the same blocks, as checked above); a new
        // probe would have a name the prober never sends.
        for (server, current) in next.servers.iter_mut().zip(&self.current.servers) {
            if server.loop_probe.is_some() && current.loop_probe.is_some() {
                server.loop_probe.clone_from(&current.loop_probe);
            }
        }
        self.interval = process.reload;
        if next == *self.current {
            return Ok(None);
        }
        let next = Arc::new(next);
        self.current = Arc::clone(&next);
        Ok(Some(next))
    }
}

/// Starts the reload thread: it reloads on `usr1` and every `reload` interval, until
/// `shutdown`.
pub(crate) fn start(
    mut reloader: Reloader,
    control: ShardControl,
    usr1: Arc<AtomicBool>,
    shutdown: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    thread::Builder::new()
        .name("reload".to_string())
        .spawn(move || {
            let mut next_check = reloader.interval.map(|r| Instant::now() + pick(r));
            while !shutdown.load(Ordering::SeqCst) {
                thread::sleep(TICK);
                let signalled = usr1.swap(false, Ordering::SeqCst);
                let due = next_check.is_some_and(|at| Instant::now() >= at);
                if !signalled && !due {
                    continue;
                }
                match reloader.check() {
                    Ok(Some(config)) => {
                        reloader.relabel(&config);
                        let shards = control.broadcast(&Control::Reconfigure(config));
                        tracing::info!("reloading the configuration on {shards} shards");
                    }
                    Ok(None) if signalled => {
                        tracing::info!("reload: the configuration is unchanged")
                    }
                    Ok(None) => {}
                    Err(error) => {
                        reloader.count_failure();
                        tracing::error!("reload failed: {error}");
                    }
                }
                next_check = reloader.interval.map(|r| Instant::now() + pick(r));
            }
        })
}

/// The next wait: INTERVAL ± a random part of JITTER.
fn pick(settings: ReloadSettings) -> Duration {
    let jitter = settings.jitter.as_millis() as i64;
    let offset = if jitter > 0 {
        rand::rng().random_range(-jitter..=jitter)
    } else {
        0
    };
    let millis = settings.interval.as_millis() as i64 + offset;
    Duration::from_millis(millis.max(1) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_stay_within_the_jitter() {
        let settings = ReloadSettings {
            interval: Duration::from_secs(30),
            jitter: Duration::from_secs(15),
        };
        let waits: Vec<Duration> = (0..200).map(|_| pick(settings)).collect();
        assert!(
            waits
                .iter()
                .all(|w| *w >= Duration::from_secs(15) && *w <= Duration::from_secs(45))
        );
        assert!(waits.iter().any(|w| *w < Duration::from_secs(25)));
        assert!(waits.iter().any(|w| *w > Duration::from_secs(35)));
    }

    fn write(dir: &std::path::Path, text: &str) -> PathBuf {
        let path = dir.join("Corefile");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn changes_are_applied_and_restart_only_changes_refused() {
        let dir = std::env::temp_dir().join(format!("shardns-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = write(
            &dir,
            ".:0 {\n bind 127.0.0.1\n cache 30\n forward . 127.0.0.1:1053\n}\n",
        );
        let resolv = dir.join("resolv.conf");
        let started = corefile::load(Some(&path), &resolv).unwrap();
        let mut running = started.config.clone();
        running.listeners[0].addr = "127.0.0.1:40000".parse().unwrap();
        let mut reloader = Reloader::new(Some(path.clone()), resolv, &started, Arc::new(running));
        assert!(reloader.check().unwrap().is_none(), "unchanged");
        // Comments and spacing are not changes.
        write(
            &dir,
            "# a comment\n.:0 {\n   bind 127.0.0.1\n cache 30\n forward . 127.0.0.1:1053\n}\n",
        );
        assert!(reloader.check().unwrap().is_none());
        write(
            &dir,
            ".:0 {\n bind 127.0.0.1\n cache 60\n forward . 127.0.0.1:2053\n reload 5s\n}\n",
        );
        let next = reloader.check().unwrap().expect("changed");
        assert_eq!(
            next.listeners[0].addr,
            "127.0.0.1:40000".parse().unwrap(),
            "bound address kept"
        );
        assert_eq!(next.upstreams[0].addr, "127.0.0.1:2053".parse().unwrap());
        assert_eq!(
            reloader.interval.map(|r| r.interval),
            Some(Duration::from_secs(5))
        );
        write(&dir, ".:0 {\n bind 127.0.0.1\n cache 0\n}\n");
        let error = reloader.check().unwrap_err().to_string();
        assert!(error.contains("Corefile:3: bad cache TTL"), "{error}");
        write(&dir, ".:0 {\n bind 127.0.0.2\n}\n");
        assert!(matches!(
            reloader.check(),
            Err(ReloadError::RestartNeeded(_))
        ));
        // A block added on the same address (a stub domain), then removed: applied, the
        // removed one retired at its index.
        write(
            &dir,
            "example.:0 {\n bind 127.0.0.1\n forward . 127.0.0.1:3053\n}\n\
             .:0 {\n bind 127.0.0.1\n}\n",
        );
        let added = reloader.check().unwrap().expect("a block added");
        let zones: Vec<&str> = added.servers.iter().map(|s| s.zone_text.as_str()).collect();
        assert_eq!(zones, [".", "example."], "the running block keeps index 0");
        assert_eq!(added.listeners[0].servers, [1, 0]);
        write(&dir, ".:0 {\n bind 127.0.0.1\n}\n");
        let removed = reloader.check().unwrap().expect("a block removed");
        assert_eq!(removed.servers.len(), 2);
        assert!(removed.servers[1].forward.is_none(), "example. retired");
        assert_eq!(removed.listeners[0].servers, [0]);
        // An HTTP address added: a restart.
        write(&dir, ".:0 {\n bind 127.0.0.1\n health 127.0.0.1:0\n}\n");
        let error = reloader.check().unwrap_err().to_string();
        assert!(error.starts_with("the health addresses changed"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_running_loop_checks_are_kept() {
        let dir = std::env::temp_dir().join(format!("shardns-reload-loop-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = write(&dir, ".:0 {\n bind 127.0.0.1\n loop\n cache 30\n}\n");
        let resolv = dir.join("resolv.conf");
        let started = corefile::load(Some(&path), &resolv).unwrap();
        let running = Arc::new(started.config.clone());
        let probe = running.servers[0].loop_probe.clone().unwrap();
        let mut reloader = Reloader::new(Some(path.clone()), resolv, &started, running);
        write(&dir, ".:0 {\n bind 127.0.0.1\n loop\n cache 60\n}\n");
        let next = reloader.check().unwrap().expect("changed");
        let kept = next.servers[0].loop_probe.as_ref().unwrap();
        assert_eq!(kept.qname(), probe.qname(), "the probe the prober sends");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_unwritten_corefile_is_built_instead_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let good = ".:0 {\n bind 127.0.0.1\n cache 30\n forward . 127.0.0.1:1053\n}\n";
        let path = write(dir.path(), good);
        let resolv = dir.path().join("resolv.conf");
        let started = corefile::load(Some(&path), &resolv).unwrap();
        let unwritten = Arc::new(Mutex::new(Some(good.to_string())));
        let mut reloader = Reloader::new(
            Some(path.clone()),
            resolv,
            &started,
            Arc::new(started.config.clone()),
        )
        .with_unwritten(Arc::clone(&unwritten));
        // The file is stale (or gone): what runs is the text in memory.
        write(
            dir.path(),
            ".:0 {\n bind 127.0.0.1\n forward . 127.0.0.1:2053\n}\n",
        );
        assert!(reloader.check().unwrap().is_none(), "unchanged");
        std::fs::remove_file(&path).unwrap();
        assert!(reloader.check().unwrap().is_none(), "no file, no error");
        // A newer Corefile in memory is applied.
        *unwritten.lock().unwrap() = Some(good.replace("1053", "3053"));
        let next = reloader.check().unwrap().expect("changed");
        assert_eq!(next.upstreams[0].addr, "127.0.0.1:3053".parse().unwrap());
        // Written at last: the file again.
        *unwritten.lock().unwrap() = None;
        assert!(reloader.check().is_err(), "the file is gone");
        write(dir.path(), &good.replace("1053", "3053"));
        assert!(reloader.check().unwrap().is_none());
    }
}
