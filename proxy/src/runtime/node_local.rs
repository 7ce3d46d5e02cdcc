//! Node-local mode (`-localip` given): what shardns does as NodeLocal DNSCache's agent
//! beside serving, over the `shardns-node` crate.
//!
//! - Before the Corefile is loaded ([`NodeLocal::generate`]): node-cache's template filled
//!   from the environment, the kube-dns ConfigMap and resolv.conf, and written to `-conf`.
//!   A Corefile that cannot be written there (a full or read-only disk) is served from memory
//!   all the same: the error is logged naming the file and counted (`configmap`), reloads
//!   build the text in memory rather than what the file holds
//!   ([`NodeLocal::unwritten_corefile`]), and the write is tried again at every poll of the
//!   `corefile-watch` thread until it succeeds. (node-cache stops when it cannot write its
//!   Corefile at start-up, and keeps serving the old one when it cannot write a new one.)
//! - Before binding ([`NodeLocal::prepare`]): the interface holding the local IPs.
//! - Once serving ([`NodeLocal::install`]): the NOTRACK rules; then two threads: `node-sync`
//!   re-checks the interface and the rules every `-syncinterval`, `corefile-watch` polls the
//!   template's and the ConfigMap's directories and, when it writes a new Corefile, raises
//!   the reload flag (the path SIGUSR1 takes).
//! - At the stop: [`NodeLocal::withdraw`] first (the threads stop, the rules go: new queries
//!   reach the cluster DNS again), then, once the shards have drained,
//!   [`NodeLocal::finish`] (the threads joined, the interface deleted). `-skipteardown`
//!   leaves rules and interface in place.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::Context;
use shardns_node::kubedns::kube_dns_directory;
use shardns_node::watch::POLL_PERIOD;
use shardns_node::{
    CorefileSettings, CorefileSync, NodePlan, NodeSetup, RuleDesign, SetupErrors, Startup,
    WatchEvent, spawn_watch,
};

use crate::cli::Args;

/// Longest the `node-sync` thread sleeps before looking at its stop flag.
const STOP_CHECK: Duration = Duration::from_millis(100);

