//! Property tests: random pools, workloads, policies, windows and worker deaths, run through
//! the discrete-event simulation, must complete every item exactly once, in order when asked,
//! within the input window, without deadlock, and deterministically.

use std::num::{NonZeroU64, NonZeroUsize};
use std::time::Duration;

use procpool_sched::sim::{self, CostModel, Scenario, SimInput, SimJob};
use procpool_sched::{AdaptiveConfig, ChunkPolicy, Order, SchedulerConfig, TaskKey};
use proptest::prelude::*;

fn policy() -> impl Strategy<Value = ChunkPolicy> {
    prop_oneof![
        (1u64..=20).prop_map(|n| ChunkPolicy::Fixed(NonZeroU64::new(n).unwrap())),
        Just(ChunkPolicy::PythonLike),
        Just(ChunkPolicy::default()),
        // A tiny target so chunk sizes and prefetch decisions vary within small workloads.
        (1u64..=200, 1u64..=8).prop_map(|(target_us, probe_max)| {
            ChunkPolicy::Adaptive(AdaptiveConfig {
                target_chunk: Duration::from_micros(target_us),
                min_chunk: Duration::from_micros(target_us / 4),
                probe_max_items: NonZeroU64::new(probe_max).unwrap(),
                prefetch_horizon: Duration::from_micros(target_us * 2),
                ..AdaptiveConfig::default()
            })
        }),
    ]
}

fn durations() -> impl Strategy<Value = Vec<Duration>> {
    let item = prop_oneof![
        4 => 0u64..2_000,              // tiny: up to 2 µs
        3 => 2_000u64..200_000,        // medium
        1 => 1_000_000u64..5_000_000,  // heavy: 1-5 ms
    ];
    prop::collection::vec(item.prop_map(Duration::from_nanos), 0..120)
}

fn job() -> impl Strategy<Value = SimJob> {
    (
        0u64..3,
        0u64..2_000,
        durations(),
        prop_oneof![Just(Order::Input), Just(Order::Completion)],
        prop::option::of(1usize..24),
        any::<bool>(),
        prop::option::weighted(0.2, 0u64..20_000),
    )
        .prop_map(
            |(task, submit_us, durations, order, window, known_len, cancel_us)| SimJob {
                task: TaskKey(task),
                submit_at: Duration::from_micros(submit_us),
                durations,
                input: SimInput {
                    order,
                    window: window.map(|w| NonZeroUsize::new(w).unwrap()),
                    known_len,
                },
                cancel_at: cancel_us.map(Duration::from_micros),
            },
        )
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        (policy(), 1usize..=3, any::<bool>()),
        (1u64..=200, 1usize..=6),
        prop::collection::vec(job(), 1..=3),
        prop::collection::vec((0u64..20_000, 0usize..6), 0..=4),
        prop::collection::vec((0u64..20_000, 0usize..6), 0..=3),
        (0u64..2_000, any::<bool>(), any::<bool>(), any::<bool>()),
    )
        .prop_map(
            |(
                (policy, in_flight, tail_split),
                (report_us, workers),
                jobs,
                deaths,
                retirements,
                (respawn_us, retry, batched, reclaim_queued),
            )| {
                Scenario {
                    config: SchedulerConfig {
                        policy,
                        in_flight: NonZeroUsize::new(in_flight).unwrap(),
                        tail_split,
                        reclaim_queued,
                        ..SchedulerConfig::default()
                    },
                    model: CostModel {
                        report_every: Duration::from_micros(report_us),
                        ..CostModel::default()
                    },
                    workers,
                    jobs,
                    deaths: (deaths.into_iter())
                        .map(|(at_us, slot)| (Duration::from_micros(at_us), slot))
                        .collect(),
                    retirements: (retirements.into_iter())
                        .map(|(at_us, slot)| (Duration::from_micros(at_us), slot))
                        .collect(),
                    respawn_after: Duration::from_micros(respawn_us),
                    retry_started: retry,
                    batched_outcomes: batched,
                }
            },
        )
}

