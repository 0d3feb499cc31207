//! The kernel's floor for AI stream calls on this machine: what the
//! cheapest possible daemon would spend per 20 ms frame, with no media
//! code at all, on the same loopback topology as `ai-load`.
//!
//! One thread pinned to CPU 0 plays the daemon: an epoll loop over one UDP
//! socket per call that, for every RTP packet, writes one WebSocket-sized
//! frame (default 338 bytes: a Twilio `media` message with its masked
//! client header) to that call's TCP connection — one `recvfrom` and one
//! `send` per frame, nothing else. One thread pinned to CPU 1 plays the
//! phones and the AI, as `ai-load` does: 172-byte RTP packets every 20 ms
//! per call, spread over the interval, and reads of every TCP stream,
//! timing each frame from the packet's send.
//!
//! `stream-floor CALLS SECONDS [FRAME_BYTES]` prints each thread's share
//! of its core, the CPU per frame, loss and latency percentiles. Bounded:
//! at most 20,000 calls and 120 s. Loopback only.

use std::io;
use std::mem::size_of;
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const RTP_BYTES: usize = 172;
const FRAME_MS: u64 = 20;

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let calls: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(850);
    let secs: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10);
    let frame_bytes: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(338);
    if !(1..=20_000).contains(&calls) || !(1..=120).contains(&secs) || frame_bytes < 16 {
        eprintln!("usage: stream-floor CALLS(1-20000) SECONDS(1-120) [FRAME_BYTES>=16]");
        std::process::exit(2);
    }
    raise_nofile(calls * 4 + 64);

    // Per call: the daemon's RTP socket, the phone's socket (connected to
    // it), and a TCP connection from the daemon to the AI.
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let mut legs = Vec::with_capacity(calls);
    let mut phones = Vec::with_capacity(calls);
    let mut ws_out = Vec::with_capacity(calls);
    let mut ws_in = Vec::with_capacity(calls);
    for _ in 0..calls {
        let leg = UdpSocket::bind("127.0.0.1:0")?;
        leg.set_nonblocking(true)?;
        let phone = UdpSocket::bind("127.0.0.1:0")?;
        phone.connect(leg.local_addr()?)?;
        phone.set_nonblocking(true)?;
        let out = TcpStream::connect(listener.local_addr()?)?;
        out.set_nodelay(true)?;
        out.set_nonblocking(true)?;
        let (inn, _) = listener.accept()?;
        inn.set_nonblocking(true)?;
        legs.push(leg);
        phones.push(phone);
        ws_out.push(out);
        ws_in.push(inn);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let warmup = Duration::from_secs(2);
    let run = warmup + Duration::from_secs(secs);

    let daemon = {
        let stop = stop.clone();
        std::thread::spawn(move || daemon_loop(0, &legs, &ws_out, frame_bytes, &stop, warmup))
    };
    let load = std::thread::spawn(move || load_loop(1, &phones, &ws_in, frame_bytes, run, warmup));
    let report = load.join().expect("load thread")?;
    stop.store(true, Ordering::Relaxed);
    let (daemon_cpu, daemon_wall) = daemon.join().expect("daemon thread")?;

    let frames = report.received as f64;
    let mut lat = report.latencies_us;
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    println!(
        "calls={calls} seconds={secs} frame_bytes={frame_bytes} sent={} received={} lost={}",
        report.sent,
        report.received,
        report.sent.saturating_sub(report.received)
    );
    println!(
        "daemon_floor_cpu={:.1}% of a core, {:.2} us per frame",
        100.0 * daemon_cpu.as_secs_f64() / daemon_wall.as_secs_f64(),
        daemon_cpu.as_secs_f64() * 1e6 / frames.max(1.0)
    );
    println!(
        "load_cpu={:.1}% of a core",
        100.0 * report.cpu.as_secs_f64() / report.wall.as_secs_f64()
    );
    println!(
        "latency_ms p50={:.3} p99={:.3} p99.9={:.3}",
        pct(0.50),
        pct(0.99),
        pct(0.999)
    );
    Ok(())
}

fn raise_nofile(want: usize) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && (lim.rlim_cur as usize) < want {
            lim.rlim_cur = (want as libc::rlim_t).min(lim.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET on an index below
    // CPU_SETSIZE; sched_setaffinity on this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
    }
}

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

struct Epoll(RawFd);

