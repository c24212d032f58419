//! One pooled connection's socket, written and read by this crate: a TCP
//! stream, the handshake its URL asks for (`AUTH`, `SELECT`), and replies
//! parsed out of one buffer kept for the connection's life.
//!
//! The driver's synchronous reader zeroes 8 KiB of fresh buffer before
//! every read of the socket and parses through a general parser-combinator
//! library. A lock's replies are a status, an integer, nil or a short
//! array, and for those that was most of the client's work: an
//! instruction count put the zeroing alone at about half of an
//! acquire+release pair, and every read wrote through 8 KiB of cache.
//! Here a read lands after the bytes already buffered (the buffer is
//! zeroed once, when it grows), and a reply is parsed in place.
//!
//! The server speaks RESP2 to this connection (no `HELLO 3` is sent), so
//! any other first byte means the port serves something else. Error
//! replies are handed to the driver's own parser, so they become the same
//! `Value::ServerError` (and `NOSCRIPT` the same error kind) as before.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use redis::{ConnectionAddr, ConnectionInfo, ErrorKind, RedisError, Value};

use crate::node::pack;

/// The buffer a connection starts with: far above any reply to a lock
/// call, so it rarely grows.
const INITIAL_BUFFER: usize = 1024;

/// Deeper nesting than any script here returns means a broken stream.
const MAX_DEPTH: usize = 16;

/// The longest bulk reply accepted (the server's own limit for a string).
const MAX_BULK: usize = 512 * 1024 * 1024;

/// A connected, authenticated socket and its read buffer.
pub struct Wire {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Parsed up to here.
    pos: usize,
    /// Read up to here.
    end: usize,
}

fn not_resp() -> RedisError {
    RedisError::from((ErrorKind::ParseError, "not a Redis protocol reply"))
}