/// Checks everything a run must satisfy; returns a description of the first failure.
fn check_scenario(scenario: &Scenario) -> Result<(), TestCaseError> {
    let outcome = sim::run(scenario).map_err(|e| TestCaseError::fail(e.to_string()))?;
    for (job, (spec, result)) in scenario.jobs.iter().zip(&outcome.jobs).enumerate() {
        let n = spec.durations.len();
        if result.cancelled {
            // Items may be dropped, but none completes twice or runs twice without a loss.
            for index in 0..n {
                prop_assert!(result.done[index] + result.abandoned[index] <= 1);
                prop_assert!(result.runs[index] <= 1 + result.lost_started[index]);
            }
            continue;
        }
        for index in 0..n {
            let (done, abandoned) = (result.done[index], result.abandoned[index]);
            prop_assert_eq!(
                done + abandoned,
                1,
                "job {} item {}: done {} abandoned {}",
                job,
                index,
                done,
                abandoned
            );
            prop_assert!(abandoned <= result.lost_started[index]);
            // Tail splits and steals never run an item twice; only a retry after a loss may.
            prop_assert!(
                result.runs[index] <= 1 + result.lost_started[index],
                "job {} item {} ran {} times, lost while started {} times",
                job,
                index,
                result.runs[index],
                result.lost_started[index]
            );
            if !scenario.retry_started {
                prop_assert!(result.runs[index] <= 1);
            }
        }
        match spec.input.order {
            Order::Input => prop_assert!(result.output.iter().copied().eq(0..n as u64)),
            Order::Completion => {
                let mut sorted = result.output.clone();
                sorted.sort_unstable();
                prop_assert!(sorted.iter().copied().eq(0..n as u64));
            }
        }
        if let Some(window) = spec.input.window {
            prop_assert!(result.max_outstanding <= window.get() as u64);
        }
    }
    if scenario.deaths.is_empty() {
        // Without losses every item runs exactly once (at most once if cancelled).
        for job in &outcome.jobs {
            let most = if job.cancelled { 0..=1 } else { 1..=1 };
            prop_assert!(job.runs.iter().all(|runs| most.contains(runs)));
        }
    }
    let again = sim::run(scenario).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&outcome, &again, "not deterministic");
    Ok(())
}

proptest! {
    // 512 cases unless PROPTEST_CASES says otherwise (soak runs).
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512),
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_item_completes_once_in_order_within_window(scenario in scenario()) {
        check_scenario(&scenario)?;
    }
}

fn one_job(workers: usize, durations: Vec<Duration>, policy: ChunkPolicy) -> Scenario {
    Scenario {
        config: SchedulerConfig {
            policy,
            ..SchedulerConfig::default()
        },
        model: CostModel::default(),
        workers,
        jobs: vec![SimJob {
            task: TaskKey(0),
            submit_at: Duration::ZERO,
            durations,
            input: SimInput {
                order: Order::Input,
                window: None,
                known_len: true,
            },
            cancel_at: None,
        }],
        deaths: vec![],
        retirements: vec![],
        respawn_after: Duration::from_micros(100),
        retry_started: true,
        batched_outcomes: false,
    }
}

#[test]
fn tail_split_frees_items_stuck_behind_a_long_one() {
    // One chunk of 8 items; the first takes 10 ms, the rest 1 ms. Without splitting, worker 1
    // would idle while worker 0 runs all of it: 17 ms. With splits at the middle of the
    // unstarted items, worker 1 takes 4..8 at once and 2..4 when idle again: about 12 ms.
    // (10 ms would need to know that item 0 is the long one.)
    let mut durations = vec![Duration::from_millis(1); 8];
    durations[0] = Duration::from_millis(10);
    let scenario = one_job(
        2,
        durations,
        ChunkPolicy::Fixed(NonZeroU64::new(8).unwrap()),
    );
    let outcome = sim::run(&scenario).unwrap();
    assert!(outcome.yields >= 2);
    assert!(
        outcome.makespan < Duration::from_micros(12_200),
        "{:?}",
        outcome.makespan
    );
    check_scenario(&scenario).unwrap();

    let mut no_split = scenario.clone();
    no_split.config.tail_split = false;
    let outcome = sim::run(&no_split).unwrap();
    assert_eq!(outcome.yields, 0);
    assert!(
        outcome.makespan > Duration::from_millis(17),
        "{:?}",
        outcome.makespan
    );
}

#[test]
fn worker_death_reports_running_item_and_requeues_the_rest() {
    let mut scenario = one_job(
        2,
        vec![Duration::from_millis(1); 20],
        ChunkPolicy::Fixed(NonZeroU64::new(5).unwrap()),
    );
    scenario.deaths = vec![(Duration::from_micros(2_500), 0)];
    let outcome = sim::run(&scenario).unwrap();
    let job = &outcome.jobs[0];
    assert_eq!(job.lost_started.iter().sum::<u32>(), 1);
    let lost = job.lost_started.iter().position(|n| *n == 1).unwrap();
    assert_eq!(job.runs[lost], 2, "the started item is retried");
    check_scenario(&scenario).unwrap();
    scenario.retry_started = false;
    let outcome = sim::run(&scenario).unwrap();
    assert_eq!(outcome.jobs[0].abandoned.iter().sum::<u32>(), 1);
    check_scenario(&scenario).unwrap();

    // Outcomes batched for the whole chunk: items 0 and 1 ran unreported, 2 was running.
    scenario.model.report_every = Duration::from_millis(10);
    scenario.batched_outcomes = true;
    let outcome = sim::run(&scenario).unwrap();
    let job = &outcome.jobs[0];
    assert_eq!(job.lost_started[..4], [1, 1, 1, 0]);
    assert_eq!(job.abandoned[..4], [1, 1, 1, 0]);
    assert_eq!(job.runs[..4], [1, 1, 1, 1]);
    check_scenario(&scenario).unwrap();
}