impl Epoll {
    fn new(fds: impl Iterator<Item = RawFd>) -> io::Result<Epoll> {
        // SAFETY: plain syscalls with valid arguments.
        let ep = unsafe { libc::epoll_create1(0) };
        if ep < 0 {
            return Err(io::Error::last_os_error());
        }
        for (i, fd) in fds.enumerate() {
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: i as u64,
            };
            // SAFETY: valid epoll fd, fd and event.
            if unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(Epoll(ep))
    }

    fn wait(&self, events: &mut [libc::epoll_event], timeout_ms: i32) -> usize {
        // SAFETY: the buffer holds `events.len()` entries.
        let n = unsafe {
            libc::epoll_wait(self.0, events.as_mut_ptr(), events.len() as i32, timeout_ms)
        };
        n.max(0) as usize
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: we own the fd.
        unsafe { libc::close(self.0) };
    }
}

/// The daemon's floor: per RTP packet, one receive and one TCP send of a
/// frame carrying the packet's timestamp. Returns (CPU, wall) over the
/// measured phase.
fn daemon_loop(
    cpu: usize,
    legs: &[UdpSocket],
    ws: &[TcpStream],
    frame_bytes: usize,
    stop: &AtomicBool,
    warmup: Duration,
) -> io::Result<(Duration, Duration)> {
    pin(cpu);
    let ep = Epoll::new(legs.iter().map(|s| s.as_raw_fd()))?;
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 512];
    let mut pkt = [0u8; 2048];
    let mut frame = vec![b'x'; frame_bytes];
    let start = Instant::now();
    let mut measured: Option<(Instant, Duration)> = None;
    while !stop.load(Ordering::Relaxed) {
        if measured.is_none() && start.elapsed() >= warmup {
            measured = Some((Instant::now(), thread_cpu()));
        }
        let n = ep.wait(&mut events, 50);
        for ev in &events[..n] {
            let i = ev.u64 as usize;
            let fd = legs[i].as_raw_fd();
            loop {
                // SAFETY: buffer and length match.
                let got = unsafe {
                    libc::recv(fd, pkt.as_mut_ptr().cast(), pkt.len(), libc::MSG_DONTWAIT)
                };
                if got < 20 {
                    break;
                }
                frame[..8].copy_from_slice(&pkt[12..20]);
                // SAFETY: buffer and length match. A full socket drops the
                // frame, as a bounded queue would.
                unsafe {
                    libc::send(
                        ws[i].as_raw_fd(),
                        frame.as_ptr().cast(),
                        frame.len(),
                        libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                    )
                };
            }
        }
    }
    let (t0, c0) = measured.unwrap_or((start, Duration::ZERO));
    Ok((thread_cpu() - c0, t0.elapsed()))
}

struct LoadReport {
    sent: u64,
    received: u64,
    latencies_us: Vec<u64>,
    cpu: Duration,
    wall: Duration,
}

