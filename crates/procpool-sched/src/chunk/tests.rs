//! Data-driven tests of chunk sizing: one line per case.

use std::num::{NonZeroU64, NonZeroUsize};
use std::time::Duration;

use super::{AdaptiveConfig, ChunkPolicy, CostEstimate, SizeInput};

/// `input` is `key=value` pairs: `cost` (per item, with ns/us/ms suffix; absent = unknown),
/// `left` (remaining items), `len` (job length; absent = unknown), `workers` (default 4),
/// `probes` (unknown dispatches so far, default 0).
#[track_caller]
fn check(policy: &str, input: &str, expect: u64) {
    let policy = match policy {
        "adaptive" => ChunkPolicy::Adaptive(AdaptiveConfig::default()),
        "python" => ChunkPolicy::PythonLike,
        fixed => ChunkPolicy::Fixed(NonZeroU64::new(fixed.parse().unwrap()).unwrap()),
    };
    let mut size_input = SizeInput {
        per_item: None,
        remaining: 0,
        job_len: None,
        n_workers: NonZeroUsize::new(4).unwrap(),
        unknown_dispatches: 0,
    };
    for pair in input.split_whitespace() {
        let (key, value) = pair.split_once('=').unwrap();
        match key {
            "cost" => size_input.per_item = Some(parse_duration(value)),
            "left" => size_input.remaining = value.parse().unwrap(),
            "len" => size_input.job_len = Some(value.parse().unwrap()),
            "workers" => size_input.n_workers = value.parse().unwrap(),
            "probes" => size_input.unknown_dispatches = value.parse().unwrap(),
            _ => panic!("unknown key {key}"),
        }
    }
    assert_eq!(
        policy.chunk_size(&size_input).get(),
        expect,
        "{policy:?} {input}"
    );
}

fn parse_duration(text: &str) -> Duration {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap();
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().unwrap();
    match unit {
        "ns" => Duration::from_nanos(number),
        "us" => Duration::from_micros(number),
        "ms" => Duration::from_millis(number),
        _ => panic!("unknown unit {unit}"),
    }
}

#[test]
fn fixed_ignores_everything() {
    check("1", "cost=1ms left=1000 len=1000", 1);
    check("16", "left=3 len=3", 16);
    check("16", "cost=50ns left=1000000 workers=64", 16);
}

#[test]
fn python_like_uses_length_and_workers() {
    check("python", "left=1000000 len=1000000 workers=4", 62_500);
    check("python", "left=10 len=1000000 workers=4", 62_500);
    check("python", "left=64 len=64 workers=16", 1);
    check("python", "left=64 len=64 workers=2", 8);
    check("python", "left=65 len=65 workers=2", 9);
    check("python", "left=100", 1);
}

#[test]
fn adaptive_hits_the_target_duration() {
    check(
        "adaptive",
        "cost=50ns left=1000000 len=1000000 workers=2",
        32_000,
    );
    check("adaptive", "cost=60ns left=1000000 workers=4", 26_666);
    check("adaptive", "cost=1us left=1000000", 1_600);
    check("adaptive", "cost=599us left=1000000", 2);
    check("adaptive", "cost=801us left=1000000", 1);
    check("adaptive", "cost=1601us left=1000000", 1);
    check("adaptive", "cost=40ms left=64 len=64", 1);
    check("adaptive", "cost=0ns left=100000000 workers=1", 1_600_000);
}

#[test]
fn adaptive_shrinks_toward_the_end() {
    check("adaptive", "cost=1us left=1000 len=100000 workers=4", 125);
    check("adaptive", "cost=1us left=100 len=100000 workers=4", 20);
    check("adaptive", "cost=1us left=10 len=100000 workers=4", 20);
    check("adaptive", "cost=50ns left=8000 workers=2", 2_000);
    check("adaptive", "cost=50ns left=100 workers=2", 400);
    check("adaptive", "cost=5ms left=7 workers=2", 1);
}

#[test]
fn adaptive_lengthens_chunks_when_the_parent_is_the_bottleneck() {
    // 64 workers * 2 µs per send: target at least 512 µs (the default 1,600 µs is more),
    // tail at least 128 µs; 256 workers: target at least 2,048 µs.
    check("adaptive", "cost=50ns left=100000000 workers=64", 32_000);
    check("adaptive", "cost=50ns left=100000000 workers=256", 40_960);
    check(
        "adaptive",
        "cost=50ns left=1000000 len=1000000 workers=64",
        7_813,
    );
    check("adaptive", "cost=50ns left=100000 workers=64", 2_560);
    check("adaptive", "cost=1us left=1000000 workers=16", 1_600);
    check("adaptive", "cost=1us left=1000 workers=16", 32);
}

#[test]
fn adaptive_probes_while_cost_unknown() {
    check("adaptive", "left=1000000 len=1000000", 1);
    check("adaptive", "left=1000000 probes=1", 2);
    check("adaptive", "left=1000000 probes=3", 8);
    check("adaptive", "left=1000000 probes=6", 64);
    check("adaptive", "left=1000000 probes=16", 65_536);
    check("adaptive", "left=1000000 probes=200", 65_536);
    check("adaptive", "left=1000000 probes=60 workers=64", 7_813);
    check("adaptive", "left=20 probes=5 workers=2", 5);
    check("adaptive", "left=0 workers=2", 1);
}

#[test]
fn estimate_weighs_history_and_batch_size() {
    let smoothing = std::num::NonZeroU32::new(4).unwrap();
    let mut estimate = CostEstimate::default();
    assert_eq!(estimate.per_item(), None);
    estimate.observe(0, Duration::from_millis(5), smoothing);
    assert_eq!(estimate.per_item(), None);
    estimate.observe(10, Duration::from_micros(10), smoothing);
    assert_eq!(estimate.per_item(), Some(Duration::from_nanos(1_000)));
    // History decays to 3/4: (7.5 µs + 30 µs) / (7.5 + 10 items).
    estimate.observe(10, Duration::from_micros(30), smoothing);
    assert_eq!(estimate.per_item(), Some(Duration::from_nanos(2_142)));
}
