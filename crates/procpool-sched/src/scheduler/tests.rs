//! Unit tests of the scheduler's bookkeeping, driven call by call.

use std::num::{NonZeroU64, NonZeroUsize};
use std::time::Duration;

use super::*;

fn fixed(n: u64, in_flight: usize) -> Scheduler {
    Scheduler::new(SchedulerConfig {
        policy: ChunkPolicy::Fixed(NonZeroU64::new(n).unwrap()),
        in_flight: NonZeroUsize::new(in_flight).unwrap(),
        ..SchedulerConfig::default()
    })
}

fn items(assignment: &Assignment) -> Range<u64> {
    assignment.span.items.clone()
}

const US: Duration = Duration::from_micros(1);

#[test]
fn window_limits_chunks_per_worker() {
    let mut sched = fixed(10, 2);
    let w0 = sched.add_worker();
    let job = sched.submit(TaskKey(0), InputLen::Known(100));
    sched.add_items(job, 100).unwrap();
    let first = sched.next_chunk(w0).unwrap().unwrap();
    let second = sched.next_chunk(w0).unwrap().unwrap();
    assert_eq!((items(&first), items(&second)), (0..10, 10..20));
    assert_eq!(sched.next_chunk(w0).unwrap(), None);
    assert_eq!(sched.in_flight(w0).unwrap(), [first.chunk, second.chunk]);
    assert_eq!(
        sched.on_items_done(w0, first.chunk, 4, US),
        Ok(ChunkStatus::Running)
    );
    assert_eq!(sched.next_chunk(w0).unwrap(), None);
    assert_eq!(
        sched.on_items_done(w0, first.chunk, 6, US),
        Ok(ChunkStatus::Finished)
    );
    assert_eq!(items(&sched.next_chunk(w0).unwrap().unwrap()), 20..30);
}

#[test]
fn idle_worker_steals_the_front_of_a_peers_piece() {
    let mut sched = fixed(10, 1);
    let w0 = sched.add_worker();
    let job = sched.submit(TaskKey(0), InputLen::Known(35));
    sched.add_items(job, 35).unwrap();
    assert_eq!(items(&sched.next_chunk(w0).unwrap().unwrap()), 0..10);
    // The rest, 10..35, is reserved in w0's deque; a new worker steals from its front.
    let w1 = sched.add_worker();
    assert_eq!(items(&sched.next_chunk(w1).unwrap().unwrap()), 10..20);
    let w2 = sched.add_worker();
    assert_eq!(items(&sched.next_chunk(w2).unwrap().unwrap()), 20..30);
    let w3 = sched.add_worker();
    assert_eq!(items(&sched.next_chunk(w3).unwrap().unwrap()), 30..35);
    let w4 = sched.add_worker();
    assert_eq!(sched.next_chunk(w4).unwrap(), None);
}

#[test]
fn streaming_input_coalesces_adds_and_closes() {
    let mut sched = fixed(100, 1);
    let w0 = sched.add_worker();
    let job = sched.submit(TaskKey(0), InputLen::Unknown);
    assert_eq!(sched.add_items(job, 3), Ok(0..3));
    assert_eq!(sched.add_items(job, 2), Ok(3..5));
    let chunk = sched.next_chunk(w0).unwrap().unwrap();
    assert_eq!(items(&chunk), 0..5);
    sched.close_input(job).unwrap();
    assert_eq!(sched.add_items(job, 1), Err(JobError::InputClosed(job)));
    sched.on_items_done(w0, chunk.chunk, 5, US).unwrap();
    assert!(sched.job_progress(job).unwrap().is_complete());
}

#[test]
fn declared_length_is_enforced() {
    let mut sched = fixed(1, 1);
    let job = sched.submit(TaskKey(0), InputLen::Known(3));
    assert_eq!(sched.add_items(job, 2), Ok(0..2));
    let err = sched.add_items(job, 2);
    assert_eq!(
        err,
        Err(JobError::TooLong {
            job,
            added: 4,
            len: 3
        })
    );
    assert_eq!(sched.add_items(job, 1), Ok(2..3));
    assert_eq!(sched.add_items(job, 1), Err(JobError::InputClosed(job)));
}

