//! One HTTP/1.1 PATCH (or, with `--put`, PUT) per process, its body a byte range of a
//! file, sent with the kernel's file-to-socket copy. `bench/regbench.py` runs it once
//! per 8 MiB chunk to measure a chunked upload whose client starts a process and opens
//! a connection per chunk, as `curl` does, without `curl`'s own start-up and buffering
//! (`curl --data-binary @-` reads the whole chunk from a pipe before it sends a byte),
//! which on a 2-core machine bound that measurement below what the server can take.
//!
//! With `--put` it sends a whole upload in one PUT (no `Content-Range`): the
//! single-request upload as a client measures it that costs the server's 2 cores
//! almost no CPU of its own, beside `curl -T`, which reads and copies every byte.
//!
//!     patch-client [--put] HOST:PORT PATH FILE OFFSET LENGTH [HEADER ...]
//!
//! Prints the response's status line and headers; exits 1 on any error.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;

fn main() {
    if let Err(e) = run() {
        eprintln!("patch-client: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let put = args.first().is_some_and(|a| a == "--put");
    if put {
        args.remove(0);
    }
    let [addr, path, file, offset, length, headers @ ..] = args.as_slice() else {
        return Err(
            "usage: patch-client [--put] HOST:PORT PATH FILE OFFSET LENGTH [HEADER ...]".into(),
        );
    };
    let offset: u64 = offset.parse()?;
    let length: u64 = length.parse()?;
    if length == 0 {
        return Err("LENGTH must be at least 1".into());
    }
    let file = std::fs::File::open(file)?;

    let mut head = format!(
        "{} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {length}\r\nConnection: close\r\n",
        if put { "PUT" } else { "PATCH" }
    );
    if !put {
        head.push_str(&format!(
            "Content-Range: {offset}-{}\r\n",
            offset + length - 1
        ));
    }
    for h in headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");

    let mut conn = TcpStream::connect(addr.as_str())?;
    conn.set_nodelay(true)?;
    conn.write_all(head.as_bytes())?;
    send_range(&file, offset, length, &conn)?;

    let mut response = Vec::with_capacity(1024);
    let mut buf = [0u8; 4096];
    let end = loop {
        if let Some(at) = response.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = conn.read(&mut buf)?;
        if n == 0 {
            return Err("connection closed before the response head".into());
        }
        response.extend_from_slice(&buf[..n]);
    };
    std::io::stdout().write_all(&response[..end])?;
    Ok(())
}

/// Send `length` bytes of `file` from `offset` with sendfile(2): the kernel hands the
/// page cache's pages to the socket, so the client neither reads nor copies the body.
/// (`std::io::copy` from a file to a `TcpStream` reads and sends 8 KiB at a time.)
#[allow(unsafe_code)]
fn send_range(
    file: &std::fs::File,
    offset: u64,
    length: u64,
    conn: &TcpStream,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut at = libc::off_t::try_from(offset)?;
    let end = at + libc::off_t::try_from(length)?;
    while at < end {
        let want = usize::try_from(end - at)?.min(1 << 30);
        // SAFETY: both descriptors stay open for the call (borrowed); `at` is a
        // local the kernel advances past what it sent.
        let n = unsafe { libc::sendfile(conn.as_raw_fd(), file.as_raw_fd(), &mut at, want) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e.into());
        }
        if n == 0 {
            return Err(format!("file ended {} bytes short", end - at).into());
        }
    }
    Ok(())
}
