//! The running process's side of a hand-off: it listens on the hand-off socket (thread
//! `handoff`) and serves one successor at a time. A successor that fails half-way (it
//! crashed, it timed out) changes nothing: this process never stopped reading, and listens
//! for the next one.

use std::fs;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use shardns_shard::{Control, Drain, ShardControl, fdpass};

use super::Offer;
use super::channel::{Channel, Frame};
use super::protocol::{Hello, Refuse, VERSIONS, Welcome, choose};

/// How long a successor may take to say hello.
const HELLO_WAIT: Duration = Duration::from_secs(5);
/// How long a successor may take to be ready for the cache (it may set up the node first).
pub(crate) const READY_WAIT: Duration = Duration::from_secs(60);
/// How long the cache may take to go over: what has not gone by then stays behind.
pub(crate) const CACHE_WAIT: Duration = Duration::from_secs(2);
/// How long a successor may take to ask for the switch once it has the cache.
pub(crate) const SWITCH_WAIT: Duration = Duration::from_secs(10);
/// How often the thread looks at the shutdown flag while no successor calls.
const ACCEPT_POLL: Duration = Duration::from_millis(50);

/// The hand-off socket this process listens on.
#[derive(Debug)]
pub(crate) struct Listening {
    listener: UnixListener,
    path: PathBuf,
    /// Device and inode of the socket file, to remove it at exit only if it is still ours.
    identity: (u64, u64),
}