#[test]
fn feedback_is_checked() {
    let mut sched = fixed(4, 2);
    let w0 = sched.add_worker();
    let w1 = sched.add_worker();
    let job = sched.submit(TaskKey(0), InputLen::Known(8));
    sched.add_items(job, 8).unwrap();
    let a = sched.next_chunk(w0).unwrap().unwrap();
    let wrong = sched.on_items_done(w1, a.chunk, 1, US);
    let expected = FeedbackError::WrongWorker {
        chunk: a.chunk,
        owner: w0,
        reported_by: w1,
    };
    assert_eq!(wrong, Err(expected));
    let too_many = sched.on_items_done(w0, a.chunk, 5, US);
    let expected = FeedbackError::TooManyItems {
        chunk: a.chunk,
        left: 4,
        reported: 5,
    };
    assert_eq!(too_many, Err(expected));
    sched.on_items_done(w0, a.chunk, 2, US).unwrap();
    let before_done = sched.on_yielded(w0, a.chunk, 1);
    let expected = FeedbackError::YieldOutOfRange {
        chunk: a.chunk,
        first_unstarted: 1,
        lowest: 2,
        end: 4,
    };
    assert_eq!(before_done, Err(expected));
    assert_eq!(
        sched.on_items_done(w0, ChunkId(99), 1, US),
        Err(FeedbackError::UnknownChunk(ChunkId(99)))
    );
    let progress = sched.job_progress(job).unwrap();
    assert_eq!(
        (progress.done, progress.in_flight, progress.queued),
        (2, 2, 4)
    );
}

#[test]
fn replaced_worker_gets_a_new_generation() {
    let mut sched = fixed(1, 1);
    let w0 = sched.add_worker();
    let w1 = sched.add_worker();
    sched.remove_worker(w0).unwrap();
    assert_eq!(sched.next_chunk(w0), Err(StaleWorker(w0)));
    let w0_again = sched.add_worker();
    assert_eq!((w0_again.slot(), w0_again.generation()), (0, 1));
    assert_ne!(w0_again, w0);
    assert_eq!(sched.remove_worker(w0), Err(StaleWorker(w0)));
    assert_eq!(sched.workers().collect::<Vec<_>>(), [w0_again, w1]);
}

#[test]
fn lost_worker_reports_running_item_and_requeues_the_rest() {
    let mut sched = fixed(5, 2);
    let w0 = sched.add_worker();
    let job = sched.submit(TaskKey(0), InputLen::Known(20));
    sched.add_items(job, 20).unwrap();
    let running = sched.next_chunk(w0).unwrap().unwrap();
    let queued = sched.next_chunk(w0).unwrap().unwrap();
    sched.on_items_done(w0, running.chunk, 2, US).unwrap();
    let lost = sched.remove_worker(w0).unwrap();
    assert_eq!(lost.started, Some(ItemRef { job, index: 2 }));
    let requeued: Vec<_> = lost
        .requeued
        .iter()
        .map(|span| span.items.clone())
        .collect();
    assert_eq!(requeued, [3..5, items(&queued)]);
    let progress = sched.job_progress(job).unwrap();
    assert_eq!(
        (
            progress.done,
            progress.awaiting_decision,
            progress.queued,
            progress.in_flight
        ),
        (2, 1, 17, 0)
    );

    // Given-back items are merged and served first, lowest index first.
    let w1 = sched.add_worker();
    assert_eq!(items(&sched.next_chunk(w1).unwrap().unwrap()), 3..8);
    let item = lost.started.unwrap();
    sched.requeue(item).unwrap();
    let not_awaiting = Err(JobError::NotAwaitingDecision { job, index: 2 });
    assert_eq!(sched.requeue(item), not_awaiting);
    assert_eq!(sched.abandon(item), not_awaiting);
    // w1 carves on from the rest it reserved; a peer takes the retried item first.
    assert_eq!(items(&sched.next_chunk(w1).unwrap().unwrap()), 8..13);
    let w2 = sched.add_worker();
    assert_eq!(items(&sched.next_chunk(w2).unwrap().unwrap()), 2..3);
    assert_eq!(items(&sched.next_chunk(w2).unwrap().unwrap()), 13..18);
}

