//! Round trip of a 64-byte message between two real processes.
//!
//! Scenarios (all in one run, so the baselines share the machine's state):
//! - `ipc_spinning`: both sides spin for up to 10 ms before parking, so neither ever parks;
//! - `ipc_default_reply_after_20us`: default 50 µs spin; the peer busy-waits 20 µs before
//!   replying (compare with `baseline_reply_after_20us_spinning` to read the overhead);
//! - `ipc_parked`: spin zero on both sides, every message is a futex wake-up;
//! - `baseline_futex`: a raw futex ping-pong on a shared word (parked), `baseline_socketpair`
//!   and `baseline_pipe`: blocking 64-byte write/read.
//!
//! After the criterion groups it prints `idle_cpu`: the CPU time a default-strategy peer
//! burns in the second after its last message (`/proc/<pid>/stat`).
//!
//! The bench process pins itself to CPU 0 and its peer to CPU 1 (two cores, like the
//! issue's measurements); `PROCPOOL_IPC_BENCH_NO_PIN=1` turns that off.
//!
//! Run: `cargo bench -p procpool-ipc --bench roundtrip` (add `-- --quick` for a fast look).
//!
//! `PROCPOOL_IPC_BENCH_IDLE=N` runs only the *idle trips* instead: N round trips of each of
//! a raw process futex pair, a default-strategy channel and a channel that never spins, each
//! trip after 100 ms of sleep, nothing pinned (the kernel places both sides, as for the
//! facade's `latency_idle` row). This is the transport's floor under the facade's idle round
//! trip (docs/bench/startup-and-latency.md, "Session 6").

mod peer;

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use procpool_ipc::{ChannelConfig, Endpoint, WaitStrategy};

const MSG: [u8; 64] = [0x5a; 64];
const SPIN_FOREVER: Duration = Duration::from_millis(10);

fn peer_main(role: &str) {
    match role {
        "ipc_spinning" => peer::ipc_echo(SPIN_FOREVER, Duration::ZERO),
        "ipc_default_20us" => peer::ipc_echo(WaitStrategy::DEFAULT_SPIN, Duration::from_micros(20)),
        "ipc_spinning_20us" => peer::ipc_echo(SPIN_FOREVER, Duration::from_micros(20)),
        "ipc_parked" => peer::ipc_echo(Duration::ZERO, Duration::ZERO),
        "ipc_default" => peer::ipc_echo(WaitStrategy::DEFAULT_SPIN, Duration::ZERO),
        "futex" => peer::futex_echo(),
        "stream" => {
            let mut stream = UnixStream::from(peer::inherited(3));
            let mut buf = [0u8; 64];
            while stream.read_exact(&mut buf).is_ok() {
                if stream.write_all(&buf).is_err() {
                    return;
                }
            }
        }
        "pipe" => {
            let mut input = std::fs::File::from(peer::inherited(3));
            let mut output = std::fs::File::from(peer::inherited(4));
            let mut buf = [0u8; 64];
            while input.read_exact(&mut buf).is_ok() {
                if output.write_all(&buf).is_err() {
                    return;
                }
            }
        }
        other => panic!("unknown peer role {other}"),
    }
}

fn ipc(c: &mut Criterion, name: &str, role: &str, spin: Duration) {
    let (endpoint, handoff) = Endpoint::create(&ChannelConfig::new().spin(spin)).expect("create");
    let (region, socket) = handoff.into_fds();
    let _peer = peer::spawn(role, vec![region, socket]);
    let (mut sender, mut receiver) = endpoint.split();
    c.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                sender.send(&MSG).expect("send");
                let frame = receiver.recv().expect("recv");
                assert_eq!(frame.len(), 64);
            }
            start.elapsed()
        })
    });
    drop(sender);
}

/// One round trip of the raw futex pair: the next counter value on `ping`, woken, then
/// waiting until the peer echoes it on `pong` (the peer's side: `peer::futex_echo`).
fn futex_trip(ping: &AtomicU32, pong: &AtomicU32, counter: &mut u32) {
    *counter = counter.wrapping_add(1).max(1) % (u32::MAX - 1);
    ping.store(*counter, Ordering::Release);
    peer::futex_wake(ping);
    loop {
        let value = pong.load(Ordering::Acquire);
        if value == *counter {
            break;
        }
        peer::futex_wait(pong, value);
    }
}

fn roundtrip(c: &mut Criterion) {
    ipc(
        c,
        "roundtrip_64B/ipc_spinning",
        "ipc_spinning",
        SPIN_FOREVER,
    );
    ipc(
        c,
        "roundtrip_64B/baseline_reply_after_20us_spinning",
        "ipc_spinning_20us",
        SPIN_FOREVER,
    );
    ipc(
        c,
        "roundtrip_64B/ipc_default_reply_after_20us",
        "ipc_default_20us",
        WaitStrategy::DEFAULT_SPIN,
    );
    ipc(c, "roundtrip_64B/ipc_parked", "ipc_parked", Duration::ZERO);

    {
        let (page, fd) = peer::SharedPage::create();
        let _peer = peer::spawn("futex", vec![fd]);
        let (ping, pong) = (page.word(0), page.word(32));
        let mut counter = 0u32;
        c.bench_function("roundtrip_64B/baseline_futex", |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    futex_trip(ping, pong, &mut counter);
                }
                start.elapsed()
            })
        });
        ping.store(u32::MAX, Ordering::Release);
        peer::futex_wake(ping);
    }

    {
        let (mut mine, theirs) = UnixStream::pair().expect("pair");
        let _peer = peer::spawn("stream", vec![OwnedFd::from(theirs)]);
        let mut buf = [0u8; 64];
        c.bench_function("roundtrip_64B/baseline_socketpair", |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    mine.write_all(&MSG).expect("write");
                    mine.read_exact(&mut buf).expect("read");
                }
                start.elapsed()
            })
        });
    }

    {
        let (to_read, to_write) = peer::pipe();
        let (from_read, from_write) = peer::pipe();
        let _peer = peer::spawn("pipe", vec![to_read, from_write]);
        let (mut output, mut input) = (
            std::fs::File::from(to_write),
            std::fs::File::from(from_read),
        );
        let mut buf = [0u8; 64];
        c.bench_function("roundtrip_64B/baseline_pipe", |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    output.write_all(&MSG).expect("write");
                    input.read_exact(&mut buf).expect("read");
                }
                start.elapsed()
            })
        });
    }
}

