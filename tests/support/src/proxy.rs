//! A TCP proxy that can freeze or delay the path to one server.
//!
//! Freezing stops passing bytes (both ways) while the sockets stay open,
//! like a server that hangs (or a network that drops packets) without
//! closing anything. Tests point a client at `127.0.0.1:<port>` instead of
//! the server, then freeze the path.
//!
//! A delay ([`Proxy::with_delay`]) holds every chunk read from either side
//! for a fixed one-way delay before writing it on, like a network link of
//! that latency: a request and its answer each wait it once, so a round
//! trip costs twice the delay. Chunks keep their order and do not wait for
//! each other (a delay line, not a sleep per chunk), so requests written
//! back to back, or to several servers at once, overlap their delays as
//! they would on a network. This is what the benchmark puts in front of
//! Redis masters, since loopback has no latency to speak of and the kernel
//! here has no `netem`.
//!
//! Every proxy also counts what its clients send ([`Proxy::sent`]): the
//! chunks read from client connections (each a write the client made, so
//! about one per request of a request/response protocol) and their bytes.
//! The benchmark reads it to count a backend's server commands per waiter.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The one-way delay the benchmark adds when none is given: about a
/// round trip of half a millisecond, a fast data-centre network.
pub const DEFAULT_DELAY: Duration = Duration::from_micros(250);

/// A running proxy to one upstream address; stops (closing every
/// connection) on drop.
pub struct Proxy {
    /// The loopback port it listens on.
    pub port: u16,
    frozen: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
    sent: Arc<Sent>,
}

/// What the clients of a [`Proxy`] have sent towards the server so far.
#[derive(Debug, Default)]
pub struct Sent {
    chunks: AtomicU64,
    bytes: AtomicU64,
    connections: AtomicU64,
}

/// A reading of [`Sent`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SentCount {
    /// Chunks read from client connections: each is one or more writes the
    /// client made (writes that arrive together are read as one), so about
    /// one per request, or per pipelined batch.
    pub chunks: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Client connections accepted.
    pub connections: u64,
}

impl SentCount {
    /// What was sent between `earlier` and this reading.
    pub fn since(self, earlier: SentCount) -> SentCount {
        SentCount {
            chunks: self.chunks - earlier.chunks,
            bytes: self.bytes - earlier.bytes,
            connections: self.connections - earlier.connections,
        }
    }
}

impl Proxy {
    /// Listens on a free loopback port and forwards each connection to
    /// `upstream`, without delay.
    pub fn start(upstream: SocketAddr) -> Self {
        Self::with_delay(upstream, Duration::ZERO)
    }

    /// Like [`Proxy::start`], holding every chunk, each way, for `delay`
    /// before passing it on.
    pub fn with_delay(upstream: SocketAddr, delay: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let frozen = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(Sent::default());
        let (f, s, counted) = (frozen.clone(), stop.clone(), sent.clone());
        let acceptor = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        let Ok(server) = TcpStream::connect(upstream) else { continue };
                        // Small writes must leave at once, or Nagle's
                        // algorithm adds its own delay on top of ours.
                        let _ = client.set_nodelay(true);
                        let _ = server.set_nodelay(true);
                        counted.connections.fetch_add(1, Ordering::Relaxed);
                        for (from, to, count) in [
                            (
                                client.try_clone().unwrap(),
                                server.try_clone().unwrap(),
                                Some(counted.clone()),
                            ),
                            (server, client, None),
                        ] {
                            let (f, s) = (f.clone(), s.clone());
                            std::thread::spawn(move || {
                                pump(from, to, delay, &f, &s, count.as_deref())
                            });
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(_) => break,
                }
            }
        });
        Self { port, frozen, stop, acceptor: Some(acceptor), sent }
    }

    /// What the clients have sent towards the server so far.
    pub fn sent(&self) -> SentCount {
        SentCount {
            chunks: self.sent.chunks.load(Ordering::SeqCst),
            bytes: self.sent.bytes.load(Ordering::SeqCst),
            connections: self.sent.connections.load(Ordering::SeqCst),
        }
    }

    /// Freezes (`true`) or thaws (`false`) every connection, present and
    /// future: bytes read while frozen are held until the thaw.
    pub fn freeze(&self, on: bool) {
        self.frozen.store(on, Ordering::SeqCst);
    }
}

/// Copies `from` to `to` until either side closes. With a delay, a second
/// thread writes each chunk once it is `delay` old.
fn pump(
    mut from: TcpStream,
    to: TcpStream,
    delay: Duration,
    frozen: &AtomicBool,
    stop: &AtomicBool,
    count: Option<&Sent>,
) {
    from.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let (line, writer) = if delay.is_zero() {
        (None, None)
    } else {
        let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
        let out = to.try_clone().unwrap();
        (Some(tx), Some(std::thread::spawn(move || delay_line(rx, out, delay))))
    };
    let mut to = to;
    let mut buf = [0u8; 16 * 1024];
    while !stop.load(Ordering::Relaxed) {
        if frozen.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let read_at = Instant::now();
                if let Some(c) = count {
                    c.chunks.fetch_add(1, Ordering::Relaxed);
                    c.bytes.fetch_add(n as u64, Ordering::Relaxed);
                }
                // Bytes read while a freeze began wait for the thaw.
                while frozen.load(Ordering::SeqCst) && !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(5));
                }
                let passed = match &line {
                    Some(tx) => tx.send((read_at, buf[..n].to_vec())).is_ok(),
                    None => to.write_all(&buf[..n]).is_ok(),
                };
                if !passed {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    // Chunks still on the line are delivered before the close.
    drop(line);
    if let Some(w) = writer {
        let _ = w.join();
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

/// Writes each chunk when it is `delay` old, in order.
fn delay_line(rx: mpsc::Receiver<(Instant, Vec<u8>)>, mut to: TcpStream, delay: Duration) {
    for (read_at, chunk) in rx {
        let due = read_at + delay;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        if to.write_all(&chunk).is_err() {
            break;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server; returns its address.
    fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for mut c in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = c.read(&mut buf) {
                        if n == 0 || c.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    #[test]
    fn a_delayed_path_passes_every_byte_in_order() {
        let proxy = Proxy::with_delay(echo(), DEFAULT_DELAY);
        let mut c = TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // Many small writes back to back: they queue on the delay line.
        let sent: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        for chunk in sent.chunks(97) {
            c.write_all(chunk).unwrap();
        }
        let mut got = vec![0u8; sent.len()];
        c.read_exact(&mut got).unwrap();
        assert_eq!(got, sent);
        // Closing our side closes the path after the bytes in flight.
        c.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        let _ = c.read_to_end(&mut rest);
        assert!(rest.is_empty());
    }

    #[test]
    fn it_counts_what_clients_send_and_not_the_answers() {
        let proxy = Proxy::start(echo());
        let mut c = TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let before = proxy.sent();
        for _ in 0..5 {
            // One request, then its answer, before the next.
            c.write_all(b"ping").unwrap();
            let mut got = [0u8; 4];
            c.read_exact(&mut got).unwrap();
        }
        let sent = proxy.sent().since(before);
        assert_eq!((sent.chunks, sent.bytes), (5, 20), "{sent:?}");
        assert_eq!(proxy.sent().connections, 1);
    }
}
