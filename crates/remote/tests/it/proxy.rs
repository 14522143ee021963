//! A TCP proxy on 127.0.0.1 between the S3 client and a server, for network faults:
//! it forwards bytes both ways until told to cut every connection once a budget of
//! client-to-server bytes is spent ([`Proxy::cut_after`]) or at once
//! ([`Proxy::cut_now`]); while cut, it accepts new connections and closes them
//! before forwarding anything. [`Proxy::stall_after`] swallows every byte instead, keeping
//! the connections open (a link gone silent). [`Proxy::heal`] forwards again. Plain threads: one
//! accepting, two per connection.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug)]
struct State {
    /// Client-to-server bytes still allowed before the cut; `None`: no limit.
    budget: Option<u64>,
    /// Connections are cut: new ones are closed at once.
    cut: bool,
    /// Both halves of every live connection, to cut them.
    live: Vec<(TcpStream, TcpStream)>,
    /// Connections accepted so far.
    accepted: u64,
    /// Bytes are swallowed, in both directions, and connections kept open: a link
    /// that went silent (no reset, no close).
    stalled: bool,
    /// When the budget runs out: stall rather than cut.
    stall_when_spent: bool,
}

impl State {
    fn cut_all(&mut self) {
        self.cut = true;
        for (a, b) in self.live.drain(..) {
            let _ = a.shutdown(Shutdown::Both);
            let _ = b.shutdown(Shutdown::Both);
        }
    }
}

/// A running proxy; its threads stop on drop.
#[derive(Debug)]
pub(crate) struct Proxy {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

impl Proxy {
    /// Listen on a free loopback port and forward to `upstream` (`http://HOST:PORT`
    /// or `HOST:PORT`).
    pub(crate) fn start(upstream: &str) -> Proxy {
        let upstream: SocketAddr = upstream
            .trim_start_matches("http://")
            .parse()
            .expect("upstream address");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let state = Arc::new(Mutex::new(State {
            budget: None,
            cut: false,
            live: Vec::new(),
            accepted: 0,
            stalled: false,
            stall_when_spent: false,
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if sp.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let mut s = lock(&st);
                s.accepted += 1;
                if s.cut {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect_timeout(&upstream, Duration::from_secs(5)) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let (Ok(c2), Ok(s2), Ok(c3), Ok(s3)) = (
                    client.try_clone(),
                    server.try_clone(),
                    client.try_clone(),
                    server.try_clone(),
                ) else {
                    continue;
                };
                s.live.push((c3, s3));
                drop(s);
                let st1 = st.clone();
                let st2 = st.clone();
                std::thread::spawn(move || pump(client, server, st1, true));
                std::thread::spawn(move || pump(s2, c2, st2, false));
            }
        });
        Proxy { addr, state, stop }
    }

    /// The endpoint to give the client: `http://127.0.0.1:PORT`.
    pub(crate) fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Cut every connection once `bytes` more client-to-server bytes have passed.
    pub(crate) fn cut_after(&self, bytes: u64) {
        let mut s = lock(&self.state);
        s.budget = Some(bytes);
        s.stall_when_spent = false;
    }

    /// Go silent once `bytes` more client-to-server bytes have passed: swallow every
    /// byte from then on, in both directions, keeping the connections open.
    pub(crate) fn stall_after(&self, bytes: u64) {
        let mut s = lock(&self.state);
        s.budget = Some(bytes);
        s.stall_when_spent = true;
    }

    /// Cut every connection now and refuse new ones.
    pub(crate) fn cut_now(&self) {
        lock(&self.state).cut_all();
    }

    /// Forward again, without a budget.
    pub(crate) fn heal(&self) {
        let mut s = lock(&self.state);
        s.cut = false;
        s.stalled = false;
        s.budget = None;
        s.stall_when_spent = false;
    }

    /// Whether the connections have been cut (by a spent budget or [`Proxy::cut_now`]).
    pub(crate) fn is_cut(&self) -> bool {
        lock(&self.state).cut
    }

    /// Connections accepted so far (including refused ones).
    pub(crate) fn accepted(&self) -> u64 {
        lock(&self.state).accepted
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        lock(&self.state).cut_all();
        // Wake the accepting thread so it sees `stop`.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

/// Copy `from` to `to` until either side closes (swallowing bytes while stalled).
/// In the client-to-server direction (`upstream`), spend the budget and cut everything
/// when it runs out, after forwarding exactly the bytes it allowed.
fn pump(mut from: TcpStream, mut to: TcpStream, state: Arc<Mutex<State>>, upstream: bool) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut allowed = n;
        let mut spent = false;
        {
            let mut s = lock(&state);
            if s.cut {
                break;
            }
            if s.stalled {
                continue;
            }
            if let (true, Some(b)) = (upstream, s.budget.as_mut()) {
                let take = (*b).min(n as u64);
                *b -= take;
                allowed = take as usize;
                spent = *b == 0;
            }
        }
        if to.write_all(&buf[..allowed]).is_err() {
            break;
        }
        if spent {
            let mut s = lock(&state);
            s.budget = None;
            if s.stall_when_spent {
                s.stalled = true;
            } else {
                s.cut_all();
                break;
            }
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