#[test]
fn tail_split_asks_the_busiest_chunk_for_half() {
    let start = |busy: Duration| {
        let mut sched = fixed(8, 1);
        let w0 = sched.add_worker();
        let w1 = sched.add_worker();
        let job = sched.submit(TaskKey(0), InputLen::Known(11));
        sched.add_items(job, 11).unwrap();
        let big = sched.next_chunk(w0).unwrap().unwrap();
        let small = sched.next_chunk(w1).unwrap().unwrap();
        assert_eq!((items(&big), items(&small)), (0..8, 8..11));
        assert_eq!(sched.yield_candidate(), None, "nobody idle");
        sched.on_items_done(w1, small.chunk, 3, busy).unwrap();
        (sched, w0, w1, big)
    };
    // Seven unstarted items of 5 µs: below `min_yield_work`, not worth a split.
    let (mut sched, ..) = start(15 * US);
    assert_eq!(sched.yield_candidate(), None);

    let (mut sched, w0, w1, big) = start(3_000 * US);
    let request = sched.yield_candidate().unwrap();
    let expected = YieldRequest {
        worker: w0,
        chunk: big.chunk,
        split: Split::Half,
    };
    assert_eq!(request, expected);
    assert_eq!(
        sched.yield_candidate(),
        None,
        "one idle worker, one request"
    );
    // The worker finished item 0 and was running item 1 when it saw the flag: it keeps
    // 2..5 (half of the six unstarted, rounded up) and gives back 5..8.
    sched.on_items_done(w0, big.chunk, 1, US).unwrap();
    assert_eq!(Split::Half.first_returned(2, 8), 5);
    assert_eq!(sched.on_yielded(w0, big.chunk, 5), Ok(ChunkStatus::Running));
    assert_eq!(items(&sched.next_chunk(w1).unwrap().unwrap()), 5..8);
    assert_eq!(
        sched.on_items_done(w0, big.chunk, 4, US),
        Ok(ChunkStatus::Finished)
    );
}

#[test]
fn removed_job_drops_its_queue_but_accepts_late_feedback() {
    let mut sched = fixed(4, 1);
    let w0 = sched.add_worker();
    let w1 = sched.add_worker();
    let job = sched.submit(TaskKey(0), InputLen::Known(12));
    sched.add_items(job, 12).unwrap();
    let other = sched.submit(TaskKey(1), InputLen::Known(2));
    sched.add_items(other, 2).unwrap();
    let a = sched.next_chunk(w0).unwrap().unwrap();
    let progress = sched.remove_job(job).unwrap();
    assert_eq!((progress.queued, progress.in_flight), (8, 4));
    let b = sched.next_chunk(w1).unwrap().unwrap();
    assert_eq!(
        b.span,
        Span {
            job: other,
            items: 0..2
        }
    );
    assert_eq!(
        sched.on_items_done(w0, a.chunk, 4, US),
        Ok(ChunkStatus::Finished)
    );
    assert_eq!(sched.next_chunk(w0).unwrap(), None);
    assert_eq!(sched.add_items(job, 1), Err(JobError::UnknownJob(job)));
}

#[test]
fn retiring_worker_gets_nothing_and_hands_back_its_reserve() {
    let mut sched = fixed(2, 1);
    let w0 = sched.add_worker();
    let job = sched.submit(TaskKey(0), InputLen::Known(6));
    sched.add_items(job, 6).unwrap();
    let a = sched.next_chunk(w0).unwrap().unwrap();
    sched.retire_worker(w0).unwrap();
    assert_eq!(sched.next_chunk(w0).unwrap(), None);
    assert_eq!(sched.workers().count(), 0);
    sched.on_items_done(w0, a.chunk, 2, US).unwrap();
    let lost = sched.remove_worker(w0).unwrap();
    assert_eq!(lost, Lost::default());
    let w1 = sched.add_worker();
    assert_eq!(items(&sched.next_chunk(w1).unwrap().unwrap()), 2..4);
}

#[test]
fn a_reinstated_worker_gets_chunks_again() {
    let mut sched = fixed(2, 1);
    let w0 = sched.add_worker();
    let job = sched.submit(TaskKey(0), InputLen::Known(4));
    sched.add_items(job, 4).unwrap();
    let a = sched.next_chunk(w0).unwrap().unwrap();
    sched.retire_worker(w0).unwrap();
    sched.on_items_done(w0, a.chunk, 2, US).unwrap();
    assert_eq!(sched.next_assignment(), None);
    sched.reinstate_worker(w0).unwrap();
    sched.reinstate_worker(w0).unwrap();
    assert_eq!(sched.workers().collect::<Vec<_>>(), [w0]);
    assert_eq!(items(&sched.next_assignment().unwrap()), 2..4);
}

