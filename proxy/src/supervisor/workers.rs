//! The supervisor's workers: each is this binary run again with the supervisor's arguments
//! plus `--worker-of PATH`, and takes its sockets over PATH with the hand-off protocol (the
//! supervisor plays the running process: it hands over the sockets it holds, and the cache of
//! the process it took over, to the first worker only).

use std::ffi::OsString;
use std::io;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::runtime::handoff::Offer;
use crate::runtime::handoff::channel::{Channel, Frame};
use crate::runtime::handoff::predecessor::{Listening, READY_WAIT, SWITCH_WAIT, greet};
use crate::runtime::handoff::successor::Successor;

/// How often the desk looks at its shutdown flag while no worker calls.
const ACCEPT_POLL: Duration = Duration::from_millis(10);

/// How to start a worker.
#[derive(Debug)]
pub(crate) struct Launcher {
    exe: PathBuf,
    args: Vec<OsString>,
}

impl Launcher {
    /// This binary with this process's arguments, less `--supervise`, plus
    /// `--worker-of private`.
    pub(crate) fn new(private: &std::path::Path) -> io::Result<Launcher> {
        let mut args: Vec<OsString> = std::env::args_os()
            .skip(1)
            .filter(|arg| arg != "--supervise")
            .collect();
        args.push("--worker-of".into());
        args.push(private.as_os_str().to_owned());
        Ok(Launcher {
            exe: std::env::current_exe()?,
            args,
        })
    }

    /// Starts a worker; its output is the supervisor's.
    pub(crate) fn spawn(&self) -> io::Result<Child> {
        Command::new(&self.exe)
            .args(&self.args)
            .stdin(Stdio::null())
            .spawn()
    }
}

/// What the desk (the thread serving the private socket) shares with the supervisor.
#[derive(Debug)]
pub(crate) struct Desk {
    pub offer: Offer,
    pub shards: usize,
    /// The cache of the process the supervisor took over, for the first worker.
    pub cache: Mutex<Option<Vec<Vec<u8>>>>,
    /// That process, asked to stop reading when the first worker serves.
    pub predecessor: Mutex<Option<Successor>>,
    /// The pid of the last worker that serves (after its switch).
    pub serving: AtomicU32,
    pub shutdown: AtomicBool,
}

/// Starts the `desk` thread on `listening`: every worker that calls gets the sockets.
pub(crate) fn start_desk(listening: Arc<Listening>, desk: Arc<Desk>) -> io::Result<JoinHandle<()>> {
    thread::Builder::new()
        .name("desk".to_string())
        .spawn(move || {
            listening.serve_each(&desk.shutdown, ACCEPT_POLL, "worker socket", |stream| {
                match serve(stream, &desk) {
                    Ok(pid) => tracing::info!("worker {pid} serves"),
                    Err(error) => tracing::warn!("a worker did not take the sockets: {error}"),
                }
                false
            });
        })
}

/// One worker, from its hello to its switch; returns its pid.
fn serve(stream: UnixStream, desk: &Desk) -> io::Result<u32> {
    stream.set_nonblocking(false)?;
    let mut channel = Channel::new(stream);
    let hello = greet(&mut channel, &desk.offer, desk.shards)?;
    channel.expect(Frame::Ready, Instant::now() + READY_WAIT)?;
    let cache = desk
        .cache
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    let mut bytes = 0u64;
    for chunk in cache.unwrap_or_default() {
        channel.send(Frame::Cache, &chunk)?;
        bytes += chunk.len() as u64;
    }
    channel.send(Frame::CacheEnd, &bytes.to_be_bytes())?;
    channel.expect(Frame::Switch, Instant::now() + SWITCH_WAIT)?;
    let predecessor = desk
        .predecessor
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    if let Some(predecessor) = predecessor {
        let pid = predecessor.pid;
        match predecessor.switch() {
            Ok(()) => tracing::info!("process {pid} stopped reading: the worker serves alone"),
            Err(error) => tracing::warn!("switch from process {pid}: {error}"),
        }
    }
    desk.serving.store(hello.pid, Ordering::SeqCst);
    let _ = channel.send(Frame::Done, &[]);
    Ok(hello.pid)
}
