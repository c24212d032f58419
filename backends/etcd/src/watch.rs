//! One etcd watch over the JSON gateway, on a connection of its own that a
//! cancel can close from another thread.
//!
//! The gateway serves `POST /v3/watch` as a never-ending HTTP/1.1 answer:
//! one JSON message per line, in chunked encoding. `ureq` gives no handle
//! that another thread could close, and a read timeout there ends the
//! answer for good; so the watch speaks HTTP itself on a `TcpStream`:
//! a cancel hook shuts the socket down (the blocked read returns at once),
//! and short read timeouts let the waiter keep its lease alive between
//! messages without losing its place in the stream. Closing the connection
//! ends the watch on the server: nothing is left behind.

use std::io::{ErrorKind as IoKind, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bext_locking::Wait;
use serde_json::{Value, json};

use crate::gateway::{Client, Error, ErrorKind, server_error};

/// gRPC `UNAUTHENTICATED`.
const CODE_UNAUTHENTICATED: i64 = 16;

/// How a watch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The key was deleted (or expired with its lease).
    Deleted,
    /// The wait was cancelled or timed out.
    Over,
    /// The server ended the watch (compaction, restart): read again.
    Again,
}

/// Watches `key` from `start_revision` until it is deleted, `wait` is over,
/// or the server ends the watch. `tick` runs every `tick_every` meanwhile
/// (the waiter's lease keep-alive); its error ends the watch.
pub fn until_deleted(
    client: &Client,
    key: &[u8],
    start_revision: i64,
    wait: &Wait,
    tick_every: Duration,
    mut tick: impl FnMut() -> Result<(), Error>,
) -> Result<Ended, Error> {
    let mut fresh_token = false;
    loop {
        let (endpoint, mut stream, connect_timeout) = connect_any(client)?;
        let token = client.token_for(&endpoint, fresh_token, Instant::now() + connect_timeout)?;
        let body = json!({ "create_request": {
            "key": B64.encode(key), "start_revision": start_revision.to_string(),
        } })
        .to_string();
        let host = host_port(&endpoint);
        let auth = token.map(|t| format!("authorization: {t}\r\n")).unwrap_or_default();
        let request = format!(
            "POST /v3/watch HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n\
             content-length: {}\r\n{auth}user-agent: bext-locking-etcd\r\n\r\n{body}",
            body.len()
        );
        stream.set_write_timeout(Some(connect_timeout)).map_err(|e| io(&endpoint, e))?;
        stream.write_all(request.as_bytes()).map_err(|e| io(&endpoint, e))?;
        let closer = stream.try_clone().map_err(|e| io(&endpoint, e))?;
        let _hook = wait.on_cancel(move || {
            let _ = closer.shutdown(Shutdown::Both);
        });
        match read_events(&mut stream, &endpoint, key, wait, tick_every, &mut tick) {
            Err(Error { kind: ErrorKind::Server { code: CODE_UNAUTHENTICATED }, .. })
                if !fresh_token =>
            {
                fresh_token = true;
            }
            other => return other.map_err(|e| Error { message: client.scrub(&e.message), ..e }),
        }
    }
}

fn io(endpoint: &str, e: std::io::Error) -> Error {
    Error::new(ErrorKind::Ambiguous, format!("{endpoint}/v3/watch: {e}"))
}

/// `http://host:port` → `host:port`.
fn host_port(endpoint: &str) -> &str {
    let rest = endpoint.strip_prefix("http://").unwrap_or(endpoint);
    rest.split('/').next().unwrap_or(rest)
}

/// A connection to the endpoint calls start at, or the next that answers.
fn connect_any(client: &Client) -> Result<(String, TcpStream, Duration), Error> {
    let (preferred, timeout) = client.preferred_endpoint();
    let all = client.endpoints();
    let first = all.iter().position(|e| e == preferred).unwrap_or(0);
    let mut failures = Vec::new();
    for i in 0..all.len() {
        let endpoint = &all[(first + i) % all.len()];
        match connect(endpoint, timeout) {
            Ok(s) => return Ok((endpoint.clone(), s, timeout)),
            Err(e) => failures.push(e.message),
        }
    }
    Err(Error::new(
        ErrorKind::Unreachable,
        format!("no endpoint reachable: {}", failures.join("; ")),
    ))
}

fn connect(endpoint: &str, timeout: Duration) -> Result<TcpStream, Error> {
    let hp = host_port(endpoint);
    let unreachable =
        |why: String| Error::new(ErrorKind::Unreachable, format!("{endpoint}/v3/watch: {why}"));
    let addrs = hp.to_socket_addrs().map_err(|e| unreachable(e.to_string()))?;
    let mut last = String::from("no address");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = e.to_string(),
        }
    }
    Err(unreachable(last))
}

