//! The executor ([`wsk_client::task`]) and its timers ([`wsk_client::timer`]) against the host
//! model: a task runs in the client's work items, one poll per run (the model's work item rule
//! reports any wait); wakes from other threads, from the task itself and from the timer's DPC run
//! it again, at most one run queued at a time; the unload cancels every task, waits until each has
//! ended, cancels the timer and flushes its DPC, so no task or DPC code runs after `DriverUnload`
//! returns (the model reports the image unmapped under running code).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::future::{Future, poll_fn};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::Duration as StdDuration;

use common::TestDriver;
use wsk_client::time::{Duration, Instant};
use wsk_client::{NtError, task, timer};
use wsk_host_model::{Event, Failable, Session};

/// A flag a test thread sets and a task awaits (what a completion routine does for a request).
#[derive(Clone, Default)]
struct Signal(Arc<Mutex<(bool, Option<Waker>)>>);

impl Signal {
    fn set(&self) {
        let waker = {
            let mut inner = self.0.lock().unwrap();
            inner.0 = true;
            inner.1.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    fn wait(&self) -> impl Future<Output = ()> + Send + 'static {
        let inner = self.0.clone();
        poll_fn(move |cx| {
            let mut inner = inner.lock().unwrap();
            if inner.0 {
                Poll::Ready(())
            } else {
                inner.1 = Some(cx.waker().clone());
                Poll::Pending
            }
        })
    }
}

fn spawn(future: impl Future<Output = ()> + Send + 'static) {
    task::spawn::<TestDriver, _>(future).unwrap();
}

fn recv<T>(rx: &mpsc::Receiver<T>) -> T {
    rx.recv_timeout(StdDuration::from_secs(10))
        .expect("the task never got there")
}

fn work_item_runs(s: &Session) -> usize {
    s.events()
        .iter()
        .filter(|e| matches!(e, Event::IoQueueWorkItem))
        .count()
}

#[test]
fn a_task_runs_to_completion_in_a_work_item_and_is_freed() {
    let mut s = common::started();
    let (tx, rx) = mpsc::channel();
    spawn(async move { tx.send(()).unwrap() });
    recv(&rx);
    s.wait_work_items();
    assert_eq!(work_item_runs(&s), 1, "one poll, one run");
    assert_eq!(
        TestDriverState::live(),
        0,
        "the task is freed once it completed"
    );
    s.driver_unload();
}

struct TestDriverState;

impl TestDriverState {
    fn live() -> usize {
        use wsk_client::Client;
        TestDriver::state().live_allocations()
    }
}

#[test]
fn a_wake_from_another_thread_runs_the_task_again() {
    let mut s = common::started();
    let signal = Signal::default();
    let polls = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = mpsc::channel();
    let wait = signal.wait();
    let counted = polls.clone();
    spawn(async move {
        let mut wait = std::pin::pin!(wait);
        poll_fn(|cx| {
            counted.fetch_add(1, Ordering::SeqCst);
            wait.as_mut().poll(cx)
        })
        .await;
        tx.send(()).unwrap();
    });
    s.wait_work_items();
    assert_eq!(
        polls.load(Ordering::SeqCst),
        1,
        "pending, and idle: no run queued"
    );
    let setter = signal.clone();
    s.driver_thread(move || setter.set()).join().unwrap();
    recv(&rx);
    s.wait_work_items();
    assert_eq!(polls.load(Ordering::SeqCst), 2);
    assert_eq!(work_item_runs(&s), 2);
    s.driver_unload();
}

#[test]
fn wakes_during_a_poll_queue_one_more_run_not_one_per_wake() {
    let mut s = common::started();
    let (tx, rx) = mpsc::channel();
    spawn(async move {
        let mut runs = 0;
        poll_fn(|cx| {
            runs += 1;
            if runs == 3 {
                return Poll::Ready(());
            }
            // Three wakes in one poll (and clones dropped): one more run.
            cx.waker().wake_by_ref();
            #[allow(clippy::waker_clone_wake)] // a clone's wake and drop, on purpose
            cx.waker().clone().wake();
            cx.waker().wake_by_ref();
            Poll::Pending
        })
        .await;
        tx.send(runs).unwrap();
    });
    assert_eq!(recv(&rx), 3);
    s.wait_work_items();
    assert_eq!(
        work_item_runs(&s),
        3,
        "a run per poll, never two queued at once"
    );
    s.driver_unload();
}

#[test]
fn yield_now_gives_the_work_item_back() {
    let mut s = common::started();
    let (tx, rx) = mpsc::channel();
    spawn(async move {
        for _ in 0..4 {
            task::yield_now().await;
        }
        tx.send(()).unwrap();
    });
    recv(&rx);
    s.wait_work_items();
    assert_eq!(work_item_runs(&s), 5);
    s.driver_unload();
}

#[test]
fn the_unload_cancels_a_waiting_task_and_waits_until_it_ended() {
    let mut s = common::started();
    let ended = Arc::new(AtomicUsize::new(0));
    let seen = ended.clone();
    let (tx, rx) = mpsc::channel();
    spawn(async move {
        tx.send(()).unwrap();
        task::cancelled().await;
        seen.fetch_add(1, Ordering::SeqCst);
    });
    recv(&rx);
    s.wait_work_items();
    assert_eq!(ended.load(Ordering::SeqCst), 0, "waits until cancelled");
    s.driver_unload();
    assert_eq!(
        ended.load(Ordering::SeqCst),
        1,
        "ended before DriverUnload returned"
    );
    assert!(
        s.log()
            .iter()
            .any(|l| l == "test_driver: unload: 1 task(s) cancelled")
    );
}

#[test]
fn a_task_sees_its_cancellation() {
    let mut s = common::started();
    let (tx, rx) = mpsc::channel();
    spawn(async move {
        let before = poll_fn(|cx| Poll::Ready(task::is_cancelled(cx))).await;
        tx.send(before).unwrap();
        task::cancelled().await;
        let after = poll_fn(|cx| Poll::Ready(task::is_cancelled(cx))).await;
        tx.send(after).unwrap();
    });
    assert!(!recv(&rx));
    s.driver_unload();
    assert!(recv(&rx));
    // Outside a task of the library (another executor's waker): never cancelled.
    let waker = Waker::noop();
    assert!(!task::is_cancelled(&std::task::Context::from_waker(waker)));
}

#[test]
fn a_spawn_is_refused_before_registration_and_once_the_unload_began() {
    let mut s = common::session();
    assert_eq!(
        task::spawn::<TestDriver, _>(async {}).err(),
        Some(NtError::INVALID_DEVICE_STATE),
        "not registered"
    );
    assert_eq!(
        s.driver_entry(common::DriverEntry),
        wsk_host_model::Status::SUCCESS
    );
    let (tx, rx) = mpsc::channel();
    common::on_detach(move |_| {
        tx.send(task::spawn::<TestDriver, _>(async {}).err())
            .unwrap();
    });
    s.driver_unload();
    assert_eq!(recv(&rx), Some(NtError::INVALID_DEVICE_STATE));
    assert!(
        s.log()
            .iter()
            .any(|l| l == "test_driver: task: not spawned: the unload has begun")
    );
}

#[test]
fn a_spawn_that_cannot_allocate_leaves_nothing_behind() {
    for kind in [Failable::Pool, Failable::WorkItem] {
        let mut s = common::started();
        // The future owns something of its own: a task never made drops it (it is not leaked).
        let owned = Arc::new(());
        let held = owned.clone();
        s.fail_nth(kind, 0);
        assert_eq!(
            task::spawn::<TestDriver, _>(async move { drop(held) }).err(),
            Some(NtError::INSUFFICIENT_RESOURCES),
            "{kind:?}"
        );
        assert_eq!(
            Arc::strong_count(&owned),
            1,
            "{kind:?}: the future was dropped"
        );
        assert_eq!(TestDriverState::live(), 0, "{kind:?}");
        s.driver_unload();
    }
}

#[test]
fn a_sleep_ends_after_its_duration_woken_by_the_timer_dpc() {
    let mut s = common::started();
    let (tx, rx) = mpsc::channel();
    spawn(async move {
        let start = Instant::now();
        let slept = timer::sleep::<TestDriver>(Duration::from_millis(500)).await;
        tx.send((slept, start.elapsed())).unwrap();
    });
    let (slept, elapsed) = recv(&rx);
    assert_eq!(slept, Ok(()));
    assert!(elapsed >= Duration::from_millis(500), "{elapsed:?}");
    assert!(
        s.events()
            .iter()
            .any(|e| matches!(e, Event::KeSetTimer { due } if *due < 0)),
        "a relative due time"
    );
    s.driver_unload();
    assert!(
        s.events()
            .iter()
            .any(|e| matches!(e, Event::KeFlushQueuedDpcs)),
        "the unload flushes the timer's DPC"
    );
}

#[test]
fn sleeps_of_many_tasks_each_last_their_own_duration() {
    let mut s = common::started();
    let (tx, rx) = mpsc::channel();
    for millis in [900_u64, 300, 600, 150] {
        let tx = tx.clone();
        spawn(async move {
            let start = Instant::now();
            timer::sleep::<TestDriver>(Duration::from_millis(millis))
                .await
                .unwrap();
            tx.send((millis, start.elapsed())).unwrap();
        });
    }
    let mut ended: Vec<(u64, Duration)> = (0..4).map(|_| recv(&rx)).collect();
    ended.sort_unstable();
    for (millis, elapsed) in ended {
        assert!(
            elapsed >= Duration::from_millis(millis),
            "{millis} ms: {elapsed:?}"
        );
    }
    s.driver_unload();
}

#[test]
fn a_timeout_ends_a_future_that_never_completes() {
    let mut s = common::started();
    let (tx, rx) = mpsc::channel();
    spawn(async move {
        let never = std::future::pending::<()>();
        let timed_out = timer::timeout::<TestDriver, _>(Duration::from_millis(200), never).await;
        let in_time = timer::timeout::<TestDriver, _>(Duration::from_secs(3600), async { 7 }).await;
        tx.send((timed_out, in_time)).unwrap();
    });
    let (timed_out, in_time) = recv(&rx);
    assert_eq!(timed_out, Err(NtError::IO_TIMEOUT));
    assert_eq!(in_time, Ok(7), "its sleep dropped, out of the timer list");
    s.driver_unload();
}

#[test]
fn the_unload_ends_a_long_sleep_with_cancelled() {
    let mut s = common::started();
    let (tx, rx) = mpsc::channel();
    spawn(async move {
        let slept = timer::sleep::<TestDriver>(Duration::from_secs(3600)).await;
        tx.send(slept).unwrap();
    });
    s.wait_work_items();
    s.driver_unload();
    assert_eq!(recv(&rx), Err(NtError::CANCELLED));
}

#[test]
fn a_timer_dpc_runs_while_the_unload_goes_on_and_is_flushed() {
    // Many short sleeps end around the unload: whichever DPC still runs, DriverUnload returns
    // only after it (the model reports image code running after the unload otherwise).
    let mut s = common::started();
    for i in 0..8_u64 {
        spawn(async move {
            loop {
                if timer::sleep::<TestDriver>(Duration::from_millis(10 + i))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
    }
    std::thread::sleep(StdDuration::from_millis(20));
    s.driver_unload();
}

#[test]
fn a_timer_dpc_still_running_at_the_unload_is_waited_for() {
    // The DPC wakes the task, which ends; the model preempts the DPC right after its wake (up to
    // 300 ms, or until the unload returns). The unload cannot know the DPC is still returning:
    // only KeFlushQueuedDpcs waits for it — without it, DriverUnload returns under a running DPC
    // and the model reports it.
    let mut s = common::started();
    let (tx, rx) = mpsc::channel();
    spawn(async move {
        let slept = timer::sleep::<TestDriver>(Duration::from_millis(100)).await;
        tx.send(slept).unwrap();
    });
    assert_eq!(recv(&rx), Ok(()));
    s.driver_unload();
}

/// Waits (on the test thread) until `done` says so.
fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + StdDuration::from_secs(10);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        std::thread::sleep(StdDuration::from_millis(1));
    }
}

#[test]
fn a_task_cancelled_through_its_handle_ends_and_its_memory_waits_for_the_handle() {
    let mut s = common::started();
    let (tx, rx) = mpsc::channel();
    let handle = task::spawn::<TestDriver, _>(async move {
        task::cancelled().await;
        tx.send(()).unwrap();
    })
    .unwrap();
    assert!(!handle.is_finished());
    handle.cancel();
    recv(&rx);
    until("finished", || handle.is_finished());
    assert_eq!(TestDriverState::live(), 1, "the task, held by its handle");
    drop(handle);
    assert_eq!(TestDriverState::live(), 0, "freed with the handle");
    s.driver_unload();
    assert!(s.violations().is_empty(), "{:?}", s.violations());
}

#[test]
fn a_cell_cancelled_before_the_task_is_kept_cancels_it_then() {
    static CELL: task::TaskCell = task::TaskCell::new();
    let mut s = common::started();
    CELL.cancel();
    let (tx, rx) = mpsc::channel();
    let handle = task::spawn::<TestDriver, _>(async move {
        task::cancelled().await;
        tx.send(()).unwrap();
    })
    .unwrap();
    CELL.keep(handle);
    recv(&rx);
    until("freed", || TestDriverState::live() == 0);
    CELL.reset();
    // Reset: a task kept now is kept (not cancelled); the cell's cancel reaches it.
    let (tx, rx) = mpsc::channel();
    let handle = task::spawn::<TestDriver, _>(async move {
        task::cancelled().await;
        tx.send(()).unwrap();
    })
    .unwrap();
    CELL.keep(handle);
    assert!(rx.recv_timeout(StdDuration::from_millis(50)).is_err());
    CELL.cancel();
    recv(&rx);
    s.driver_unload();
    assert!(s.violations().is_empty(), "{:?}", s.violations());
    CELL.reset();
}

#[test]
fn join_awaits_both_futures_in_either_order() {
    let mut s = common::started();
    for first_a in [true, false] {
        let (a, b) = (Signal::default(), Signal::default());
        let (tx, rx) = mpsc::channel();
        let (wait_a, wait_b) = (a.wait(), b.wait());
        spawn(async move {
            let ((), ()) = task::join(wait_a, wait_b).await;
            tx.send(()).unwrap();
        });
        let (one, two) = if first_a { (&a, &b) } else { (&b, &a) };
        one.set();
        assert!(
            rx.recv_timeout(StdDuration::from_millis(50)).is_err(),
            "one is not both"
        );
        two.set();
        recv(&rx);
    }
    s.driver_unload();
    assert!(s.violations().is_empty(), "{:?}", s.violations());
}
