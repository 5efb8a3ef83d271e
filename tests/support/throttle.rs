//! A TCP relay in front of a server whose client-to-server direction carries at most
//! a set number of bytes a second: a deliberately slow client link, for pushes that
//! must take longer than a token lives. Answers flow back unthrottled.

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

impl Throttle {
    /// Relay connections to `target` (`127.0.0.1:PORT`), uploads at `bytes_per_sec`.
    pub fn start(target: &str, bytes_per_sec: u64) -> Throttle {
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
                        std::thread::spawn(move || relay(client, &target, bytes_per_sec));
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

fn relay(client: TcpStream, target: &str, bytes_per_sec: u64) {
    let Ok(server) = TcpStream::connect(target) else {
        return;
    };
    let _ = client.set_nonblocking(false);
    let (Ok(mut client_read), Ok(mut server_write)) = (client.try_clone(), server.try_clone())
    else {
        return;
    };
    let (mut server_read, mut client_write) = (server, client);
    // Answers: as fast as they come.
    let back = std::thread::spawn(move || {
        let _ = std::io::copy(&mut server_read, &mut client_write);
        let _ = client_write.shutdown(Shutdown::Write);
    });
    // Requests: paced so that no more than `bytes_per_sec` have gone by any moment.
    let started = Instant::now();
    let mut sent: u64 = 0;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match client_read.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if server_write.write_all(&buf[..n]).is_err() {
            break;
        }
        sent += n as u64;
        let due = Duration::from_secs_f64(sent as f64 / bytes_per_sec as f64);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    let _ = server_write.shutdown(Shutdown::Write);
    let _ = back.join();
}