/// Reads the answer: the status line and headers, then chunked JSON lines.
fn read_events(
    stream: &mut TcpStream,
    endpoint: &str,
    key: &[u8],
    wait: &Wait,
    tick_every: Duration,
    tick: &mut impl FnMut() -> Result<(), Error>,
) -> Result<Ended, Error> {
    let mut raw: Vec<u8> = Vec::new();
    let mut body: Vec<u8> = Vec::new();
    let mut headers_done = false;
    let mut chunked = false;
    let mut status = 0u16;
    let mut next_tick = Instant::now() + tick_every;
    let mut buf = [0u8; 8192];
    loop {
        if wait.is_over() {
            return Ok(Ended::Over);
        }
        if Instant::now() >= next_tick {
            tick()?;
            next_tick = Instant::now() + tick_every;
        }
        let until = next_tick.min(wait.deadline());
        let timeout = until.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        stream.set_read_timeout(Some(timeout)).map_err(|e| io(endpoint, e))?;
        let n = match stream.read(&mut buf) {
            Ok(0) if wait.is_cancelled() => return Ok(Ended::Over),
            Ok(0) => return Ok(Ended::Again),
            Ok(n) => n,
            Err(e) if matches!(e.kind(), IoKind::WouldBlock | IoKind::TimedOut) => continue,
            Err(e) if e.kind() == IoKind::Interrupted => continue,
            Err(_) if wait.is_cancelled() => return Ok(Ended::Over),
            // A broken stream: read the queue again, which reports a
            // server that is really gone.
            Err(_) => return Ok(Ended::Again),
        };
        raw.extend_from_slice(&buf[..n]);
        if !headers_done {
            let Some(end) = find(&raw, b"\r\n\r\n") else { continue };
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
            chunked = head.contains("transfer-encoding: chunked");
            raw.drain(..end + 4);
            headers_done = true;
        }
        if chunked {
            dechunk(&mut raw, &mut body);
        } else {
            body.append(&mut raw);
        }
        if status != 200 {
            // An error answer is one JSON object; wait for all of it.
            let Ok(v) = serde_json::from_slice::<Value>(&body) else { continue };
            let e = server_error(&v, &format!("{endpoint}/v3/watch"));
            return Err(Error::new(e.kind, format!("{} (HTTP {status})", e.message)));
        }
        while let Some(nl) = body.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = body.drain(..=nl).collect();
            if let Some(end) = message(&line, endpoint, key)? {
                return Ok(end);
            }
        }
    }
}

/// Moves the complete chunks at the front of `raw` into `body`.
fn dechunk(raw: &mut Vec<u8>, body: &mut Vec<u8>) {
    loop {
        let Some(eol) = find(raw, b"\r\n") else { return };
        let size_text = String::from_utf8_lossy(&raw[..eol]);
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let Ok(size) = usize::from_str_radix(size_text, 16) else {
            // Not chunk framing after all: pass it through.
            body.append(raw);
            return;
        };
        if raw.len() < eol + 2 + size + 2 {
            return;
        }
        body.extend_from_slice(&raw[eol + 2..eol + 2 + size]);
        raw.drain(..eol + 2 + size + 2);
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One line of the stream: `Some` when it ends the watch.
fn message(line: &[u8], endpoint: &str, key: &[u8]) -> Result<Option<Ended>, Error> {
    let text = String::from_utf8_lossy(line);
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let v: Value = serde_json::from_str(text).map_err(|e| {
        Error::new(ErrorKind::Protocol, format!("{endpoint}/v3/watch: not JSON ({e})"))
    })?;
    if let Some(e) = v.get("error") {
        return Err(server_error(e, &format!("{endpoint}/v3/watch")));
    }
    let Some(result) = v.get("result") else { return Ok(None) };
    if result.get("canceled").and_then(Value::as_bool).unwrap_or(false) {
        return Ok(Some(Ended::Again));
    }
    let encoded = B64.encode(key);
    let deleted = result.get("events").and_then(Value::as_array).is_some_and(|events| {
        events.iter().any(|ev| {
            ev.get("type").and_then(Value::as_str) == Some("DELETE")
                && ev.pointer("/kv/key").and_then(Value::as_str) == Some(encoded.as_str())
        })
    });
    Ok(deleted.then_some(Ended::Deleted))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_split_anywhere_come_out_whole() {
        let framed = b"5\r\nhello\r\n7\r\n world\n\r\n0\r\n\r\n";
        for cut in 0..framed.len() {
            let (mut raw, mut body) = (framed[..cut].to_vec(), Vec::new());
            dechunk(&mut raw, &mut body);
            raw.extend_from_slice(&framed[cut..]);
            dechunk(&mut raw, &mut body);
            assert_eq!(body, b"hello world\n", "cut at {cut}");
        }
    }

    #[test]
    fn only_a_delete_of_the_watched_key_ends_the_watch() {
        let k = B64.encode(b"k");
        let put = format!(r#"{{"result":{{"events":[{{"kv":{{"key":"{k}"}}}}]}}}}"#);
        let del =
            format!(r#"{{"result":{{"events":[{{"type":"DELETE","kv":{{"key":"{k}"}}}}]}}}}"#);
        let created = r#"{"result":{"header":{"revision":"5"},"created":true}}"#;
        assert_eq!(message(created.as_bytes(), "e", b"k").unwrap(), None);
        assert_eq!(message(put.as_bytes(), "e", b"k").unwrap(), None);
        assert_eq!(message(del.as_bytes(), "e", b"k").unwrap(), Some(Ended::Deleted));
        assert_eq!(message(del.as_bytes(), "e", b"other").unwrap(), None);
        let compacted = r#"{"result":{"canceled":true,"compact_revision":"9"}}"#;
        assert_eq!(message(compacted.as_bytes(), "e", b"k").unwrap(), Some(Ended::Again));
    }
}
