//! The control plane's network services (the DNS forwarder, the SNI/Host
//! proxy, the load balancer's health checks) on one `mio` event loop: one
//! thread, woken by a socket's readiness, by another thread's [`Waker`],
//! or by the earliest deadline a service asked for. A service never runs
//! on a worker and never blocks: its sockets are non-blocking and its
//! timers are deadlines it returns from [`Service::tick`].
//!
//! Tokens are per service: a service names its sockets with small local
//! numbers (`Ctx::token(n)`) and receives its own events with those
//! numbers back, so services are written without knowing each other.
//!
//! ```text
//!  NetLoop::new ─► waker() for other threads ─► add(service)… ─► spawn
//!  thread: poll(timeout = earliest deadline, ≤ 100 ms)
//!          ├─ event ─► services[token >> 32].ready(local token)
//!          └─ every wake ─► each service's tick (its timers) → next deadline
//! ```

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use mio::event::Event;
use mio::{Events, Poll, Registry, Token, Waker};

/// Bits of a token that belong to the service; the service's index is
/// above them.
const LOCAL_BITS: u32 = 32;
/// The waker's token (no service has that index).
const WAKER: Token = Token(usize::MAX);
/// The loop looks at the stop flag at least this often.
const MAX_SLEEP: Duration = Duration::from_millis(100);

/// What a service is handed on every call: the registry to (de)register
/// its sockets with, the time of this wake, and its token space.
#[derive(Debug)]
pub struct Ctx<'a> {
    /// The loop's registry.
    pub registry: &'a Registry,
    /// When the loop woke (one reading per wake).
    pub now: Instant,
    index: usize,
}

impl Ctx<'_> {
    /// The token for the service's socket number `local` (< 2^32).
    pub fn token(&self, local: usize) -> Token {
        debug_assert!(local < 1 << LOCAL_BITS);
        Token((self.index << LOCAL_BITS) | local)
    }
}

/// One service on the loop.
pub trait Service: Send {
    /// Its name, for logs and the thread's errors.
    fn name(&self) -> &'static str;
    /// Registers its sockets (they were bound before privileges were
    /// dropped). Called once, on the loop's thread, before any event.
    fn start(&mut self, ctx: &mut Ctx<'_>) -> io::Result<()>;
    /// A socket it registered as `local` is ready.
    fn ready(&mut self, ctx: &mut Ctx<'_>, local: usize, event: &Event);
    /// Called on every wake after the events: runs whatever timers are
    /// due and work other threads queued, and says when it next needs to
    /// run (`None`: only on events).
    fn tick(&mut self, ctx: &mut Ctx<'_>) -> Option<Instant>;
}

/// The loop before it runs: add services, hand out wakers, then spawn.
pub struct NetLoop {
    poll: Poll,
    waker: Arc<Waker>,
    services: Vec<Box<dyn Service>>,
}

impl std::fmt::Debug for NetLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = self.services.iter().map(|s| s.name()).collect();
        f.debug_struct("NetLoop").field("services", &names).finish()
    }
}

impl NetLoop {
    /// A loop with no services.
    pub fn new() -> io::Result<NetLoop> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        Ok(NetLoop {
            poll,
            waker,
            services: Vec::new(),
        })
    }

    /// Wakes the loop from another thread (e.g. after queueing a command
    /// for a service): every service's `tick` then runs.
    pub fn waker(&self) -> Arc<Waker> {
        Arc::clone(&self.waker)
    }

    /// Adds a service.
    pub fn add(&mut self, service: Box<dyn Service>) {
        self.services.push(service);
    }

    /// Whether any service was added.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    /// Starts every service and runs the loop on its own thread until
    /// `stop` is set.
    pub fn spawn(mut self, stop: Arc<AtomicBool>) -> anyhow::Result<JoinHandle<()>> {
        let now = Instant::now();
        for (index, s) in self.services.iter_mut().enumerate() {
            let mut ctx = Ctx {
                registry: self.poll.registry(),
                now,
                index,
            };
            s.start(&mut ctx)
                .with_context(|| format!("starting the {} service", s.name()))?;
        }
        std::thread::Builder::new()
            .name("strait-net".into())
            .spawn(move || self.run(&stop))
            .context("network services thread")
    }