#[test]
fn adaptive_learns_the_cost_and_stops_prefetching_long_items() {
    let mut sched = Scheduler::new(SchedulerConfig::default());
    let w0 = sched.add_worker();
    let job = sched.submit(TaskKey(3), InputLen::Known(1000));
    sched.add_items(job, 1000).unwrap();
    let probe = sched.next_chunk(w0).unwrap().unwrap();
    assert_eq!(items(&probe), 0..1);
    assert_eq!(
        sched.next_chunk(w0).unwrap(),
        None,
        "no prefetch while the cost is unknown"
    );
    sched
        .on_items_done(w0, probe.chunk, 1, Duration::from_millis(5))
        .unwrap();
    assert_eq!(
        sched.cost_estimate(TaskKey(3)),
        Some(Duration::from_millis(5))
    );
    let next = sched.next_chunk(w0).unwrap().unwrap();
    assert_eq!(items(&next), 1..2);
    assert_eq!(
        sched.next_chunk(w0).unwrap(),
        None,
        "5 ms in flight: no prefetch"
    );

    // Cheap items: 1,600 µs chunks, double buffered once less than the 1 ms prefetch
    // horizon is left of the first.
    let job = sched.submit(TaskKey(4), InputLen::Known(1_000_000));
    sched.add_items(job, 1_000_000).unwrap();
    let w1 = sched.add_worker();
    let probe = sched.next_chunk(w1).unwrap().unwrap();
    sched
        .on_items_done(w1, probe.chunk, 1, Duration::from_nanos(100))
        .unwrap();
    let first = sched.next_chunk(w1).unwrap().unwrap();
    assert_eq!((first.span.items.end - first.span.items.start), 16_000);
    assert_eq!(sched.next_chunk(w1).unwrap(), None, "1.6 ms in flight");
    sched
        .on_items_done(w1, first.chunk, 8_000, Duration::from_micros(800))
        .unwrap();
    let second = sched.next_chunk(w1).unwrap().unwrap();
    assert_eq!((second.span.items.end - second.span.items.start), 16_000);
}

#[test]
fn reclaimable_prefetch_queues_long_items_and_takes_them_back_unstarted() {
    let mut sched = Scheduler::new(SchedulerConfig {
        reclaim_queued: true,
        ..SchedulerConfig::default()
    });
    let (w0, w1) = (sched.add_worker(), sched.add_worker());
    let job = sched.submit(TaskKey(3), InputLen::Known(5));
    sched.add_items(job, 5).unwrap();
    let probe = sched.next_chunk(w0).unwrap().unwrap();
    assert_eq!(
        sched.next_chunk(w0).unwrap(),
        None,
        "no prefetch while the cost is unknown, even when reclaimable"
    );
    sched
        .on_items_done(w0, probe.chunk, 1, Duration::from_millis(40))
        .unwrap();
    let running = sched.next_chunk(w0).unwrap().unwrap();
    let queued = sched.next_chunk(w0).unwrap().unwrap();
    assert_eq!((items(&running), items(&queued)), (1..2, 2..3));
    assert_eq!(sched.next_chunk(w0).unwrap(), None, "the window is full");
    // w1 takes the rest and runs dry: the chunk queued at w0 is proposed whole ...
    let rest: Vec<_> = std::iter::from_fn(|| sched.next_chunk(w1).unwrap()).collect();
    for chunk in &rest {
        let n = chunk.span.items.end - chunk.span.items.start;
        sched
            .on_items_done(w1, chunk.chunk, n, Duration::from_millis(40 * n))
            .unwrap();
    }
    let request = sched.yield_candidate().unwrap();
    assert_eq!(
        (request.worker, request.chunk, request.split),
        (w0, queued.chunk, Split::All)
    );
    // ... taken back by the driver, and handed to w1.
    assert_eq!(sched.on_reclaimed(w0, queued.chunk), Ok(()));
    assert_eq!(sched.in_flight(w0).unwrap(), [running.chunk]);
    let moved = sched.next_assignment().unwrap();
    assert_eq!((moved.worker, items(&moved)), (w1, 2..3));
    // A chunk with a reported item had started: it cannot be reclaimed.
    sched
        .on_items_done(w1, moved.chunk, 1, Duration::from_millis(40))
        .unwrap();
    let progress = sched.job_progress(job).unwrap();
    assert_eq!(
        (progress.done, progress.in_flight, progress.queued),
        (4, 1, 0)
    );
    assert_eq!(
        sched.on_reclaimed(w1, moved.chunk),
        Err(FeedbackError::UnknownChunk(moved.chunk))
    );
    let fixed_two = JobOptions::new().policy(ChunkPolicy::Fixed(NonZeroU64::new(2).unwrap()));
    let job = sched.submit_with(TaskKey(3), InputLen::Known(4), fixed_two);
    sched.add_items(job, 4).unwrap();
    let two = sched.next_chunk(w1).unwrap().unwrap();
    assert_eq!(items(&two), 0..2);
    sched
        .on_items_done(w1, two.chunk, 1, Duration::from_millis(40))
        .unwrap();
    let before = sched.job_progress(job).unwrap();
    assert_eq!(
        sched.on_reclaimed(w1, two.chunk),
        Err(FeedbackError::ReclaimStarted {
            chunk: two.chunk,
            done: 1
        })
    );
    assert_eq!(sched.job_progress(job).unwrap(), before, "nothing recorded");
}