impl Listening {
    /// Listens on `path` (its directory made if missing, the socket file readable by this
    /// user only), replacing what is there: a file left by a process that is gone, or the
    /// socket of the predecessor this process has just taken over (it answers no one
    /// else). Any other process listening there would have handed this one its sockets, or
    /// held the addresses this one has just bound.
    pub(crate) fn bind(path: &Path) -> io::Result<Listening> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent)?;
        }
        // Bound beside it and renamed over it: the path always names a live socket or a
        // stale one, never none while a successor may look. Named with a random number
        // too: in containers sharing the directory every process may be PID 1.
        let temporary = path.with_extension(format!(
            "tmp-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let _ = fs::remove_file(&temporary);
        let listener = UnixListener::bind(&temporary)?;
        fs::set_permissions(&temporary, fs::Permissions::from_mode(0o600))?;
        fs::rename(&temporary, path)?;
        listener.set_nonblocking(true)?;
        let metadata = fs::metadata(path)?;
        Ok(Listening {
            listener,
            path: path.to_path_buf(),
            identity: (metadata.dev(), metadata.ino()),
        })
    }

    /// A connection, if one waits (the socket does not block).
    pub(crate) fn accept(&self) -> io::Result<Option<UnixStream>> {
        match self.listener.accept() {
            Ok((stream, _)) => Ok(Some(stream)),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Accepts callers until `shutdown` is set, looking every `poll`, and hands each to
    /// `each`, which returns `true` to stop. A failed accept is logged as `what: error`.
    pub(crate) fn serve_each(
        &self,
        shutdown: &AtomicBool,
        poll: Duration,
        what: &str,
        mut each: impl FnMut(UnixStream) -> bool,
    ) {
        while !shutdown.load(Ordering::SeqCst) {
            match self.accept() {
                Ok(Some(stream)) => {
                    if each(stream) {
                        return;
                    }
                }
                Ok(None) => thread::sleep(poll),
                Err(error) => {
                    tracing::warn!("{what}: {error}");
                    thread::sleep(poll);
                }
            }
        }
    }

    /// Removes the socket file, unless another process has put its own there since.
    pub(crate) fn remove(&self) {
        let ours = fs::metadata(&self.path)
            .is_ok_and(|metadata| (metadata.dev(), metadata.ino()) == self.identity);
        if ours {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// What the `handoff` thread needs from the process.
#[derive(Debug)]
pub(crate) struct Hooks {
    /// The sockets to hand over.
    pub offer: Offer,
    pub shards: usize,
    /// Reaches the shards (cache export, wake-ups).
    pub control: ShardControl,
    /// Requested at the switch.
    pub drain: Arc<Drain>,
    /// Set at the switch: the run ends as a hand-off (no teardown of the node).
    pub handed_off: Arc<AtomicBool>,
    /// Set at the switch, so the lifecycle moves on to the stop.
    pub stop: Arc<AtomicBool>,
    /// The thread leaves when set.
    pub shutdown: Arc<AtomicBool>,
}

/// Starts the `handoff` thread on `listening`. It serves successors until one takes over
/// (then it returns) or until the shutdown flag is set.
pub(crate) fn start(listening: Arc<Listening>, hooks: Hooks) -> io::Result<JoinHandle<()>> {
    thread::Builder::new()
        .name("handoff".to_string())
        .spawn(move || {
            let shutdown = Arc::clone(&hooks.shutdown);
            listening.serve_each(
                &shutdown,
                ACCEPT_POLL,
                "hand-off socket",
                |stream| match serve(stream, &hooks) {
                    Ok(pid) => {
                        tracing::info!("handed over to process {pid}");
                        true
                    }
                    Err(error) => {
                        tracing::warn!("hand-off failed, still serving: {error}");
                        false
                    }
                },
            );
        })
}

/// One successor, from its hello to the switch; returns its pid.
fn serve(stream: UnixStream, hooks: &Hooks) -> io::Result<u32> {
    stream.set_nonblocking(false)?;
    let mut channel = Channel::new(stream);
    let hello = greet(&mut channel, &hooks.offer, hooks.shards)?;
    channel.expect(Frame::Ready, Instant::now() + READY_WAIT)?;
    let entries = send_cache(&mut channel, hooks)?;
    channel.send(Frame::CacheEnd, &entries.to_be_bytes())?;
    channel.expect(Frame::Switch, Instant::now() + SWITCH_WAIT)?;
    hooks.drain.request();
    hooks.control.wake_all();
    hooks.handed_off.store(true, Ordering::SeqCst);
    hooks.stop.store(true, Ordering::SeqCst);
    // The successor serves alone from here; it may already have gone.
    let _ = channel.send(Frame::Done, &[]);
    Ok(hello.pid)
}

/// The first steps of a hand-off, shared with the supervisor's: the successor's hello, then
/// the `offer`'s sockets for `shards` shards (or a refusal when no protocol version is in
/// common, which is an error here). Returns the hello.
pub(crate) fn greet(channel: &mut Channel, offer: &Offer, shards: usize) -> io::Result<Hello> {
    let hello: Hello = decode(&channel.expect(Frame::Hello, Instant::now() + HELLO_WAIT)?)?;
    let pid = std::process::id();
    let Some(version) = choose(&hello.versions) else {
        let reason = format!(
            "no protocol version in common: process {pid} speaks {VERSIONS:?}, process {} {:?}",
            hello.pid, hello.versions
        );
        channel.send(
            Frame::Refuse,
            &encode(&Refuse {
                reason: reason.clone(),
                pid,
            })?,
        )?;
        return Err(io::Error::other(reason));
    };
    tracing::info!(
        "process {} asks to take over (protocol version {version})",
        hello.pid
    );
    let welcome = Welcome {
        version,
        pid,
        shards,
        sockets: offer.infos.clone(),
    };
    channel.send(Frame::Welcome, &encode(&welcome)?)?;
    let fds: Vec<_> = offer.fds.iter().map(AsFd::as_fd).collect();
    for batch in fds.chunks(fdpass::MAX_FDS) {
        channel.send_fds(batch)?;
    }
    Ok(hello)
}

/// Has every shard export its cache and streams the chunks, for [`CACHE_WAIT`] at most;
/// returns the bytes of entries sent.
fn send_cache(channel: &mut Channel, hooks: &Hooks) -> io::Result<u64> {
    let (sender, chunks) = mpsc::channel();
    let shards = hooks.control.broadcast(&Control::ExportCache(sender));
    let deadline = Instant::now() + CACHE_WAIT;
    let (mut finished, mut bytes) = (0, 0u64);
    while finished < shards {
        let left = deadline.saturating_duration_since(Instant::now());
        match chunks.recv_timeout(left) {
            Ok(chunk) if chunk.is_empty() => finished += 1,
            Ok(chunk) => {
                channel.send(Frame::Cache, &chunk)?;
                bytes += chunk.len() as u64;
            }
            Err(_) => {
                tracing::warn!(
                    "the cache hand-off stopped at its {} s limit ({finished} of {shards} \
                     shards sent)",
                    CACHE_WAIT.as_secs()
                );
                break;
            }
        }
    }
    Ok(bytes)
}

pub(crate) fn encode<T: serde::Serialize>(value: &T) -> io::Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(io::Error::other)
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> io::Result<T> {
    serde_json::from_slice(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;
    use std::os::fd::OwnedFd;

    use shardns_shard::{PeerMessage, peer_mesh};

    use super::*;
    use crate::runtime::handoff::successor::{TakeOver, take_over};
    use crate::runtime::handoff::{SocketInfo, SocketKind};

    /// Hooks over one UDP socket and a shard group of one that nobody runs.
    fn hooks() -> (Hooks, UdpSocket) {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut offer = Offer::default();
        offer.add(
            SocketInfo {
                kind: SocketKind::Udp,
                written: "127.0.0.1:0".parse().unwrap(),
                shard: Some(0),
            },
            OwnedFd::from(socket.try_clone().unwrap()),
        );
        let links = peer_mesh::<PeerMessage>(1).unwrap();
        let hooks = Hooks {
            offer,
            shards: 1,
            control: links[0].control(),
            drain: Arc::new(Drain::new(1)),
            handed_off: Arc::new(AtomicBool::new(false)),
            stop: Arc::new(AtomicBool::new(false)),
            shutdown: Arc::new(AtomicBool::new(false)),
        };
        (hooks, socket)
    }

    #[test]
    fn a_successor_speaking_no_common_version_is_refused_and_nothing_changes() {
        let (hooks, _socket) = hooks();
        let (ours, theirs) = UnixStream::pair().unwrap();
        let successor = thread::spawn(move || {
            let mut channel = Channel::new(theirs);
            let hello = Hello {
                versions: vec![99],
                pid: 4242,
            };
            channel
                .send(Frame::Hello, &serde_json::to_vec(&hello).unwrap())
                .unwrap();
            let refuse: Refuse = decode(
                &channel
                    .expect(Frame::Refuse, Instant::now() + HELLO_WAIT)
                    .unwrap(),
            )
            .unwrap();
            refuse
        });
        let error = serve(ours, &hooks).unwrap_err();
        assert!(
            error.to_string().contains("no protocol version in common"),
            "{error}"
        );
        let refuse = successor.join().unwrap();
        assert_eq!(refuse.pid, std::process::id());
        assert!(
            refuse.reason.contains("process 4242 [99]"),
            "{}",
            refuse.reason
        );
        assert!(!hooks.drain.is_requested() && !hooks.handed_off.load(Ordering::SeqCst));
    }

    #[test]
    fn a_successor_that_leaves_half_way_changes_nothing() {
        let (hooks, socket) = hooks();
        let (ours, theirs) = UnixStream::pair().unwrap();
        let successor = thread::spawn(move || {
            let mut channel = Channel::new(theirs);
            let hello = Hello {
                versions: VERSIONS.to_vec(),
                pid: 4243,
            };
            channel
                .send(Frame::Hello, &serde_json::to_vec(&hello).unwrap())
                .unwrap();
            let deadline = Instant::now() + HELLO_WAIT;
            let welcome: Welcome =
                decode(&channel.expect(Frame::Welcome, deadline).unwrap()).unwrap();
            channel.expect(Frame::Sockets, deadline).unwrap();
            let fds = channel.take_fds(1).unwrap();
            (welcome, fds)
            // Gone before Ready.
        });
        let error = serve(ours, &hooks).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof, "{error}");
        let (welcome, fds) = successor.join().unwrap();
        assert_eq!((welcome.version, welcome.shards), (1, 1));
        assert_eq!(welcome.sockets, hooks.offer.infos);
        let received = UdpSocket::from(fds.into_iter().next().unwrap());
        assert_eq!(received.local_addr().unwrap(), socket.local_addr().unwrap());
        assert!(!hooks.drain.is_requested() && !hooks.handed_off.load(Ordering::SeqCst));
    }

    #[test]
    fn the_successor_side_sees_a_refusal_and_nobody() {
        let dir = std::env::temp_dir().join(format!("shardns-handoff-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("h.sock");
        let _ = fs::remove_file(&path);
        assert!(matches!(take_over(&path).unwrap(), TakeOver::Nobody));
        let listening = Listening::bind(&path).unwrap();
        let refusing = thread::spawn(move || {
            let stream = loop {
                match listening.accept() {
                    Ok(Some(stream)) => break stream,
                    _ => thread::sleep(Duration::from_millis(10)),
                }
            };
            stream.set_nonblocking(false).unwrap();
            let mut channel = Channel::new(stream);
            channel
                .expect(Frame::Hello, Instant::now() + HELLO_WAIT)
                .unwrap();
            let refuse = Refuse {
                reason: "too old".to_string(),
                pid: 1,
            };
            channel
                .send(Frame::Refuse, &serde_json::to_vec(&refuse).unwrap())
                .unwrap();
            listening
        });
        match take_over(&path).unwrap() {
            TakeOver::Refused { pid, reason } => assert_eq!((pid, reason.as_str()), (1, "too old")),
            other => panic!("{other:?}"),
        }
        let listening = refusing.join().unwrap();
        listening.remove();
        assert!(!path.exists());
        // A socket file with nobody behind it: nobody.
        drop(UnixListener::bind(&path).unwrap());
        assert!(matches!(take_over(&path).unwrap(), TakeOver::Nobody));
        fs::remove_dir_all(&dir).unwrap();
    }
}
