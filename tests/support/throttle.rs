//! A TCP relay in front of a server, one of whose directions carries at most a set
//! number of bytes a second: a deliberately slow client link, for pushes that must
//! take longer than a token lives, or a slow server, for fetches that must take longer
//! than an upload may sit idle. The other direction flows unthrottled.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Throttle {
    /// `127.0.0.1:PORT`, to give clients instead of the server's address.
    pub addr: String,
    stop: Arc<AtomicBool>,
}

/// Which way the bytes are paced.
#[derive(Clone, Copy)]
enum Paced {
    Requests,
    Answers,
}

impl Throttle {
    /// Relay connections to `target` (`127.0.0.1:PORT`), uploads at `bytes_per_sec`.
    pub fn start(target: &str, bytes_per_sec: u64) -> Throttle {
        Throttle::relaying(target, bytes_per_sec, Paced::Requests)
    }

    /// Relay connections to `target`, its answers at `bytes_per_sec`.
    pub fn start_answers(target: &str, bytes_per_sec: u64) -> Throttle {
        Throttle::relaying(target, bytes_per_sec, Paced::Answers)
    }

    fn relaying(target: &str, bytes_per_sec: u64, paced: Paced) -> Throttle {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the throttle");
        let addr = listener.local_addr().expect("throttle address").to_string();
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let stop = Arc::new(AtomicBool::new(false));
        let target = target.to_string();
        let stopping = stop.clone();
        std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let target = target.clone();
                        std::thread::spawn(move || relay(client, &target, bytes_per_sec, paced));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(_) => break,
                }
            }
        });
        Throttle { addr, stop }
    }
}

impl Drop for Throttle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn relay(client: TcpStream, target: &str, bytes_per_sec: u64, paced: Paced) {
    let Ok(server) = TcpStream::connect(target) else {
        return;
    };
    let _ = client.set_nonblocking(false);
    let (Ok(client_read), Ok(server_write)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let (server_read, client_write) = (server, client);
    let (requests, answers) = match paced {
        Paced::Requests => (Some(bytes_per_sec), None),
        Paced::Answers => (None, Some(bytes_per_sec)),
    };
    let back = std::thread::spawn(move || copy(server_read, client_write, answers));
    copy(client_read, server_write, requests);
    let _ = back.join();
}

/// Copy until the end, then pass the end on; with a rate, paced so that no more than
/// `bytes_per_sec` have gone by at any moment.
fn copy(mut from: TcpStream, mut to: TcpStream, bytes_per_sec: Option<u64>) {
    let started = Instant::now();
    let mut sent: u64 = 0;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        sent += n as u64;
        if let Some(rate) = bytes_per_sec {
            let due = Duration::from_secs_f64(sent as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