/// The scheduler as the facade drives it for process workers: two workers, a long call
/// held at each (a cost learnt from short runs of the same task), and one cheap call
/// queued behind each.
fn two_held_workers_with_cheap_calls_queued() -> (Scheduler, [WorkerId; 2], [Assignment; 4]) {
    let mut sched = Scheduler::new(SchedulerConfig {
        reclaim_queued: true,
        ..SchedulerConfig::default()
    });
    let (w0, w1) = (sched.add_worker(), sched.add_worker());
    let (held, cheap) = (TaskKey(1), TaskKey(2));
    // Learn both costs: the held task looked short (it was not held then), the cheap one
    // costs 100 ns an item.
    for (task, busy) in [(held, 200 * US), (cheap, Duration::from_nanos(100))] {
        let job = sched.submit(task, InputLen::Known(1));
        sched.add_items(job, 1).unwrap();
        let probe = sched.next_assignment().unwrap();
        sched
            .on_items_done(probe.worker, probe.chunk, 1, busy)
            .unwrap();
    }
    let mut call = |task| {
        let job = sched.submit(task, InputLen::Known(1));
        sched.add_items(job, 1).unwrap();
        sched.next_assignment().unwrap()
    };
    let (held0, held1) = (call(held), call(held));
    let (cheap0, cheap1) = (call(cheap), call(cheap));
    assert_ne!(held0.worker, held1.worker);
    assert_ne!(cheap0.worker, cheap1.worker);
    let mut assignments = [held0, held1, cheap0, cheap1];
    // Order: worker 0's held call and queued call, then worker 1's.
    assignments.sort_by_key(|a| (a.worker != w0, a.chunk.get()));
    (sched, [w0, w1], assignments)
}

#[test]
fn a_cheap_call_queued_behind_a_held_one_is_taken_back_for_an_idle_worker() {
    let (mut sched, [w0, w1], [held0, queued0, held1, queued1]) =
        two_held_workers_with_cheap_calls_queued();
    assert_eq!((held0.worker, queued0.worker), (w0, w0));
    assert_eq!((held1.worker, queued1.worker), (w1, w1));
    assert_eq!(sched.yield_candidate(), None, "nobody idle");
    // Worker 0's call is let go; it runs its queued call and runs dry. Worker 1 is still
    // held: its queued call (100 ns of work, below `min_yield_work`) must not wait for it.
    sched.on_items_done(w0, held0.chunk, 1, 300 * US).unwrap();
    sched
        .on_items_done(w0, queued0.chunk, 1, Duration::from_nanos(100))
        .unwrap();
    let request = sched
        .yield_candidate()
        .expect("the queued call is proposed");
    assert_eq!(
        (request.worker, request.chunk, request.split),
        (w1, queued1.chunk, Split::All)
    );
    assert_eq!(sched.on_reclaimed(w1, queued1.chunk), Ok(()));
    let moved = sched.next_assignment().unwrap();
    assert_eq!((moved.worker, moved.span.job), (w0, queued1.span.job));
}

