//! The container health check: one HTTP/1.0 GET to a node's edge, with no curl in the image.

use std::io::{Read, Write};
use std::net::ToSocketAddrs;
use std::time::Duration;

/// GETs `path` from the edge at `address` within 3 s; the answer's status code.
pub fn get_status(address: &str, path: &str) -> std::io::Result<u16> {
    let timeout = Duration::from_secs(3);
    let target = address
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other("the address resolves to nothing"))?;
    let mut stream = std::net::TcpStream::connect_timeout(&target, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n")?;
    let mut head = [0u8; 64];
    let read = stream.read(&mut head)?;
    let line = String::from_utf8_lossy(&head[..read]);
    line.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {line:?}")))
}