    fn run(&mut self, stop: &AtomicBool) {
        let mut events = Events::with_capacity(1024);
        let mut next: Option<Instant> = None;
        while !stop.load(Ordering::Relaxed) {
            let timeout = next
                .map(|t| t.saturating_duration_since(Instant::now()))
                .map_or(MAX_SLEEP, |d| d.min(MAX_SLEEP));
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!(error = %e, "network services: poll failed; stopping them");
                    return;
                }
            }
            let now = Instant::now();
            for event in events.iter() {
                if event.token() == WAKER {
                    continue;
                }
                let index = event.token().0 >> LOCAL_BITS;
                let local = event.token().0 & ((1 << LOCAL_BITS) - 1);
                if let Some(s) = self.services.get_mut(index) {
                    let mut ctx = Ctx {
                        registry: self.poll.registry(),
                        now,
                        index,
                    };
                    s.ready(&mut ctx, local, event);
                }
            }
            next = None;
            for (index, s) in self.services.iter_mut().enumerate() {
                let mut ctx = Ctx {
                    registry: self.poll.registry(),
                    now,
                    index,
                };
                if let Some(t) = s.tick(&mut ctx) {
                    next = Some(next.map_or(t, |n| n.min(t)));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::net::UdpSocket;
    use mio::Interest;

    /// Echoes datagrams and counts its ticks' deadlines.
    struct Echo {
        socket: UdpSocket,
        echoed: Arc<std::sync::atomic::AtomicUsize>,
        deadline_hits: Arc<std::sync::atomic::AtomicUsize>,
        deadline: Option<Instant>,
    }

    impl Service for Echo {
        fn name(&self) -> &'static str {
            "echo"
        }
        fn start(&mut self, ctx: &mut Ctx<'_>) -> io::Result<()> {
            self.deadline = Some(ctx.now + Duration::from_millis(20));
            ctx.registry
                .register(&mut self.socket, ctx.token(7), Interest::READABLE)
        }
        fn ready(&mut self, _ctx: &mut Ctx<'_>, local: usize, _event: &Event) {
            assert_eq!(local, 7);
            let mut buf = [0u8; 64];
            while let Ok((n, from)) = self.socket.recv_from(&mut buf) {
                let _ = self.socket.send_to(&buf[..n], from);
                self.echoed.fetch_add(1, Ordering::Relaxed);
            }
        }
        fn tick(&mut self, ctx: &mut Ctx<'_>) -> Option<Instant> {
            if let Some(d) = self.deadline {
                if ctx.now >= d {
                    self.deadline_hits.fetch_add(1, Ordering::Relaxed);
                    self.deadline = None;
                }
            }
            self.deadline
        }
    }

    #[test]
    fn events_reach_their_service_and_deadlines_fire() {
        let socket = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = socket.local_addr().unwrap();
        let echoed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut nl = NetLoop::new().unwrap();
        nl.add(Box::new(Echo {
            socket,
            echoed: Arc::clone(&echoed),
            deadline_hits: Arc::clone(&hits),
            deadline: None,
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = nl.spawn(Arc::clone(&stop)).unwrap();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        client.send_to(b"ping", addr).unwrap();
        let mut buf = [0u8; 16];
        let (n, _) = client.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"ping");
        std::thread::sleep(Duration::from_millis(60));
        stop.store(true, Ordering::Relaxed);
        thread.join().unwrap();
        assert_eq!(echoed.load(Ordering::Relaxed), 1);
        assert_eq!(
            hits.load(Ordering::Relaxed),
            1,
            "the 20 ms deadline fired once"
        );
    }
}
