//! node-cache's Corefile sync without a clock: the base Corefile's directory and the kube-dns
//! ConfigMap directory polled together, and the Corefile text regenerated when either changes
//! (kubernetes/dns `cmd/node-cache/app/configmap.go`: `initDNSConfigSync`, `syncDNSConfig`,
//! `updateCorefile`; `cache_app.go`: `Init`).
//!
//! - **ConfigMap changed**: it is read and checked ([`KubeDnsConfig::from_files`]). Valid, it
//!   becomes the current one and the Corefile is regenerated; invalid, it is reported
//!   ([`SyncError::ConfigMap`]) and the current one stays, with no Corefile. A ConfigMap
//!   directory emptied (the optional ConfigMap deleted) is an empty ConfigMap.
//! - **Base Corefile's directory changed**: the Corefile is regenerated with the current
//!   ConfigMap.
//! - The base Corefile is read when regenerating; if it cannot be, that is reported
//!   ([`SyncError::BaseCorefile`]) and there is no Corefile.
//! - A directory that cannot be read is reported ([`SyncError::Directory`]) and changes
//!   nothing.
//!
//! The first poll reads both (the first read of each is a change), so it yields the start-up
//! Corefile: with the ConfigMap when it is valid, else without it (node-cache's `Init` writes
//! the Corefile from an empty ConfigMap before reading the real one).
//!
//! Unlike node-cache: a ConfigMap that kube-dns accepts but node-cache's own check refuses
//! does not become the current one (node-cache keeps it, so every later change of the base
//! Corefile is refused too until the ConfigMap is fixed); and a directory whose first read
//! fails is still watched (node-cache gives up on it).

use std::time::{Duration, Instant};

use thiserror::Error;

use super::poller::{DirectoryPoller, PollOutcome};
use super::source::{FileSource, SourceError};
use crate::corefile::{CorefileError, CorefileGenerator, CorefileSettings};
use crate::kubedns::{ConfigMapError, KubeDnsConfig};
use crate::setup_errors::SetupErrorType;

/// The base Corefile's directory and the ConfigMap directory, polled; the Corefile
/// regenerated when they change.
#[derive(Debug)]
pub struct CorefileSync {
    generator: CorefileGenerator,
    base: DirectoryPoller,
    config_map: Option<DirectoryPoller>,
}

/// What one [`CorefileSync::poll`] yields.
#[derive(Debug, Default)]
pub struct SyncOutcome {
    /// The new Corefile text to write to `-conf`, when something changed and it could be
    /// made.
    pub corefile: Option<String>,
    /// What went wrong, in the order it happened.
    pub errors: Vec<SyncError>,
}

/// Something the sync could not do.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SyncError {
    /// The kube-dns ConfigMap was refused; the current one stays.
    #[error("{0}; keeping the current ConfigMap")]
    ConfigMap(#[source] ConfigMapError),
    /// A watched directory could not be read.
    #[error("watched directory: {0}")]
    Directory(#[source] SourceError),
    /// The base Corefile could not be read.
    #[error("base Corefile (-basecorefile): {0}")]
    BaseCorefile(#[source] SourceError),
}

impl SyncError {
    /// The `errortype` label node-cache counts this under in
    /// `coredns_nodecache_setup_errors_total`, or `None` where it only logs it.
    pub fn setup_error_type(&self) -> Option<SetupErrorType> {
        match self {
            SyncError::ConfigMap(error) => Some(error.setup_error_type()),
            SyncError::Directory(_) => None,
            SyncError::BaseCorefile(_) => Some(SetupErrorType::Configmap),
        }
    }
}

/// The sync and the start-up Corefile ([`CorefileSync::start`]).
#[derive(Debug)]
pub struct Startup {
    /// The sync, to be polled from now on (see [`crate::watch::spawn_watch`]).
    pub sync: CorefileSync,
    /// The Corefile to write to `-conf` before loading it.
    pub corefile: String,
    /// What went wrong on the way (an invalid ConfigMap, left out), to log and count.
    pub errors: Vec<SyncError>,
}

/// No Corefile could be made at start-up.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StartError {
    /// The settings or the environment make no Corefile.
    #[error(transparent)]
    Settings(#[from] CorefileError),
    /// The base Corefile could not be read.
    #[error(
        "no Corefile could be made from the template {} (-basecorefile): {}",
        base_corefile.display(),
        list(errors)
    )]
    NoCorefile {
        /// The template's path.
        base_corefile: std::path::PathBuf,
        /// Why.
        errors: Vec<SyncError>,
    },
}

