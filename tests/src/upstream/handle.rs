//! The [`TestUpstream`] handle: starting, the listening sockets, the TCP connections,
//! and stopping everything on drop.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::thread::JoinHandle;

use anyhow::{Context, Result};
use socket2::Socket;

use super::scheduler::{Scheduler, run_scheduler};
use super::tcp::{Conn, bind_tcp, serve_accept};
use super::udp::serve_udp;
use super::{Behaviour, Counters, Inner, POLL, lock};

/// A running test upstream. See the [module documentation](super).
pub struct TestUpstream {
    pub(super) inner: Arc<Inner>,
    addr: SocketAddr,
    listeners: Mutex<Option<Listeners>>,
    scheduler: Option<JoinHandle<()>>,
}

impl fmt::Debug for TestUpstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestUpstream")
            .field("addr", &self.addr)
            .field("listening", &self.is_listening())
            .field("behaviour", &self.behaviour())
            .finish()
    }
}

struct Listeners {
    stop: Arc<AtomicBool>,
    /// A handle on the listening UDP socket, for [`TestUpstream::spoofer`].
    udp_socket: UdpSocket,
    udp: JoinHandle<()>,
    tcp: JoinHandle<()>,
}

impl TestUpstream {
    /// Starts the server on a port free for both UDP and TCP on 127.0.0.1.
    pub fn start() -> Result<TestUpstream> {
        let inner = Arc::new(Inner {
            shutdown: AtomicBool::new(false),
            behaviour: Mutex::new(Behaviour::default()),
            counters: Counters::default(),
            sched: Scheduler::default(),
            conns: Mutex::new(Vec::new()),
            conn_threads: Mutex::new(Vec::new()),
        });
        let mut bound = None;
        let mut last_err = anyhow::anyhow!("never tried");
        for _ in 0..50 {
            let udp = UdpSocket::bind("127.0.0.1:0").context("binding UDP on 127.0.0.1")?;
            let port = udp.local_addr()?.port();
            match bind_tcp(port) {
                Ok(tcp) => {
                    bound = Some((udp, tcp, port));
                    break;
                }
                Err(e) => last_err = e.into(),
            }
        }
        let Some((udp, tcp, port)) = bound else {
            return Err(last_err.context("no port free for both UDP and TCP on 127.0.0.1"));
        };
        let sched_inner = inner.clone();
        let scheduler = std::thread::Builder::new()
            .name("upstream-sched".into())
            .spawn(move || run_scheduler(&sched_inner))
            .context("spawning the scheduler thread")?;
        let mut up = TestUpstream {
            inner,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            listeners: Mutex::new(None),
            scheduler: Some(scheduler),
        };
        let listeners = up.spawn_listeners(udp, tcp)?;
        *up.listeners
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner) = Some(listeners);
        Ok(up)
    }

    fn spawn_listeners(&self, udp: UdpSocket, tcp: Socket) -> Result<Listeners> {
        udp.set_read_timeout(Some(POLL))?;
        let udp_socket = udp.try_clone()?;
        let stop = Arc::new(AtomicBool::new(false));
        let (i, s) = (self.inner.clone(), stop.clone());
        let udp = std::thread::Builder::new()
            .name("upstream-udp".into())
            .spawn(move || serve_udp(&i, udp, &s))
            .context("spawning the UDP thread")?;
        let (i, s) = (self.inner.clone(), stop.clone());
        let tcp = match std::thread::Builder::new()
            .name("upstream-accept".into())
            .spawn(move || serve_accept(&i, &tcp, &s))
        {
            Ok(t) => t,
            Err(e) => {
                stop.store(true, Ordering::SeqCst);
                let _ = udp.join();
                return Err(e).context("spawning the TCP accept thread");
            }
        };
        Ok(Listeners {
            stop,
            udp_socket,
            udp,
            tcp,
        })
    }

    /// The address (127.0.0.1:PORT), the same for UDP and TCP, across stop/start.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// A handle on the listening UDP socket (`None` while not listening): what a test sends
    /// with it leaves from the upstream's own address and port, as a forger who spoofs the
    /// upstream's address would send it. Reading from it steals the server's queries: only
    /// send.
    pub fn spoofer(&self) -> Option<UdpSocket> {
        lock(&self.listeners)
            .as_ref()
            .and_then(|l| l.udp_socket.try_clone().ok())
    }

    /// Whether the listening sockets are open (see [`TestUpstream::stop_listening`]).
    pub fn is_listening(&self) -> bool {
        lock(&self.listeners).is_some()
    }

    /// Closes the listening UDP and TCP sockets and every open TCP connection (FIN), and
    /// waits for their threads: afterwards TCP connects get ECONNREFUSED and UDP queries an
    /// ICMP port unreachable. Answers still scheduled are not sent. No-op if not listening.
    pub fn stop_listening(&self) {
        let listeners = lock(&self.listeners).take();
        if let Some(l) = listeners {
            l.stop.store(true, Ordering::SeqCst);
            let _ = l.udp.join();
            let _ = l.tcp.join();
        }
        self.close_connections();
    }

    /// Reopens the listening sockets on the same port. No-op if listening. Fails if the port
    /// was taken meanwhile.
    pub fn start_listening(&self) -> Result<()> {
        let mut guard = lock(&self.listeners);
        if guard.is_some() {
            return Ok(());
        }
        let udp = UdpSocket::bind(self.addr)
            .with_context(|| format!("rebinding UDP on {}", self.addr))?;
        let tcp =
            bind_tcp(self.port()).with_context(|| format!("rebinding TCP on {}", self.addr))?;
        *guard = Some(self.spawn_listeners(udp, tcp)?);
        Ok(())
    }

    /// Closes every open TCP connection (FIN) and joins their threads; keeps listening.
    pub fn close_connections(&self) {
        let conns: Vec<Weak<Conn>> = std::mem::take(&mut *lock(&self.inner.conns));
        for c in conns.iter().filter_map(Weak::upgrade) {
            c.abort();
        }
        let threads: Vec<JoinHandle<()>> = std::mem::take(&mut *lock(&self.inner.conn_threads));
        for t in threads {
            let _ = t.join();
        }
    }
}

impl Drop for TestUpstream {
    fn drop(&mut self) {
        self.inner.shutdown.store(true, Ordering::SeqCst);
        self.inner.sched.cv.notify_all();
        self.stop_listening();
        if let Some(t) = self.scheduler.take() {
            let _ = t.join();
        }
        // Jobs hold `Arc<Inner>`: drop them to break the cycle.
        lock(&self.inner.sched.heap).clear();
    }
}