/// CPU time (user + system, in clock ticks) the process `pid` has used so far.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the command name (which is in parentheses): utime is the 14th field
    // of the whole line, stime the 15th.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

/// Not a criterion benchmark: the CPU an idle channel burns in the second after its last
/// message (default strategy: 50 µs of spin, then parked with a liveness poll per 50 ms).
fn idle_cpu() {
    let (endpoint, handoff) = Endpoint::create(&ChannelConfig::new()).expect("create");
    let (region, socket) = handoff.into_fds();
    let peer = peer::spawn("ipc_default_20us", vec![region, socket]);
    let (mut sender, mut receiver) = endpoint.split();
    sender.send(&MSG).expect("send");
    drop(receiver.recv().expect("recv"));
    let before = cpu_ticks(peer.id());
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_ticks(peer.id()) - before;
    // SAFETY: sysconf has no preconditions.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    println!(
        "idle_cpu: the parked peer used {} ms of CPU in the 1 s after its last message ({:.1}% of a core)",
        used * 1000 / ticks_per_second,
        used as f64 * 100.0 / ticks_per_second as f64
    );
}

/// Not a criterion benchmark: `n` round trips of each kind, interleaved, each after 100 ms
/// of sleep; prints the median and the minimum of each kind.
fn idle_trips(n: usize) {
    let (page, fd) = peer::SharedPage::create();
    let _futex_peer = peer::spawn("futex", vec![fd]);
    let (ping, pong) = (page.word(0), page.word(32));
    let mut counter = 0u32;
    let channel = |role: &str, spin: Duration| {
        let (endpoint, handoff) =
            Endpoint::create(&ChannelConfig::new().spin(spin)).expect("create");
        let (region, socket) = handoff.into_fds();
        let peer = peer::spawn(role, vec![region, socket]);
        let (sender, receiver) = endpoint.split();
        (peer, sender, receiver)
    };
    let (_default_peer, mut default_tx, mut default_rx) =
        channel("ipc_default", WaitStrategy::DEFAULT_SPIN);
    let (_parked_peer, mut parked_tx, mut parked_rx) = channel("ipc_parked", Duration::ZERO);
    let echo = |tx: &mut procpool_ipc::Sender, rx: &mut procpool_ipc::Receiver| {
        tx.send(&MSG).expect("send");
        assert_eq!(rx.recv().expect("recv").len(), MSG.len());
    };
    let mut kinds: [(&str, Vec<f64>); 3] = [
        ("process futex pair", Vec::with_capacity(n)),
        ("channel, default spin", Vec::with_capacity(n)),
        ("channel, no spin", Vec::with_capacity(n)),
    ];
    for round in 0..=n {
        for (kind, (_, trips)) in kinds.iter_mut().enumerate() {
            // Round 0 warms every path up; it is not recorded.
            if round > 0 {
                std::thread::sleep(Duration::from_millis(100));
            }
            let start = Instant::now();
            match kind {
                0 => futex_trip(ping, pong, &mut counter),
                1 => echo(&mut default_tx, &mut default_rx),
                _ => echo(&mut parked_tx, &mut parked_rx),
            }
            if round > 0 {
                trips.push(start.elapsed().as_secs_f64() * 1e6);
            }
        }
    }
    for (name, mut trips) in kinds {
        trips.sort_by(f64::total_cmp);
        println!(
            "idle_trips/{name}: median {:.1} µs, min {:.1} µs ({n} trips after 100 ms)",
            trips[n / 2],
            trips[0]
        );
    }
    ping.store(u32::MAX, Ordering::Release);
    peer::futex_wake(ping);
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = roundtrip
}

fn main() {
    let idle = std::env::var("PROCPOOL_IPC_BENCH_IDLE").ok();
    if let Ok(role) = std::env::var(peer::ROLE_ENV) {
        // Peers of the idle trips inherit the variable and stay where the kernel puts them.
        if idle.is_none() {
            peer::pin_to(1);
        }
        peer_main(&role);
        return;
    }
    if let Some(n) = idle {
        let n = n
            .parse()
            .expect("PROCPOOL_IPC_BENCH_IDLE: a number of trips");
        assert!(n > 0, "PROCPOOL_IPC_BENCH_IDLE: at least one trip");
        idle_trips(n);
        return;
    }
    peer::pin_to(0);
    benches();
    idle_cpu();
    Criterion::default().configure_from_args().final_summary();
}
