//! What the control socket and the metrics endpoint share: accepting
//! connections, a thread per client up to a cap, deadlines on reading the
//! request and on writing the answer, a bound on the request's size, and
//! a shutdown that never waits for a client.
//!
//! One accept thread polls a non-blocking listener and the stop flag. Each
//! accepted client gets a thread of its own, so a slow client delays only
//! itself; past `max_clients` a client gets one line saying so and is
//! closed. The deadlines are for the whole request and the whole answer,
//! not for each `read`/`write`, so a client trickling a byte at a time
//! (slowloris) is cut off as surely as a silent one. At stop the accept
//! thread shuts every client's socket down, which ends any blocked read or
//! write at once, and joins the client threads.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle acceptor sleeps in `poll(2)` before it looks at the
/// stop flag again (it wakes at once for a client).
const ACCEPT_WAIT: Duration = Duration::from_millis(100);

/// The bounds one server applies to its clients.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Clients served at once; more are refused.
    pub max_clients: usize,
    /// Longest request accepted, in bytes.
    pub max_request: usize,
    /// Time a client has to send its whole request.
    pub request_timeout: Duration,
    /// Time a client has to take its whole answer.
    pub answer_timeout: Duration,
}

/// Counters of one server, readable while it runs.
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Clients accepted and served (whatever the outcome).
    pub served: AtomicU64,
    /// Clients refused because `max_clients` were being served.
    pub refused_busy: AtomicU64,
    /// Clients that did not send their request in time.
    pub request_timeouts: AtomicU64,
    /// Clients whose request exceeded `max_request`.
    pub oversized: AtomicU64,
    /// Clients that did not take their answer in time.
    pub answer_timeouts: AtomicU64,
}

/// A connected stream either server works with.
pub(crate) trait Stream: Read + Write + Send + Sized + 'static {
    fn try_clone(&self) -> io::Result<Self>;
    fn shutdown(&self, how: Shutdown) -> io::Result<()>;
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()>;
    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()>;
    fn set_nonblocking(&self, on: bool) -> io::Result<()>;
}

macro_rules! impl_stream {
    ($t:ty) => {
        impl Stream for $t {
            fn try_clone(&self) -> io::Result<Self> {
                <$t>::try_clone(self)
            }
            fn shutdown(&self, how: Shutdown) -> io::Result<()> {
                <$t>::shutdown(self, how)
            }
            fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
                <$t>::set_read_timeout(self, t)
            }
            fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
                <$t>::set_write_timeout(self, t)
            }
            fn set_nonblocking(&self, on: bool) -> io::Result<()> {
                <$t>::set_nonblocking(self, on)
            }
        }
    };
}
impl_stream!(UnixStream);
impl_stream!(TcpStream);

/// A listener whose accepted streams are `S`.
pub(crate) trait Listener: std::os::fd::AsRawFd + Send + 'static {
    type Stream: Stream;
    fn accept_stream(&self) -> io::Result<Self::Stream>;
}

impl Listener for UnixListener {
    type Stream = UnixStream;
    fn accept_stream(&self) -> io::Result<UnixStream> {
        self.accept().map(|(s, _)| s)
    }
}

impl Listener for TcpListener {
    type Stream = TcpStream;
    fn accept_stream(&self) -> io::Result<TcpStream> {
        self.accept().map(|(s, _)| s)
    }
}

/// Why a request could not be read.
#[derive(Debug)]
pub(crate) enum RequestError {
    /// The client sent more than `max_request` bytes without ending it.
    TooLong,
    /// The request was not complete within `request_timeout`.
    TimedOut,
    /// The connection closed or failed (also at shutdown).
    Io(io::Error),
}

/// One client's connection, with the server's deadlines applied.
#[derive(Debug)]
pub(crate) struct Client<S> {
    stream: S,
    limits: Limits,
    accepted: Instant,
    stats: Arc<ServerStats>,
}

impl<S: Stream> Client<S> {
    /// The stream itself (for peer credentials).
    pub(crate) fn stream(&self) -> &S {
        &self.stream
    }