/// Node-local mode's state through a run.
#[derive(Debug)]
pub(crate) struct NodeLocal {
    /// Where the generated Corefile goes (`-conf`, else `-corefile`).
    conf: PathBuf,
    sync: Option<CorefileSync>,
    setup: Arc<Mutex<NodeSetup>>,
    rules_in_place: Arc<AtomicBool>,
    errors: Arc<SetupErrors>,
    /// The generated Corefile while `conf` does not hold it (it could not be written): what
    /// runs, and what a reload builds.
    unwritten: Arc<Mutex<Option<String>>>,
    sync_interval: Duration,
    skip_teardown: bool,
    /// Another process took over: nothing is torn down.
    handed_off: bool,
    /// Set while the rules are out on purpose (the supervisor failed open): `node-sync`
    /// checks the interface only.
    rules_out: Arc<AtomicBool>,
    /// Stops the two threads (before the rules are withdrawn).
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// The start-up Corefile of node-local mode.
#[derive(Debug)]
pub(crate) struct Generated {
    pub node: NodeLocal,
    /// Its text, also written to [`Generated::path`] unless only validating.
    pub corefile: String,
    pub path: PathBuf,
}

impl NodeLocal {
    /// node-cache's start-up: the Corefile made from the template (`-basecorefile`) with
    /// `$<UPSTREAMSVC>_SERVICE_HOST`, the kube-dns ConfigMap and resolv.conf, and written to
    /// `-conf` (or `-corefile` when `-conf` is not given) unless `write` is false. An invalid
    /// ConfigMap is logged, counted and left out; a missing variable or an unreadable template
    /// is an error naming it.
    pub(crate) fn generate(args: &Args, write: bool) -> anyhow::Result<Generated> {
        let flags = &args.node_cache;
        let local_ips = flags
            .local_ips
            .as_ref()
            .context("node-local mode needs -localip")?
            .addresses()
            .to_vec();
        let settings = CorefileSettings {
            dns_port: flags.dns_port,
            upstream_service: flags.upstream_service.clone(),
            base_corefile: flags.base_corefile.clone(),
            kube_dns_directory: kube_dns_directory(flags.kube_dns_configmap.as_deref()),
            resolv_conf: args.resolv_conf.clone(),
            ..CorefileSettings::new(local_ips.clone())
        };
        let errors = Arc::new(SetupErrors::new());
        let Startup {
            sync,
            corefile,
            errors: problems,
        } = CorefileSync::start(
            settings,
            |name| std::env::var(name).ok(),
            POLL_PERIOD,
            Instant::now(),
            &shardns_node::watch::FileSystem,
        )?;
        for problem in problems {
            tracing::warn!("{problem}");
            if let Some(error_type) = problem.setup_error_type() {
                errors.record(error_type);
            }
        }
        let path = args.conf.clone().unwrap_or_else(|| flags.corefile.clone());
        let mut unwritten = None;
        if write {
            match shardns_node::write_atomically(&path, &corefile) {
                Ok(()) => tracing::info!(
                    "Corefile written to {} from {}",
                    path.display(),
                    flags.base_corefile.display()
                ),
                Err(error) => {
                    tracing::error!(
                        "{error}; serving it from memory, and writing it again every {} s",
                        POLL_PERIOD.as_secs()
                    );
                    errors.record(error.setup_error_type());
                    unwritten = Some(corefile.clone());
                }
            }
        }
        let plan = NodePlan {
            local_ips,
            interface: flags.setup_interface.then(|| flags.interface_name.clone()),
            iptables: flags.setup_iptables,
            dns_port: flags.dns_port,
            health_port: flags.health_port,
            design: if args.fail_open_rules {
                RuleDesign::FailOpen
            } else {
                RuleDesign::NodeCache
            },
        };
        let setup = NodeSetup::new(&plan, args.iptables.mode(), Arc::clone(&errors));
        let rules_in_place = setup.rules_in_place();
        let manages_rules = setup.manages_rules();
        let node = NodeLocal {
            conf: path.clone(),
            sync: Some(sync),
            setup: Arc::new(Mutex::new(setup)),
            rules_in_place: if manages_rules {
                rules_in_place
            } else {
                Arc::new(AtomicBool::new(true))
            },
            errors,
            unwritten: Arc::new(Mutex::new(unwritten)),
            sync_interval: flags.sync_interval,
            skip_teardown: flags.skip_teardown,
            handed_off: false,
            rules_out: Arc::new(AtomicBool::new(false)),
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
        };
        Ok(Generated {
            node,
            corefile,
            path,
        })
    }

    /// The setup error counters, for the metrics page.
    pub(crate) fn errors(&self) -> Arc<SetupErrors> {
        Arc::clone(&self.errors)
    }

    /// The generated Corefile while `-conf` does not hold it (it could not be written), for
    /// reloads to build instead of the file.
    pub(crate) fn unwritten_corefile(&self) -> Arc<Mutex<Option<String>>> {
        Arc::clone(&self.unwritten)
    }