/// The phones and the AI: RTP every 20 ms per call (spread over the
/// interval), and every TCP frame read and timed.
fn load_loop(
    cpu: usize,
    phones: &[UdpSocket],
    ws: &[TcpStream],
    frame_bytes: usize,
    run: Duration,
    warmup: Duration,
) -> io::Result<LoadReport> {
    pin(cpu);
    let calls = phones.len();
    let ep = Epoll::new(ws.iter().map(|s| s.as_raw_fd()))?;
    // Sends are paced by a timer in the same epoll set (event id `calls`),
    // so the thread sleeps between them instead of spinning.
    // SAFETY: plain syscalls with valid arguments.
    let timer = unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK) };
    if timer < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut tev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: calls as u64,
    };
    // SAFETY: valid fds and event.
    if unsafe { libc::epoll_ctl(ep.0, libc::EPOLL_CTL_ADD, timer, &mut tev) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let arm = |at_ns: u64| {
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (at_ns / 1_000_000_000) as libc::time_t,
                tv_nsec: (at_ns % 1_000_000_000) as libc::c_long,
            },
        };
        // SAFETY: valid timer fd and spec.
        unsafe {
            libc::timerfd_settime(timer, libc::TFD_TIMER_ABSTIME, &spec, std::ptr::null_mut())
        };
    };
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 512];
    let mut partial = vec![0usize; calls];
    let mut stamps = vec![[0u8; 8]; calls];
    let mut buf = vec![0u8; 64 * 1024];
    let mut pkt = [0u8; RTP_BYTES];
    pkt[0] = 0x80;
    let period_ns = FRAME_MS * 1_000_000;
    let start_ns = mono_ns();
    let end_ns = start_ns + run.as_nanos() as u64;
    let measure_ns = start_ns + warmup.as_nanos() as u64;
    let mut next_call = 0usize;
    let mut round = 0u64;
    let (mut sent, mut received) = (0u64, 0u64);
    let mut latencies = Vec::with_capacity((calls as u64 * run.as_secs() * 50) as usize);
    let mut measured: Option<(Instant, Duration)> = None;
    loop {
        let now = mono_ns();
        if now >= end_ns {
            break;
        }
        if measured.is_none() && now >= measure_ns {
            measured = Some((Instant::now(), thread_cpu()));
        }
        // Send every packet that is due.
        loop {
            let due = start_ns + round * period_ns + (next_call as u64 * period_ns) / calls as u64;
            if due > mono_ns() {
                break;
            }
            let ts = mono_ns();
            pkt[12..20].copy_from_slice(&ts.to_le_bytes());
            // SAFETY: buffer and length match.
            unsafe {
                libc::send(
                    phones[next_call].as_raw_fd(),
                    pkt.as_ptr().cast(),
                    pkt.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if ts >= measure_ns {
                sent += 1;
            }
            next_call += 1;
            if next_call == calls {
                next_call = 0;
                round += 1;
            }
        }
        let due = start_ns + round * period_ns + (next_call as u64 * period_ns) / calls as u64;
        // Wake at most every 100 us: packets due meanwhile leave together
        // (each stamped when it really leaves).
        arm(due.max(mono_ns() + 100_000));
        let n = ep.wait(&mut events, 1000);
        for ev in &events[..n] {
            let i = ev.u64 as usize;
            if i == calls {
                let mut expirations = [0u8; 8];
                // SAFETY: an 8-byte read of the timer fd.
                unsafe { libc::read(timer, expirations.as_mut_ptr().cast(), 8) };
                continue;
            }
            // SAFETY: buffer and length match.
            let got = unsafe {
                libc::recv(
                    ws[i].as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if got <= 0 {
                continue;
            }
            let now = mono_ns();
            for ts in frames_in(
                &buf[..got as usize],
                frame_bytes,
                &mut partial[i],
                &mut stamps[i],
            ) {
                if ts >= measure_ns {
                    received += 1;
                    latencies.push(now.saturating_sub(ts) / 1000);
                }
            }
        }
    }
    // Frames still in flight at the end are not counted as lost.
    let (t0, c0) = measured.unwrap_or((Instant::now(), thread_cpu()));
    let (cpu_used, wall) = (thread_cpu() - c0, t0.elapsed());
    let drain_until = Instant::now() + Duration::from_millis(200);
    while Instant::now() < drain_until {
        let n = ep.wait(&mut events, 20);
        for ev in &events[..n] {
            let i = ev.u64 as usize;
            if i == calls {
                continue;
            }
            // SAFETY: as above.
            let got = unsafe {
                libc::recv(
                    ws[i].as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if got > 0 {
                received += frames_in(
                    &buf[..got as usize],
                    frame_bytes,
                    &mut partial[i],
                    &mut stamps[i],
                )
                .len() as u64;
            }
        }
    }
    // SAFETY: we own the timer fd.
    unsafe { libc::close(timer) };
    Ok(LoadReport {
        sent,
        received: received.min(sent),
        latencies_us: latencies,
        cpu: cpu_used,
        wall,
    })
}

/// Splits a TCP read into fixed-size frames (the stream may cut a frame
/// anywhere): `partial` is how far into the current frame the stream is,
/// `stamp` its first 8 bytes. Returns the stamps of the frames completed.
fn frames_in(
    data: &[u8],
    frame_bytes: usize,
    partial: &mut usize,
    stamp: &mut [u8; 8],
) -> Vec<u64> {
    let mut done = Vec::new();
    let mut off = 0;
    while off < data.len() {
        let at = *partial;
        if at < 8 {
            let n = (8 - at).min(data.len() - off);
            stamp[at..at + n].copy_from_slice(&data[off..off + n]);
        }
        let n = (frame_bytes - at).min(data.len() - off);
        *partial += n;
        off += n;
        if *partial == frame_bytes {
            *partial = 0;
            done.push(u64::from_le_bytes(*stamp));
        }
    }
    done
}