impl Wire {
    /// Connects to the server `info` names within `timeout` per address
    /// tried, then authenticates and selects the database, each reply
    /// within `timeout`, as the driver does.
    pub fn connect(info: &ConnectionInfo, timeout: Duration) -> Result<Self, RedisError> {
        let ConnectionAddr::Tcp(host, port) = &info.addr else {
            return Err(RedisError::from((
                ErrorKind::InvalidClientConfig,
                "only redis://host:port is supported",
            )));
        };
        let mut last = None;
        for addr in (host.as_str(), *port).to_socket_addrs()? {
            match TcpStream::connect_timeout(&addr, timeout) {
                Ok(stream) => {
                    stream.set_nodelay(true)?;
                    stream.set_read_timeout(Some(timeout))?;
                    stream.set_write_timeout(Some(timeout))?;
                    let mut wire = Self { stream, buf: vec![0; INITIAL_BUFFER], pos: 0, end: 0 };
                    wire.handshake(&info.redis)?;
                    return Ok(wire);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("the host has no address")).into())
    }

    fn handshake(&mut self, info: &redis::RedisConnectionInfo) -> Result<(), RedisError> {
        if let Some(password) = &info.password {
            let mut reply = match &info.username {
                Some(user) => self.call(&[b"AUTH", user.as_bytes(), password.as_bytes()])?,
                None => self.call(&[b"AUTH", password.as_bytes()])?,
            };
            // A server older than 6 knows no user names: try without.
            if info.username.is_some() && wrong_arity(&reply) {
                reply = self.call(&[b"AUTH", password.as_bytes()])?;
            }
            if let Value::ServerError(_) = reply {
                return Err(RedisError::from((
                    ErrorKind::AuthenticationFailed,
                    "Password authentication failed",
                )));
            }
        }
        if info.db != 0 {
            let db = info.db.to_string();
            self.call(&[b"SELECT", db.as_bytes()])?.extract_error()?;
        }
        Ok(())
    }

    fn call(&mut self, parts: &[&[u8]]) -> Result<Value, RedisError> {
        self.send_packed_command(&pack(parts))?;
        self.recv_response()
    }

    /// Writes a whole request.
    pub fn send_packed_command(&mut self, packed: &[u8]) -> Result<(), RedisError> {
        Ok(self.stream.write_all(packed)?)
    }

    /// Reads the next reply (a server error is a `Value::ServerError`, as
    /// the driver gives it). After an error the stream is out of step: the
    /// connection must be dropped.
    pub fn recv_response(&mut self) -> Result<Value, RedisError> {
        loop {
            if let Some((value, len)) = parse(&self.buf[self.pos..self.end], 0)? {
                self.pos += len;
                if self.pos == self.end {
                    (self.pos, self.end) = (0, 0);
                }
                return Ok(value);
            }
            if self.end == self.buf.len() {
                if self.pos > 0 {
                    self.buf.copy_within(self.pos..self.end, 0);
                    (self.end, self.pos) = (self.end - self.pos, 0);
                } else {
                    let grown = self.buf.len() * 2;
                    self.buf.resize(grown, 0);
                }
            }
            match self.stream.read(&mut self.buf[self.end..]) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// How long a read may wait for the server.
    pub fn set_read_timeout(&self, d: Option<Duration>) -> Result<(), RedisError> {
        Ok(self.stream.set_read_timeout(d)?)
    }

    /// How long a write may wait for the socket.
    pub fn set_write_timeout(&self, d: Option<Duration>) -> Result<(), RedisError> {
        Ok(self.stream.set_write_timeout(d)?)
    }
}

fn wrong_arity(v: &Value) -> bool {
    matches!(v, Value::ServerError(e) if e.details().is_some_and(|d| d.contains("wrong number of arguments")))
}

/// The reply at the start of `b` and its length in bytes, or `None` when
/// it has not wholly arrived.
fn parse(b: &[u8], depth: usize) -> Result<Option<(Value, usize)>, RedisError> {
    let Some(&kind) = b.first() else { return Ok(None) };
    let Some(cr) = b.iter().position(|&c| c == b'\r') else { return Ok(None) };
    if cr + 1 >= b.len() {
        return Ok(None);
    }
    if b[cr + 1] != b'\n' {
        return Err(not_resp());
    }
    let (line, after) = (&b[1..cr], cr + 2);
    let value = match kind {
        b'+' if line == b"OK" => Value::Okay,
        b'+' => Value::SimpleString(String::from_utf8_lossy(line).into_owned()),
        b'-' => redis::parse_redis_value(&b[..after])?,
        b':' => Value::Int(integer(line)?),
        b'$' => {
            let Ok(n) = usize::try_from(integer(line)?) else {
                return Ok(Some((Value::Nil, after)));
            };
            if n > MAX_BULK {
                return Err(not_resp());
            }
            let end = after + n;
            if b.len() < end + 2 {
                return Ok(None);
            }
            if &b[end..end + 2] != b"\r\n" {
                return Err(not_resp());
            }
            return Ok(Some((Value::BulkString(b[after..end].to_vec()), end + 2)));
        }
        b'*' => {
            let Ok(n) = usize::try_from(integer(line)?) else {
                return Ok(Some((Value::Nil, after)));
            };
            if depth >= MAX_DEPTH {
                return Err(not_resp());
            }
            // Each element takes at least 3 bytes: no claimed count may
            // reserve more than what could have arrived.
            let mut items = Vec::with_capacity(n.min(b.len() / 3));
            let mut at = after;
            for _ in 0..n {
                match parse(&b[at..], depth + 1)? {
                    Some((v, len)) => {
                        items.push(v);
                        at += len;
                    }
                    None => return Ok(None),
                }
            }
            return Ok(Some((Value::Array(items), at)));
        }
        _ => return Err(not_resp()),
    };
    Ok(Some((value, after)))
}

fn integer(line: &[u8]) -> Result<i64, RedisError> {
    std::str::from_utf8(line).ok().and_then(|s| s.parse().ok()).ok_or_else(not_resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every reply shape a lock call meets, parsed as the driver parses it.
    #[test]
    fn parses_as_the_driver_does() {
        let replies: [&[u8]; 12] = [
            b"+OK\r\n",
            b"+QUEUED\r\n",
            b":0\r\n",
            b":-1234567890123\r\n",
            b"$-1\r\n",
            b"$0\r\n\r\n",
            b"$5\r\nab\r\nc\r\n",
            b"*-1\r\n",
            b"*0\r\n",
            b"*6\r\n$40\r\n0123456789012345678901234567890123456789\r\n:29999\r\n$0\r\n\r\n:-1\r\n:1\r\n$5\r\nowner\r\n",
            b"-NOSCRIPT No matching script. Please use EVAL.\r\n",
            b"*2\r\n*1\r\n:7\r\n-ERR inner\r\n",
        ];
        for r in replies {
            let ours = parse(r, 0).unwrap().expect("complete");
            assert_eq!(ours.1, r.len(), "{}", String::from_utf8_lossy(r));
            assert_eq!(
                ours.0,
                redis::parse_redis_value(r).unwrap(),
                "{}",
                String::from_utf8_lossy(r)
            );
            // Every shorter prefix is incomplete, never an error or a value.
            for cut in 0..r.len() {
                assert!(parse(&r[..cut], 0).unwrap().is_none(), "{:?}", &r[..cut]);
            }
        }
        let err = parse(b"-NOSCRIPT x\r\n", 0).unwrap().unwrap().0.extract_error().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NoScriptError);
    }

    #[test]
    fn other_protocols_are_refused() {
        for b in [&b"HTTP/1.1 400 Bad Request\r\n"[..], b":12a\r\n", b"$3\r\nabcd\r\n", b"+OK\rX"] {
            let e = parse(b, 0).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::ParseError, "{b:?}");
        }
        let deep = "*1\r\n".repeat(MAX_DEPTH + 1) + ":1\r\n";
        assert!(parse(deep.as_bytes(), 0).is_err());
        // A huge claimed count reserves nothing it has not seen.
        assert!(parse(b"*999999999999\r\n:1\r\n", 0).unwrap().is_none());
    }

    /// Replies split across reads, several in one read, and one larger
    /// than the buffer, through a real socket.
    #[test]
    fn reads_replies_in_pieces_and_back_to_back() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let big = "x".repeat(INITIAL_BUFFER * 3);
        let big_reply = format!("${}\r\n{big}\r\n", big.len());
        let script = [
            b"+OK\r\n:4".to_vec(),
            b"2\r\n*2\r\n$1\r\na\r\n".to_vec(),
            b":5\r\n".to_vec(),
            big_reply.clone().into_bytes(),
        ];
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            for piece in script {
                s.write_all(&piece).unwrap();
                s.flush().unwrap();
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let info: ConnectionInfo = format!("redis://{addr}").parse().unwrap();
        let mut w = Wire::connect(&info, Duration::from_secs(5)).unwrap();
        assert_eq!(w.recv_response().unwrap(), Value::Okay);
        assert_eq!(w.recv_response().unwrap(), Value::Int(42));
        assert_eq!(
            w.recv_response().unwrap(),
            Value::Array(vec![Value::BulkString(b"a".to_vec()), Value::Int(5)])
        );
        assert_eq!(w.recv_response().unwrap(), Value::BulkString(big.into_bytes()));
        server.join().unwrap();
        let e = w.recv_response().unwrap_err();
        assert!(e.is_connection_dropped(), "{e:?}");
    }
}