#[test]
fn streaming_input_with_window_one_runs_everything() {
    let mut scenario = one_job(
        3,
        vec![Duration::from_micros(50); 40],
        ChunkPolicy::default(),
    );
    scenario.jobs[0].input = SimInput {
        order: Order::Input,
        window: Some(NonZeroUsize::new(1).unwrap()),
        known_len: false,
    };
    let outcome = sim::run(&scenario).unwrap();
    assert_eq!(outcome.jobs[0].max_outstanding, 1);
    assert_eq!(outcome.chunks, 40);
    check_scenario(&scenario).unwrap();
}

/// `cpu_scaling` and `skewed` of the benchmark, on 2 workers, with a parent that needs
/// `parent_us` to react to a report and send a chunk (the reader thread's wake-up on a busy
/// machine), with and without reclaimable prefetch.
fn busy_scenario(durations: Vec<Duration>, parent_us: u64, reclaim: bool) -> Scenario {
    let mut scenario = one_job(2, durations, ChunkPolicy::default());
    scenario.model.parent_per_chunk = Duration::from_micros(parent_us);
    scenario.config.reclaim_queued = reclaim;
    scenario
}

#[test]
fn reclaimable_prefetch_hides_the_parents_reaction_on_long_items() {
    let equal = vec![Duration::from_millis(40); 32];
    let ideal = Duration::from_millis(640);
    // Without prefetch (40 ms is far over the 1 ms horizon) every item waits for the
    // parent's reaction to the previous report: 16 waits per worker.
    let plain = sim::run(&busy_scenario(equal.clone(), 200, false)).unwrap();
    assert!(
        plain.makespan >= ideal + Duration::from_micros(15 * 200),
        "{:?}",
        plain.makespan
    );
    assert_eq!(plain.reclaims, 0);
    // With it, the next item is already in the worker's ring: only the start is paid.
    let reclaim = busy_scenario(equal, 200, true);
    let outcome = sim::run(&reclaim).unwrap();
    assert!(
        outcome.makespan <= ideal + Duration::from_micros(3 * 200),
        "{:?}",
        outcome.makespan
    );
    check_scenario(&reclaim).unwrap();
}

#[test]
fn a_queued_item_is_reclaimed_for_the_idle_worker() {
    // Worker 0 runs item 0 (10 ms) with item 2 (10 ms) prefetched behind it (among busy
    // workers, ties go to the one served first); worker 1 is done with item 1 (5 ms) at 5 ms.
    // Reclaimed at once, item 2 ends at 15 ms; asked back from worker 0 instead, it comes
    // back only when item 0 ends: 20 ms.
    let durations = [10, 5, 10].map(Duration::from_millis).to_vec();
    let mut scenario = busy_scenario(durations, 0, true);
    scenario.config.policy = ChunkPolicy::Fixed(NonZeroU64::new(1).unwrap());
    let outcome = sim::run(&scenario).unwrap();
    assert_eq!(outcome.reclaims, 1, "{outcome:?}");
    assert!(
        outcome.makespan <= Duration::from_micros(15_100),
        "{:?}",
        outcome.makespan
    );
    check_scenario(&scenario).unwrap();
    scenario.config.reclaim_queued = false;
    let outcome = sim::run(&scenario).unwrap();
    assert_eq!(outcome.reclaims, 0);
    assert!(
        outcome.makespan >= Duration::from_millis(20),
        "{:?}",
        outcome.makespan
    );
}

#[test]
fn skewed_stays_at_its_ideal_with_reclaimable_prefetch() {
    // 60 × 5 ms then 4 × 100 ms, the ideal is 350 ms. Without prefetch each item waits for
    // the parent's reaction to the previous report; with it only the first items do.
    let mut skewed = vec![Duration::from_millis(5); 60];
    skewed.extend([Duration::from_millis(100); 4]);
    let plain = busy_scenario(skewed.clone(), 200, false);
    let plain = sim::run(&plain).unwrap().makespan;
    assert!(
        plain >= Duration::from_micros(350_000 + 20 * 200),
        "{plain:?}"
    );
    let scenario = busy_scenario(skewed, 200, true);
    let outcome = sim::run(&scenario).unwrap();
    assert!(
        outcome.makespan <= Duration::from_micros(350_000 + 5 * 200),
        "{:?}",
        outcome.makespan
    );
    check_scenario(&scenario).unwrap();
}