#[test]
fn without_reclaiming_a_cheap_queued_call_is_not_worth_a_yield() {
    // A driver that cannot take chunks back asks the worker, which sees the request only
    // when it reaches the chunk: the old threshold stays.
    let mut sched = Scheduler::new(SchedulerConfig::default());
    let (w0, w1) = (sched.add_worker(), sched.add_worker());
    let one = JobOptions::new().policy(ChunkPolicy::Fixed(NonZeroU64::new(1).unwrap()));
    let job = sched.submit_with(TaskKey(2), InputLen::Known(3), one);
    sched.add_items(job, 3).unwrap();
    let probe = sched.next_chunk(w0).unwrap().unwrap();
    sched
        .on_items_done(w0, probe.chunk, 1, Duration::from_nanos(100))
        .unwrap();
    let running = sched.next_chunk(w0).unwrap().unwrap();
    let queued = sched.next_chunk(w0).unwrap().unwrap();
    assert_eq!((items(&running), items(&queued)), (1..2, 2..3));
    let _ = w1;
    assert_eq!(sched.yield_candidate(), None);
}

#[test]
fn a_reclaimable_queued_chunk_is_proposed_before_splitting_a_running_one() {
    // Worker 1 runs a long multi-item chunk with a cheap chunk queued behind it; worker 0 is
    // idle. Splitting the running chunk waits for worker 1's next item boundary (and, while
    // outstanding, blocks further proposals); the queued chunk is taken back at once.
    let mut sched = Scheduler::new(SchedulerConfig {
        reclaim_queued: true,
        ..SchedulerConfig::default()
    });
    let (w0, w1) = (sched.add_worker(), sched.add_worker());
    let (long, cheap) = (TaskKey(1), TaskKey(2));
    for (task, busy) in [(long, 10_000 * US), (cheap, Duration::from_nanos(100))] {
        let job = sched.submit(task, InputLen::Known(1));
        sched.add_items(job, 1).unwrap();
        let probe = sched.next_chunk(w1).unwrap().unwrap();
        sched.on_items_done(w1, probe.chunk, 1, busy).unwrap();
    }
    let fixed_four = JobOptions::new().policy(ChunkPolicy::Fixed(NonZeroU64::new(4).unwrap()));
    let job = sched.submit_with(long, InputLen::Known(4), fixed_four);
    sched.add_items(job, 4).unwrap();
    let running = sched.next_chunk(w1).unwrap().unwrap();
    let job = sched.submit(cheap, InputLen::Known(1));
    sched.add_items(job, 1).unwrap();
    let queued = sched.next_chunk(w1).unwrap().unwrap();
    assert_eq!(items(&running), 0..4);
    let request = sched.yield_candidate().expect("worker 0 is idle");
    assert_eq!(
        (request.worker, request.chunk, request.split),
        (w1, queued.chunk, Split::All)
    );
    assert_eq!(sched.on_reclaimed(w1, queued.chunk), Ok(()));
    assert_eq!(sched.next_assignment().unwrap().worker, w0);
    let _ = w0;
}

#[test]
fn a_worker_without_prefetch_gets_a_chunk_only_when_it_holds_none() {
    let (mut sched, [w0, w1], [held0, queued0, held1, queued1]) =
        two_held_workers_with_cheap_calls_queued();
    // Worker 1's queued call was taken back, and until worker 1 passes it no further chunk
    // may queue behind its held call.
    sched.on_items_done(w0, held0.chunk, 1, 300 * US).unwrap();
    sched.on_items_done(w0, queued0.chunk, 1, US).unwrap();
    assert!(sched.yield_candidate().is_some());
    sched.on_reclaimed(w1, queued1.chunk).unwrap();
    sched.set_prefetch(w1, false).unwrap();
    let moved = sched.next_assignment().unwrap();
    assert_eq!(moved.worker, w0);
    let one = JobOptions::new().policy(ChunkPolicy::Fixed(NonZeroU64::new(1).unwrap()));
    let job = sched.submit_with(TaskKey(2), InputLen::Known(4), one);
    sched.add_items(job, 4).unwrap();
    let mut next = || sched.next_assignment().map(|a| a.worker);
    assert_eq!(next(), Some(w0), "worker 0's window has room");
    assert_eq!(next(), None, "worker 1 holds a chunk: no prefetch");
    assert_eq!(sched.in_flight(w1).unwrap(), [held1.chunk]);
    // Worker 1 ends its held call: with nothing in flight it gets a chunk again; only with
    // prefetch allowed again a second one.
    sched.on_items_done(w1, held1.chunk, 1, 300 * US).unwrap();
    assert_eq!(sched.next_assignment().map(|a| a.worker), Some(w1));
    assert_eq!(sched.next_assignment(), None);
    sched.set_prefetch(w1, true).unwrap();
    assert_eq!(sched.next_assignment().map(|a| a.worker), Some(w1));
    assert_eq!(sched.next_assignment(), None, "both windows are full");
    assert_eq!(sched.job_progress(job).unwrap().queued, 1);
    let _ = moved;
}

