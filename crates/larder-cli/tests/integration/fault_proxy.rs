//! A TCP proxy in front of a real server that misbehaves on command: it
//! stalls, resets or flips a byte part way through a transfer, in either
//! direction, so that larder meets real failures of a real protocol (S3,
//! larder's own HTTP, ssh) where they hurt: mid-transfer.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the proxy does to the bytes of the next connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Passes everything.
    None,
    /// After this many bytes from the server, goes silent (holds the
    /// connection open, sends nothing more either way).
    StallReply(usize),
    /// After this many bytes from the server, resets the connection.
    ResetReply(usize),
    /// Flips a bit of the server's byte at this offset of the connection.
    FlipReply(usize),
    /// After this many bytes from the client, goes silent.
    StallRequest(usize),
    /// After this many bytes from the client, resets the connection.
    ResetRequest(usize),
}

/// The proxy; it runs until the test process ends.
#[derive(Clone)]
pub struct FaultProxy {
    pub addr: String,
    /// The fault, and for how many more connections (0: every one).
    fault: Arc<Mutex<(Fault, usize)>>,
    connections: Arc<Mutex<usize>>,
}

impl FaultProxy {
    /// A proxy on a free port of 127.0.0.1 in front of `target` (`host:port`).
    pub fn start(target: &str) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let proxy = FaultProxy {
            addr,
            fault: Arc::new(Mutex::new((Fault::None, 0))),
            connections: Arc::default(),
        };
        let handle = proxy.clone();
        let target = target.to_string();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let fault = handle.take_fault();
                *handle.connections.lock().expect("lock") += 1;
                let target = target.clone();
                std::thread::spawn(move || {
                    if let Ok(server) = TcpStream::connect(&target) {
                        relay(client, server, fault);
                    }
                });
            }
        });
        proxy
    }

    /// Applies `fault` to the next `times` connections (0: to all, until
    /// changed).
    pub fn set(&self, fault: Fault, times: usize) {
        *self.fault.lock().expect("lock") = (fault, times);
    }

    /// How many connections it has taken.
    pub fn connections(&self) -> usize {
        *self.connections.lock().expect("lock")
    }

    fn take_fault(&self) -> Fault {
        let mut slot = self.fault.lock().expect("lock");
        let (fault, times) = *slot;
        if times == 1 {
            *slot = (Fault::None, 0);
        } else if times > 1 {
            slot.1 -= 1;
        }
        fault
    }
}

/// Copies both ways until either side ends, doing `fault` on the way.
fn relay(client: TcpStream, server: TcpStream, fault: Fault) {
    let (reply_fault, request_fault) = match fault {
        Fault::StallReply(_) | Fault::ResetReply(_) | Fault::FlipReply(_) => (fault, Fault::None),
        Fault::StallRequest(_) | Fault::ResetRequest(_) => (Fault::None, fault),
        Fault::None => (Fault::None, Fault::None),
    };
    let (c2, s2) = (client.try_clone().expect("clone"), server.try_clone().expect("clone"));
    let up = std::thread::spawn(move || pump(c2, s2, request_fault));
    pump(server, client, reply_fault);
    let _ = up.join();
}

/// Copies `from` to `to`, doing `fault` to this direction.
fn pump(mut from: TcpStream, mut to: TcpStream, fault: Fault) {
    let mut sent = 0usize;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &mut buf[..n];
        let limit = match fault {
            Fault::StallReply(at) | Fault::StallRequest(at) => Some((at, true)),
            Fault::ResetReply(at) | Fault::ResetRequest(at) => Some((at, false)),
            _ => None,
        };
        if let Some((at, stall)) = limit
            && sent + n > at
        {
            let _ = to.write_all(&chunk[..at.saturating_sub(sent)]);
            let _ = to.flush();
            if stall {
                std::thread::sleep(Duration::from_secs(120));
            } else {
                reset(&to);
                reset(&from);
            }
            return;
        }
        if let Fault::FlipReply(at) = fault
            && (sent..sent + n).contains(&at)
        {
            chunk[at - sent] ^= 0x01;
        }
        if to.write_all(chunk).is_err() {
            break;
        }
        sent += n;
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// Makes the connection end with a TCP reset rather than an orderly close,
/// once every handle on it is dropped; wakes the other direction's reader so
/// that it drops its handles too.
fn reset(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: setsockopt with a valid socket and a linger value of the size given.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            std::ptr::from_ref(&linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    let _ = stream.shutdown(Shutdown::Read);
}