    /// Whether `-conf` does not hold the generated Corefile (it could not be written).
    pub(crate) fn corefile_unwritten(&self) -> bool {
        self.unwritten
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// Set while the rules are in place (always set when shardns does not manage rules).
    pub(crate) fn rules_in_place(&self) -> Option<Arc<AtomicBool>> {
        self.setup()
            .manages_rules()
            .then(|| Arc::clone(&self.rules_in_place))
    }

    fn setup(&self) -> std::sync::MutexGuard<'_, NodeSetup> {
        self.setup.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Before binding: the interface with the local IPs. A failure is logged and counted; the
    /// bind that follows says whether the addresses are there.
    pub(crate) fn prepare(&self) {
        let started = Instant::now();
        if self.setup().prepare().is_ok() {
            tracing::debug!("interface ready in {} ms", started.elapsed().as_millis());
        }
    }

    /// Once every listener serves: the rules, then the `node-sync` and `corefile-watch`
    /// threads. A Corefile written by the watch raises `reload`.
    pub(crate) fn install(&mut self, reload: Arc<AtomicBool>) -> anyhow::Result<()> {
        self.setup().install();
        let setup = Arc::clone(&self.setup);
        let stop = Arc::clone(&self.stop);
        let rules_out = Arc::clone(&self.rules_out);
        let interval = self.sync_interval;
        let keeper = thread::Builder::new()
            .name("node-sync".to_string())
            .spawn(move || keep(&setup, interval, &rules_out, &stop))
            .context("cannot start the node-sync thread")?;
        self.threads.push(keeper);
        if let Some(sync) = self.sync.take() {
            let errors = Arc::clone(&self.errors);
            let unwritten = Arc::clone(&self.unwritten);
            let pending = unwritten
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            let watch = spawn_watch(
                sync,
                self.conf.clone(),
                pending,
                Arc::clone(&self.stop),
                move |event| {
                    if let Some(error_type) = event.setup_error_type() {
                        errors.record(error_type);
                    }
                    let mut unwritten = unwritten.lock().unwrap_or_else(PoisonError::into_inner);
                    match event {
                        WatchEvent::Written { .. } => {
                            *unwritten = None;
                            reload.store(true, Ordering::SeqCst);
                        }
                        // Served from memory; reloaded once, not at every try.
                        WatchEvent::WriteFailed { corefile, .. }
                            if unwritten.as_ref() != Some(&corefile) =>
                        {
                            *unwritten = Some(corefile);
                            reload.store(true, Ordering::SeqCst);
                        }
                        _ => {}
                    }
                },
            )
            .context("cannot start the corefile-watch thread")?;
            self.threads.push(watch);
        }
        Ok(())
    }

    /// The first step of the stop: the threads are told to stop and the rules removed (unless
    /// `-skipteardown`), so new queries go to the cluster DNS while those already here are
    /// answered.
    pub(crate) fn withdraw(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if self.handed_off {
            tracing::info!("handed over: leaving the rules and the interface to the successor");
            return;
        }
        if self.skip_teardown {
            tracing::info!("-skipteardown: leaving the rules and the interface in place");
            return;
        }
        self.setup().withdraw();
    }

    /// The last step of the stop: the threads joined and the interface deleted (unless
    /// `-skipteardown`).
    pub(crate) fn finish(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                tracing::error!("a node-local thread panicked");
            }
        }
        if !self.skip_teardown && !self.handed_off {
            self.setup().remove_interface();
        }
    }

    /// Fails open (a supervisor whose worker keeps dying): the rules go, so pods' queries
    /// reach the cluster DNS again, and stay out until [`NodeLocal::restore_rules`].
    pub(crate) fn fail_open(&self) {
        self.rules_out.store(true, Ordering::SeqCst);
        self.setup().withdraw();
    }

    /// The rules back in after [`NodeLocal::fail_open`].
    pub(crate) fn restore_rules(&self) {
        self.rules_out.store(false, Ordering::SeqCst);
        self.setup().install();
    }

    /// The node now belongs to the process that took this one over: the stop leaves the
    /// rules and the interface as they are.
    pub(crate) fn hand_over(&mut self) {
        self.handed_off = true;
    }
}

/// The `node-sync` thread: the interface and the rules re-checked every `interval` until
/// `stop` (the interface only while `rules_out`).
fn keep(setup: &Mutex<NodeSetup>, interval: Duration, rules_out: &AtomicBool, stop: &AtomicBool) {
    let mut next = Instant::now() + interval;
    while !stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        if now >= next {
            let mut setup = setup.lock().unwrap_or_else(PoisonError::into_inner);
            let report = if rules_out.load(Ordering::SeqCst) {
                setup.check_interface();
                None
            } else {
                setup.check()
            };
            drop(setup);
            if let Some(report) = report
                && (report.inserted > 0 || report.duplicates_removed > 0 || report.failed > 0)
            {
                tracing::info!(
                    inserted = report.inserted,
                    duplicates_removed = report.duplicates_removed,
                    failed = report.failed,
                    "iptables rules re-checked"
                );
            }
            next = Instant::now() + interval;
        }
        thread::sleep(
            next.saturating_duration_since(Instant::now())
                .min(STOP_CHECK),
        );
    }
}