#[test]
fn scheduler_and_reorder_can_move_between_threads() {
    // The facade keeps them behind a mutex shared by its threads.
    fn assert_send<T: Send>() {}
    assert_send::<Scheduler>();
    assert_send::<crate::Reorder<String>>();
}

#[test]
fn per_job_policy_overrides_the_scheduler_policy() {
    let mut sched = fixed(10, 4);
    let w0 = sched.add_worker();
    let own = JobOptions::new().policy(ChunkPolicy::Fixed(NonZeroU64::new(3).unwrap()));
    let small = sched.submit_with(TaskKey(0), InputLen::Known(6), own);
    sched.add_items(small, 6).unwrap();
    let default = sched.submit(TaskKey(1), InputLen::Known(20));
    sched.add_items(default, 20).unwrap();
    let sizes: Vec<(JobId, u64)> = (0..4)
        .map(|_| {
            let got = sched.next_chunk(w0).unwrap().unwrap();
            (got.span.job, got.span.items.end - got.span.items.start)
        })
        .collect();
    assert_eq!(
        sizes,
        [(small, 3), (small, 3), (default, 10), (default, 10)]
    );
}

/// Who `next_assignment` picks, in order, until it picks nobody.
fn assignees(sched: &mut Scheduler) -> Vec<WorkerId> {
    std::iter::from_fn(|| sched.next_assignment())
        .map(|a| a.worker)
        .collect()
}

#[test]
fn an_idle_worker_served_last_gets_the_next_call() {
    // A lone call goes to the worker that ran the last one: it is likely still spinning for
    // work, where the other may have parked.
    let mut sched = fixed(1, 2);
    let (w0, w1) = (sched.add_worker(), sched.add_worker());
    let job = sched.submit(TaskKey(0), InputLen::Unknown);
    for (round, expect) in [(0, w0), (1, w0), (2, w0)] {
        sched.add_items(job, 1).unwrap();
        let a = sched.next_assignment().unwrap();
        assert_eq!(a.worker, expect, "round {round}");
        assert_eq!(
            sched.on_items_done(a.worker, a.chunk, 1, US),
            Ok(ChunkStatus::Finished)
        );
    }
    // Two calls at once: one each (fewest in flight first). Then w1 was served last, so the
    // next lone call goes to it.
    sched.add_items(job, 2).unwrap();
    let (a, b) = (
        sched.next_assignment().unwrap(),
        sched.next_assignment().unwrap(),
    );
    assert_eq!((a.worker, b.worker), (w0, w1));
    for done in [a, b] {
        let status = sched.on_items_done(done.worker, done.chunk, 1, US);
        assert_eq!(status, Ok(ChunkStatus::Finished));
    }
    sched.add_items(job, 1).unwrap();
    assert_eq!(assignees(&mut sched), [w1]);
}

#[test]
fn among_busy_workers_the_one_served_first_gets_the_next_chunk() {
    // Every worker holds one chunk; the second chunks go in the order the first ones went,
    // so the worker that started first (and will finish first) has its next chunk queued
    // first. Most-recently-served order here left the first worker waiting for the last
    // one's prefetch (the simulation's 64-worker tiny-item row, 1.184 -> 1.237 x ideal).
    let mut sched = fixed(1, 2);
    let workers: Vec<WorkerId> = (0..4).map(|_| sched.add_worker()).collect();
    let job = sched.submit(TaskKey(0), InputLen::Known(100));
    sched.add_items(job, 100).unwrap();
    let got = assignees(&mut sched);
    assert_eq!(got.len(), 8, "two chunks each");
    assert_eq!(
        got[..4],
        workers[..],
        "first chunks: every idle worker, in slot order"
    );
    assert_eq!(
        got[4..],
        workers[..],
        "second chunks: the one served first, first"
    );
}