    /// Reads until `done(bytes so far)` says the request is complete, the
    /// peer ends its side, `max_request` bytes or the request deadline.
    pub(crate) fn read_request(
        &mut self,
        done: impl Fn(&[u8]) -> bool,
    ) -> Result<Vec<u8>, RequestError> {
        let deadline = self.accepted + self.limits.request_timeout;
        let mut request = Vec::with_capacity(256);
        let mut buf = [0u8; 1024];
        loop {
            if done(&request) {
                return Ok(request);
            }
            if request.len() > self.limits.max_request {
                self.stats.oversized.fetch_add(1, Ordering::Relaxed);
                return Err(RequestError::TooLong);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.stats.request_timeouts.fetch_add(1, Ordering::Relaxed);
                return Err(RequestError::TimedOut);
            }
            self.stream
                .set_read_timeout(Some(left))
                .map_err(RequestError::Io)?;
            // Never more than one byte past the limit.
            let room = (self.limits.max_request + 1 - request.len()).min(buf.len());
            match self.stream.read(&mut buf[..room]) {
                Ok(0) => return Ok(request),
                Ok(n) => request.extend_from_slice(&buf[..n]),
                Err(e) if timed_out(&e) => {
                    self.stats.request_timeouts.fetch_add(1, Ordering::Relaxed);
                    return Err(RequestError::TimedOut);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(RequestError::Io(e)),
            }
        }
    }

    /// Writes `answer` whole within the answer deadline (counted from
    /// now), then ends the connection's sending side.
    pub(crate) fn write_answer(&mut self, answer: &[u8]) -> io::Result<()> {
        let deadline = Instant::now() + self.limits.answer_timeout;
        let mut rest = answer;
        while !rest.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.stats.answer_timeouts.fetch_add(1, Ordering::Relaxed);
                return Err(io::ErrorKind::TimedOut.into());
            }
            self.stream.set_write_timeout(Some(left))?;
            match self.stream.write(rest) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => rest = &rest[n..],
                Err(e) if timed_out(&e) => {
                    self.stats.answer_timeouts.fetch_add(1, Ordering::Relaxed);
                    return Err(e);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let _ = self.stream.shutdown(Shutdown::Write);
        self.drain();
        Ok(())
    }

    /// Reads and discards what the client still sends (the rest of a
    /// refused request), a bounded amount for a short while: closing with
    /// unread data makes the kernel reset the connection (TCP RST, or
    /// ECONNRESET on a Unix socket), and the client might never read the
    /// answer.
    fn drain(&mut self) {
        let deadline = Instant::now() + Duration::from_millis(200);
        let mut buf = [0u8; 4096];
        let mut left = 256usize << 10;
        while left > 0 {
            let wait = deadline.saturating_duration_since(Instant::now());
            if wait.is_zero() || self.stream.set_read_timeout(Some(wait)).is_err() {
                return;
            }
            match self.stream.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    }
}

/// A read or write timeout (`SO_RCVTIMEO`/`SO_SNDTIMEO` report EAGAIN).
fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// The clients being served: a clone of each stream (to shut it down at
/// stop) and its thread.
type Active<S> = Arc<Mutex<Vec<(u64, S)>>>;

/// Serves `listener` (already non-blocking) until `stop` is set: each
/// client is handed to `handle` on a thread of its own; past
/// `limits.max_clients` the client gets `busy` and is closed.
pub(crate) fn serve<L, H>(
    name: &'static str,
    listener: L,
    limits: Limits,
    stats: Arc<ServerStats>,
    stop: Arc<AtomicBool>,
    busy: &'static [u8],
    handle: H,
) -> io::Result<JoinHandle<()>>
where
    L: Listener,
    H: Fn(&mut Client<L::Stream>) + Send + Sync + 'static,
{
    let handle = Arc::new(handle);
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let active: Active<L::Stream> = Arc::new(Mutex::new(Vec::new()));
            let mut threads: Vec<JoinHandle<()>> = Vec::new();
            let mut next_id = 0u64;
            let mut last_busy_log: Option<Instant> = None;
            while !stop.load(Ordering::Relaxed) {
                threads.retain(|t| !t.is_finished());
                let stream = match listener.accept_stream() {
                    Ok(s) => s,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        // Asleep until a client connects; the stop flag is
                        // looked at every ACCEPT_WAIT.
                        crate::sys::wait_readable(&listener, ACCEPT_WAIT);
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(server = name, error = %e, "accept");
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                };
                let serving = active.lock().expect("clients lock").len();
                if serving >= limits.max_clients {
                    let total = stats.refused_busy.fetch_add(1, Ordering::Relaxed) + 1;
                    refuse(stream, busy);
                    // At most one line per 10 s however hard it is pushed.
                    if last_busy_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                        last_busy_log = Some(Instant::now());
                        tracing::warn!(
                            server = name,
                            limit = limits.max_clients,
                            refused_total = total,
                            "client refused: too many clients"
                        );
                    }
                    continue;
                }
                match start_client(
                    name,
                    stream,
                    next_id,
                    limits,
                    &stats,
                    &active,
                    Arc::clone(&handle),
                ) {
                    Ok(t) => threads.push(t),
                    Err(e) => tracing::warn!(server = name, error = %e, "client thread"),
                }
                next_id += 1;
            }
            // Ending every client's socket ends its blocked read or write
            // now; no client waits out its deadline.
            for (_, s) in active.lock().expect("clients lock").iter() {
                let _ = s.shutdown(Shutdown::Both);
            }
            for t in threads {
                let _ = t.join();
            }
        })
}

