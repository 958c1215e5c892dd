//! Just enough HTTP/1.1 over `std::net::TcpStream` for readiness probes and WebDriver.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A status code and body, as returned by [`request`].
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) body: String,
}

/// Sends one request with `Connection: close` and reads the whole response.
///
/// `timeout` bounds the connect and each read and write separately.
pub(crate) fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
    timeout: Duration,
) -> io::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;

    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    stream.flush()?;

    parse_response(&read_response(&mut stream)?)
}

/// Reads one response: up to the end of its `Content-Length` body, or to the end of the
/// stream when it has none. Some servers (ChromeDriver) keep the connection open after
/// answering despite `Connection: close`, so reading to the end would wait for a timeout.
fn read_response(stream: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut raw = Vec::new();
    let mut chunk = [0_u8; 16 * 1024];
    loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            if let Some(length) = content_length(&raw[..end]) {
                while raw.len() < end + 4 + length {
                    let n = stream.read(&mut chunk)?;
                    if n == 0 {
                        break;
                    }
                    raw.extend_from_slice(&chunk[..n]);
                }
                raw.truncate((end + 4 + length).min(raw.len()));
                return Ok(raw);
            }
            stream.read_to_end(&mut raw)?;
            return Ok(raw);
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(raw);
        }
        raw.extend_from_slice(&chunk[..n]);
    }
}

fn content_length(head: &[u8]) -> Option<usize> {
    String::from_utf8_lossy(head)
        .lines()
        .skip(1)
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())
                .flatten()
        })
}

fn parse_response(raw: &[u8]) -> io::Result<Response> {
    let text = String::from_utf8_lossy(raw);
    let status_line = text.lines().next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("not an HTTP response: {status_line:?}"),
            )
        })?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Ok(Response { status, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_yields_its_status_and_body() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 17\r\n\r\n{\"TableNames\":[]}";
        let response = parse_response(raw).unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.body, "{\"TableNames\":[]}");
    }

    #[test]
    fn a_body_ends_at_its_content_length_even_if_the_connection_stays_open() {
        // `Chain` of the reply and a reader that would block: stands in for a server
        // that keeps the connection open.
        struct NeverEnds;
        impl Read for NeverEnds {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::new(io::ErrorKind::WouldBlock, "would wait"))
            }
        }
        let raw: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length:4\r\n\r\nabcd";
        let read = read_response(&mut raw.chain(NeverEnds)).unwrap();
        assert_eq!(parse_response(&read).unwrap().body, "abcd");
        let no_length: &[u8] = b"HTTP/1.1 200 OK\r\n\r\nto the end";
        let read = read_response(&mut { no_length }).unwrap();
        assert_eq!(parse_response(&read).unwrap().body, "to the end");
    }

    #[test]
    fn garbage_is_not_a_response() {
        assert!(parse_response(b"hello").is_err());
        assert!(parse_response(b"").is_err());
    }
}
