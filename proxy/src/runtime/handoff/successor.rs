//! The new process's side of a hand-off: at bind time it asks the running process for its
//! sockets ([`take_over`]); once serving on them it takes the cache and asks for the switch
//! ([`Successor`]).

use std::io;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use super::Inherited;
use super::channel::{Channel, Frame};
use super::predecessor::{CACHE_WAIT, decode};
use super::protocol::{Hello, Refuse, VERSIONS, Welcome};

/// How long the running process may take to answer the hello.
const WELCOME_WAIT: Duration = Duration::from_secs(5);
/// How long it may take to stop reading once asked.
const DONE_WAIT: Duration = Duration::from_secs(5);

/// What asking for a hand-off gave.
#[derive(Debug)]
pub(crate) enum TakeOver {
    /// Nobody listens on the hand-off socket: start as usual.
    Nobody,
    /// The running process handed its sockets over.
    Inherited(Successor, Inherited),
    /// The running process refused (no protocol version in common).
    Refused { pid: u32, reason: String },
}

/// The connection to the process being taken over, after its sockets came.
#[derive(Debug)]
pub(crate) struct Successor {
    channel: Channel,
    /// The process being taken over.
    pub pid: u32,
}

/// Asks whoever listens on `path` for its sockets.
pub(crate) fn take_over(path: &Path) -> io::Result<TakeOver> {
    let stream = match UnixStream::connect(path) {
        Ok(stream) => stream,
        Err(error)
            if matches!(
                error.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(TakeOver::Nobody);
        }
        Err(error) => return Err(error),
    };
    let mut channel = Channel::new(stream);
    let hello = Hello {
        versions: VERSIONS.to_vec(),
        pid: std::process::id(),
    };
    channel.send(
        Frame::Hello,
        &serde_json::to_vec(&hello).map_err(io::Error::other)?,
    )?;
    let deadline = Instant::now() + WELCOME_WAIT;
    let (frame, payload) = channel.receive(deadline)?;
    let welcome: Welcome = match frame {
        Frame::Welcome => decode(&payload)?,
        Frame::Refuse => {
            let refuse: Refuse = decode(&payload)?;
            return Ok(TakeOver::Refused {
                pid: refuse.pid,
                reason: refuse.reason,
            });
        }
        other => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("expected Welcome, got {other:?}"),
            ));
        }
    };
    let mut fds = Vec::with_capacity(welcome.sockets.len());
    while fds.len() < welcome.sockets.len() {
        let count = channel.expect(Frame::Sockets, deadline)?;
        let count = <[u8; 4]>::try_from(count.as_slice())
            .map(u32::from_be_bytes)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad Sockets frame"))?;
        fds.extend(channel.take_fds(count as usize)?);
    }
    if fds.len() != welcome.sockets.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "more descriptors than sockets announced",
        ));
    }
    tracing::info!(
        "taking over from process {} (protocol version {}): {} sockets, {} shards",
        welcome.pid,
        welcome.version,
        fds.len(),
        welcome.shards
    );
    let inherited = Inherited::new(welcome.sockets, fds, welcome.shards);
    Ok(TakeOver::Inherited(
        Successor {
            channel,
            pid: welcome.pid,
        },
        inherited,
    ))
}

impl Successor {
    /// Ready for the cache, which comes next, while the predecessor keeps serving: the
    /// chunks, for the shards to import before they serve.
    pub(crate) fn receive_cache(&mut self) -> io::Result<Vec<Vec<u8>>> {
        self.channel.send(Frame::Ready, &[])?;
        // The predecessor stops sending at its own limit; a second more for the last chunk.
        let deadline = Instant::now() + CACHE_WAIT + Duration::from_secs(1);
        let mut chunks = Vec::new();
        loop {
            let (frame, payload) = self.channel.receive(deadline)?;
            match frame {
                Frame::Cache => chunks.push(payload),
                Frame::CacheEnd => return Ok(chunks),
                other => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("expected Cache, got {other:?}"),
                    ));
                }
            }
        }
    }

    /// Asks the predecessor to stop reading and waits until it has.
    pub(crate) fn switch(mut self) -> io::Result<()> {
        self.channel.send(Frame::Switch, &[])?;
        self.channel
            .expect(Frame::Done, Instant::now() + DONE_WAIT)
            .map(drop)
    }
}

/// Waits until process `pid` has exited, `timeout` at most; whether it has.
pub(crate) fn wait_for_exit(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let proc = format!("/proc/{pid}");
    while Path::new(&proc).exists() {
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
    true
}