fn start_client<S: Stream, H>(
    name: &'static str,
    stream: S,
    id: u64,
    limits: Limits,
    stats: &Arc<ServerStats>,
    active: &Active<S>,
    handle: Arc<H>,
) -> io::Result<JoinHandle<()>>
where
    H: Fn(&mut Client<S>) + Send + Sync + 'static,
{
    stream.set_nonblocking(false)?;
    active
        .lock()
        .expect("clients lock")
        .push((id, stream.try_clone()?));
    stats.served.fetch_add(1, Ordering::Relaxed);
    let mut client = Client {
        stream,
        limits,
        accepted: Instant::now(),
        stats: Arc::clone(stats),
    };
    // Frees the slot however the handler ends (a panic included).
    let slot = Slot {
        id,
        active: Arc::clone(active),
    };
    std::thread::Builder::new()
        .name(format!("{name}-client"))
        .stack_size(256 << 10)
        .spawn(move || {
            let _slot = slot;
            handle(&mut client);
        })
}

/// A client's place in the active list, given back when dropped.
struct Slot<S> {
    id: u64,
    active: Active<S>,
}

impl<S> Drop for Slot<S> {
    fn drop(&mut self) {
        if let Ok(mut list) = self.active.lock() {
            list.retain(|(i, _)| *i != self.id);
        }
    }
}

