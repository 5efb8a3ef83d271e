//! One HTTP/1.1 PATCH (or, with `--put`, PUT) per process, its body a byte range of a
//! file, sent with the kernel's file-to-socket copy. `bench/regbench.py` runs it once per 8 MiB chunk to
//! measure a chunked upload whose client starts a process and opens a connection per
//! chunk, as `curl` does, without `curl`'s own start-up and buffering (`curl
//! --data-binary @-` reads the whole chunk from a pipe before it sends a byte), which
//! on a 2-core machine bound that measurement below what the server can take.
//!
//! With `--put` it sends a whole upload in one PUT (no `Content-Range`): the
//! single-request upload as a client measures it that costs the server's 2 cores
//! almost no CPU of its own, beside `curl -T`, which reads and copies every byte.
//!
//!     patch-client [--put] HOST:PORT PATH FILE OFFSET LENGTH [HEADER ...]
//!
//! Prints the response's status line and headers; exits 1 on any error.

use std::io::{Read, Seek, SeekFrom, Write};
use std::net::TcpStream;

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
    let mut file = std::fs::File::open(file)?;
    file.seek(SeekFrom::Start(offset))?;

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
    // std copies a file to a socket with sendfile(2) where it can.
    let sent = std::io::copy(&mut (&mut file).take(length), &mut conn)?;
    if sent != length {
        return Err(format!("file ended after {sent} of {length} bytes").into());
    }

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