fn list(errors: &[SyncError]) -> String {
    let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
    messages.join("; ")
}

impl CorefileSync {
    /// node-cache's start-up: the generator from `settings` and `environment`, the sync of its
    /// directories every `period` (node-cache: [`super::POLL_PERIOD`]), and its first poll at
    /// `now`, which must yield the Corefile.
    pub fn start(
        settings: CorefileSettings,
        environment: impl Fn(&str) -> Option<String>,
        period: Duration,
        now: Instant,
        source: &(impl FileSource + ?Sized),
    ) -> Result<Startup, StartError> {
        let generator = CorefileGenerator::new(settings, environment)?;
        let mut sync = CorefileSync::new(generator, period, now);
        let outcome = sync.poll(now, source);
        match outcome.corefile {
            Some(corefile) => Ok(Startup {
                sync,
                corefile,
                errors: outcome.errors,
            }),
            None => Err(StartError::NoCorefile {
                base_corefile: sync.generator.settings().base_corefile.clone(),
                errors: outcome.errors,
            }),
        }
    }

    /// Polls the generator's base Corefile directory and ConfigMap directory every `period`,
    /// the first time at `now`.
    pub fn new(generator: CorefileGenerator, period: Duration, now: Instant) -> Self {
        let settings = generator.settings();
        let base = DirectoryPoller::new(settings.base_corefile_directory(), period, now);
        let config_map = settings
            .kube_dns_directory
            .as_ref()
            .map(|directory| DirectoryPoller::new(directory, period, now));
        CorefileSync {
            generator,
            base,
            config_map,
        }
    }

    /// The generator, with the ConfigMap in use.
    pub fn generator(&self) -> &CorefileGenerator {
        &self.generator
    }

    /// When the next poll is due.
    pub fn next_poll(&self) -> Instant {
        let base = self.base.next_poll();
        self.config_map
            .as_ref()
            .map_or(base, |config_map| base.min(config_map.next_poll()))
    }

    /// Reads the directories that are due at `now` and regenerates the Corefile if they
    /// changed (see the module).
    pub fn poll(&mut self, now: Instant, source: &(impl FileSource + ?Sized)) -> SyncOutcome {
        let mut outcome = SyncOutcome::default();
        let mut regenerate = false;
        if let Some(config_map) = &mut self.config_map {
            match config_map.poll(now, source) {
                PollOutcome::Changed(snapshot) => {
                    match KubeDnsConfig::from_files(snapshot.directory(), snapshot.files()) {
                        Ok(kube_dns) => {
                            self.generator.set_kube_dns(kube_dns);
                            regenerate = true;
                        }
                        Err(error) => outcome.errors.push(SyncError::ConfigMap(error)),
                    }
                }
                PollOutcome::Failed(error) => outcome.errors.push(SyncError::Directory(error)),
                PollOutcome::NotDue | PollOutcome::Unchanged => {}
            }
        }
        match self.base.poll(now, source) {
            PollOutcome::Changed(_) => regenerate = true,
            PollOutcome::Failed(error) => outcome.errors.push(SyncError::Directory(error)),
            PollOutcome::NotDue | PollOutcome::Unchanged => {}
        }
        if regenerate {
            match source.file(&self.generator.settings().base_corefile) {
                Ok(base) => outcome.corefile = Some(self.generator.render(&base)),
                Err(error) => outcome.errors.push(SyncError::BaseCorefile(error)),
            }
        }
        outcome
    }
}

#[cfg(test)]
mod tests;
