//! Every signal the process handles, in one place. Handlers only set flags (through
//! `signal_hook`); the threads that act on them read the flags:
//!
//! - SIGTERM and SIGINT: set the stop flag, on which the lifecycle begins the stop (rules
//!   withdrawn, lameduck, then the shutdown flag the threads stop on). A second one during
//!   the stop changes nothing: the stop goes on and the exit status is still 0 (as CoreDNS
//!   does, and as a kubelet sending SIGTERM again expects).
//! - SIGUSR1: sets the reload flag, which the reload thread reads and clears.
//!
//! SIGTERM and SIGINT also set a flag of their own, which nothing else sets: after a hand-off
//! with `--handoff-linger`, the process waits on it ([`linger`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};

/// The flags the signals set.
#[derive(Debug)]
pub(crate) struct Signals {
    /// Set by SIGTERM or SIGINT (and by the loop check): the stop begins.
    pub stop: Arc<AtomicBool>,
    /// Set by SIGUSR1: the configuration is to be reloaded.
    pub reload: Arc<AtomicBool>,
    /// Set by SIGTERM or SIGINT only (not by the loop check or a hand-off).
    pub signalled: Arc<AtomicBool>,
}

/// Installs every handler and returns the flags they set.
pub(crate) fn install() -> anyhow::Result<Signals> {
    let stop = Arc::new(AtomicBool::new(false));
    stop_on_term_and_int(&stop).context("cannot install signal handlers")?;
    let signalled = Arc::new(AtomicBool::new(false));
    stop_on_term_and_int(&signalled).context("cannot install signal handlers")?;
    let reload = Arc::new(AtomicBool::new(false));
    reload_on_usr1(&reload).context("cannot install the SIGUSR1 handler")?;
    Ok(Signals {
        stop,
        reload,
        signalled,
    })
}

/// After a hand-off with `--handoff-linger`: stays, serving nothing, until SIGTERM or SIGINT
/// (one that came during the hand-off counts), so that a container runtime does not restart
/// a container whose process has left (a restarted one would take the sockets back).
pub(crate) fn linger(signalled: &AtomicBool) {
    if signalled.load(Ordering::SeqCst) {
        return;
    }
    tracing::info!("handed over: lingering until SIGTERM (--handoff-linger)");
    while !signalled.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Makes SIGTERM and SIGINT set `shutdown` (again and again: a repeated signal is harmless).
fn stop_on_term_and_int(shutdown: &Arc<AtomicBool>) -> std::io::Result<()> {
    for signal in [SIGTERM, SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(shutdown))?;
    }
    Ok(())
}

/// Makes SIGUSR1 set `reload`.
fn reload_on_usr1(reload: &Arc<AtomicBool>) -> std::io::Result<()> {
    signal_hook::flag::register(SIGUSR1, Arc::clone(reload)).map(drop)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;

    #[test]
    fn a_second_term_or_int_is_harmless() {
        let shutdown = Arc::new(AtomicBool::new(false));
        stop_on_term_and_int(&shutdown).unwrap();
        for signal in [SIGTERM, SIGTERM, SIGINT] {
            // Before the change a second one ended this process with status 1.
            signal_hook::low_level::raise(signal).unwrap();
        }
        assert!(shutdown.load(Ordering::SeqCst));
    }

    #[test]
    fn linger_returns_at_once_when_a_signal_came_already() {
        // Without the early check, a SIGTERM during the hand-off would be waited for again.
        let signalled = AtomicBool::new(true);
        linger(&signalled);
    }

    #[test]
    fn linger_waits_for_term() {
        let signalled = Arc::new(AtomicBool::new(false));
        let waiting = {
            let signalled = Arc::clone(&signalled);
            std::thread::spawn(move || linger(&signalled))
        };
        std::thread::sleep(Duration::from_millis(120));
        assert!(!waiting.is_finished());
        signalled.store(true, Ordering::SeqCst);
        waiting.join().unwrap();
    }

    #[test]
    fn usr1_sets_the_reload_flag() {
        let reload = Arc::new(AtomicBool::new(false));
        reload_on_usr1(&reload).unwrap();
        signal_hook::low_level::raise(SIGUSR1).unwrap();
        assert!(reload.load(Ordering::SeqCst));
    }
}
