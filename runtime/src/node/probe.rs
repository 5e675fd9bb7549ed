//! Plain HTTP/1.0 calls to a node's edge, with no HTTP client in the binary: the container
//! health check (`playhouse probe`) and the admin commands (`playhouse cluster ...`).

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

/// Sends `method path` to the edge at `address` with a bearer `token` and a JSON `body`,
/// waiting at most `timeout`; answers the status code and the body.
pub fn call(
    address: &str,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&str>,
    timeout: Duration,
) -> std::io::Result<(u16, String)> {
    let body = body.unwrap_or("");
    let mut answer = Vec::new();
    let status = exchange(
        address,
        Request {
            method,
            path,
            token,
            content_type: "application/json",
            body: body.as_bytes(),
        },
        timeout,
        &mut answer,
    )?;
    Ok((status, String::from_utf8_lossy(&answer).into_owned()))
}

/// One request to an edge.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub token: &'a str,
    pub content_type: &'a str,
    pub body: &'a [u8],
}

/// Sends `request` to the edge at `address`, each read and write waiting at most `timeout`,
/// and copies the answer's body into `sink` as it arrives (a backup may be gigabytes);
/// answers the status code.
pub fn exchange(
    address: &str,
    request: Request<'_>,
    timeout: Duration,
    sink: &mut dyn Write,
) -> std::io::Result<u16> {
    let target = address
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other("the address resolves to nothing"))?;
    let mut stream = std::net::TcpStream::connect_timeout(&target, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "{} {} HTTP/1.0\r\nHost: {address}\r\nAuthorization: Bearer {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\r\n",
        request.method,
        request.path,
        request.token,
        request.content_type,
        request.body.len()
    )?;
    stream.write_all(request.body)?;
    // The head, then whatever of the body came with it.
    let mut head = Vec::new();
    let mut buffer = [0u8; 8192];
    let body_start = loop {
        let read = stream.read(&mut buffer)?;
        if read == 0 {
            return Err(std::io::Error::other(format!(
                "the connection closed before the answer's head ended: {:?}",
                String::from_utf8_lossy(&head)
            )));
        }
        head.extend_from_slice(&buffer[..read]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        if head.len() > 64 * 1024 {
            return Err(std::io::Error::other("an answer head over 64 KiB"));
        }
    };
    let head_text = String::from_utf8_lossy(&head[..body_start]).into_owned();
    let status = head_text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {head_text:?}")))?;
    sink.write_all(&head[body_start..])?;
    std::io::copy(&mut stream, sink)?;
    Ok(status)
}