/// Tells a client over the cap why it is refused and closes it. The line
/// is short enough to go into the socket buffer at once; the request the
/// client may have sent is read first, so that TCP closes with a FIN the
/// client reads the line before, not a reset.
fn refuse<S: Stream>(mut stream: S, busy: &[u8]) {
    if stream.set_nonblocking(true).is_err() {
        return;
    }
    let mut sink = [0u8; 1024];
    let _ = stream.read(&mut sink);
    let _ = stream.write(busy);
    let _ = stream.shutdown(Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_clients: 2,
        max_request: 64,
        request_timeout: Duration::from_millis(500),
        answer_timeout: Duration::from_secs(1),
    };

    /// A server on a fresh Unix socket whose clients get `answer`
    /// repeated to `size` bytes after a newline-terminated request.
    fn server(
        tag: &str,
        size: usize,
    ) -> (
        std::path::PathBuf,
        Arc<AtomicBool>,
        Arc<ServerStats>,
        JoinHandle<()>,
    ) {
        let path =
            std::env::temp_dir().join(format!("strait-server-{tag}-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(ServerStats::default());
        let t = serve(
            "test-server",
            listener,
            LIMITS,
            Arc::clone(&stats),
            Arc::clone(&stop),
            b"error: busy\n",
            move |c: &mut Client<UnixStream>| {
                let answer = match c.read_request(|r| r.contains(&b'\n')) {
                    Ok(_) => vec![b'x'; size],
                    Err(RequestError::TooLong) => b"error: too long\n".to_vec(),
                    Err(RequestError::TimedOut) => b"error: timed out\n".to_vec(),
                    Err(RequestError::Io(_)) => return,
                };
                let _ = c.write_answer(&answer);
            },
        )
        .unwrap();
        (path, stop, stats, t)
    }

    fn ask(path: &std::path::Path, request: &[u8]) -> Vec<u8> {
        let mut s = UnixStream::connect(path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(request).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).unwrap();
        answer
    }

    #[test]
    fn stalled_clients_delay_neither_others_nor_stop() {
        // 8 MiB: far more than a socket buffer, so a client that reads
        // nothing blocks its writer.
        let (path, stop, stats, t) = server("stall", 8 << 20);
        let silent = UnixStream::connect(&path).unwrap();
        let mut unread = UnixStream::connect(&path).unwrap();
        unread.write_all(b"big\n").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        // Both client slots are taken: a third is told so at once.
        let started = Instant::now();
        assert_eq!(ask(&path, b"x\n"), b"error: busy\n");
        assert!(started.elapsed() < Duration::from_millis(400));
        assert_eq!(stats.refused_busy.load(Ordering::Relaxed), 1);
        // Within the deadlines the slots free themselves.
        std::thread::sleep(Duration::from_millis(1300));
        assert_eq!(stats.request_timeouts.load(Ordering::Relaxed), 1);
        assert_eq!(stats.answer_timeouts.load(Ordering::Relaxed), 1);
        let mut small = UnixStream::connect(&path).unwrap();
        small.write_all(b"q\n").unwrap();
        // Stop while a client is stalled mid-answer again: it returns at
        // once, not after the answer deadline.
        let mut unread2 = UnixStream::connect(&path).unwrap();
        unread2.write_all(b"big\n").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let started = Instant::now();
        stop.store(true, Ordering::Relaxed);
        t.join().unwrap();
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "{:?}",
            started.elapsed()
        );
        drop((silent, unread, small, unread2));
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn requests_are_bounded_in_size_and_time() {
        let (path, stop, stats, t) = server("bounds", 3);
        // Far over the limit: refused after reading at most limit + 1.
        assert_eq!(ask(&path, &[b'a'; 4096]), b"error: too long\n");
        assert_eq!(stats.oversized.load(Ordering::Relaxed), 1);
        assert_eq!(ask(&path, &[b'a'; 65]), b"error: too long\n");
        assert_eq!(stats.oversized.load(Ordering::Relaxed), 2);
        // At the limit, ended by a newline or by the end of the stream.
        let mut ok = vec![b'a'; 63];
        ok.push(b'\n');
        assert_eq!(ask(&path, &ok), b"xxx");
        assert_eq!(ask(&path, &[b'a'; 64]), b"xxx");
        // A byte every 100 ms never completes a line: cut off at the
        // request deadline, not kept alive by each byte.
        let mut s = UnixStream::connect(&path).unwrap();
        let started = Instant::now();
        let mut cut = false;
        for _ in 0..20 {
            if s.write_all(b"a").is_err() {
                cut = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        assert!(
            cut || answer == b"error: timed out\n",
            "{:?}",
            String::from_utf8_lossy(&answer)
        );
        assert!(started.elapsed() < Duration::from_secs(3));
        assert_eq!(stats.request_timeouts.load(Ordering::Relaxed), 1);
        stop.store(true, Ordering::Relaxed);
        t.join().unwrap();
        let _ = std::fs::remove_file(&path);
    }
}
