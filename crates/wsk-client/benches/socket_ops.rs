//! Benchmark (not a test): what one steady-state socket operation costs a driver embedding the
//! library, in the host model — pool allocations, IRPs, MDLs, work items and
//! `IoSetCompletionRoutineEx` contexts per send and per receive, once the socket is connected
//! (issue 20: the driver's own allocations per operation are 0, since a socket keeps its
//! requests; the I/O manager's `IoSetCompletionRoutineEx` context is one per use of an IRP, which
//! a non-PnP driver must set that way: Static Driver Verifier's
//! `IoSetCompletionRoutineNonPnpDriver` rule). Prints figures; asserts nothing about them (the
//! tests `kept_requests.rs` assert the zero).
//!
//! `cargo bench -p wsk-client --bench socket_ops`. Each path (a task awaiting the asynchronous
//! operations; a thread of the driver's own waiting on the blocking ones) runs a connection with
//! `N` and then with `2 N` echo round trips (a 1 KiB send, then receives until it is back): the
//! difference of the two runs' counts, over `N`, is the cost of one round trip alone (the
//! connect, close and the rest cancel out). The counts are exact: the model counts every call
//! the driver makes.

#![allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]

use std::sync::mpsc;
use std::time::Duration as StdDuration;

#[path = "../tests/common/mod.rs"]
mod common;

use common::TestDriver;
use wsk_client::buffer::Buffer;
use wsk_client::socket::Socket;
use wsk_client::sys::AF_INET;
use wsk_client::time::Timeout;
use wsk_client::{BindingRef, task};
use wsk_host_model::{ProviderConfig, Session};

/// Round trips in the shorter run.
const N: usize = 200;
/// Bytes per send.
const CHUNK: usize = 1024;

/// What one run allocated, by kind.
#[derive(Clone, Copy, Default)]
struct Counts {
    pool: usize,
    irps: usize,
    mdls: usize,
    work_items: usize,
    /// `IoSetCompletionRoutineEx`, which allocates a context of its own on Windows (its page:
    /// it fails with `STATUS_INSUFFICIENT_RESOURCES`).
    completion_contexts: usize,
}

impl Counts {
    /// The session's calls so far, by kind.
    fn of(s: &Session) -> Self {
        let calls = s.call_counts();
        let count = |name: &str| calls.get(name).copied().unwrap_or(0);
        Self {
            pool: count("ExAllocatePool2") + count("ExAllocatePoolWithTag"),
            irps: count("IoAllocateIrp"),
            mdls: count("IoAllocateMdl"),
            work_items: count("IoAllocateWorkItem"),
            completion_contexts: count("IoSetCompletionRoutineEx"),
        }
    }
}

/// `rounds` round trips on one connection, in a task: the counts of the whole session.
fn in_a_task(rounds: usize) -> Counts {
    let mut s = common::started();
    s.register_provider(ProviderConfig::default_wsk());
    let (tx, rx) = mpsc::channel();
    task::spawn::<TestDriver, _>(async move {
        let reference = BindingRef::<TestDriver>::acquire().unwrap();
        let socket = Socket::create(&reference, AF_INET).await.unwrap();
        socket.bind("0.0.0.0:0".parse().unwrap()).await.unwrap();
        socket
            .connect("127.0.0.1:7".parse().unwrap())
            .await
            .unwrap();
        let mut out = Buffer::new::<TestDriver>(CHUNK).unwrap();
        let mut back = Buffer::new::<TestDriver>(CHUNK).unwrap();
        for _ in 0..rounds {
            let (sent, buffer) = socket.send(out, CHUNK).await;
            out = buffer;
            assert_eq!(sent, Ok(CHUNK));
            let mut received = 0;
            while received < CHUNK {
                let (n, buffer) = socket.receive(back).await;
                back = buffer;
                received += n.unwrap();
            }
        }
        drop((out, back));
        socket.close();
        drop(reference);
        tx.send(()).unwrap();
    })
    .unwrap();
    rx.recv_timeout(StdDuration::from_mins(1))
        .expect("the task never ended");
    s.wait_work_items();
    let counts = Counts::of(&s);
    s.driver_unload();
    counts
}

/// `rounds` round trips on one connection, waited for on a thread of the driver's own.
fn on_a_thread(rounds: usize) -> Counts {
    let mut s = common::started();
    s.register_provider(ProviderConfig::default_wsk());
    let reference = BindingRef::<TestDriver>::acquire().unwrap();
    let socket = Socket::connection_blocking(&reference, AF_INET, Timeout::secs(5)).unwrap();
    socket
        .bind_blocking("0.0.0.0:0".parse().unwrap(), Timeout::secs(5))
        .unwrap();
    socket
        .connect_blocking("127.0.0.1:7".parse().unwrap(), Timeout::secs(5))
        .unwrap();
    let out = Buffer::new::<TestDriver>(CHUNK).unwrap();
    let mut back = Buffer::new::<TestDriver>(CHUNK).unwrap();
    for _ in 0..rounds {
        assert_eq!(
            socket.send_blocking(&out, CHUNK, Timeout::secs(5)),
            Ok(CHUNK)
        );
        let mut received = 0;
        while received < CHUNK {
            received += socket
                .receive_blocking(&mut back, Timeout::secs(5))
                .unwrap();
        }
    }
    drop((out, back));
    socket.close();
    drop(reference);
    s.wait_work_items();
    let counts = Counts::of(&s);
    s.driver_unload();
    counts
}

fn report(path: &str, run: fn(usize) -> Counts) {
    let short = run(N);
    let long = run(2 * N);
    #[allow(clippy::cast_precision_loss)]
    let per = |a: usize, b: usize| (b.saturating_sub(a)) as f64 / N as f64;
    println!("{path} (a 1 KiB send and its echo received, steady state):");
    println!(
        "  per round trip, the driver's: pool allocations {:.2}, IRPs {:.2}, MDLs {:.2}, work \
         items {:.2} (goal 0)",
        per(short.pool, long.pool),
        per(short.irps, long.irps),
        per(short.mdls, long.mdls),
        per(short.work_items, long.work_items),
    );
    println!(
        "  per round trip, the I/O manager's: IoSetCompletionRoutineEx contexts {:.2} (one per \
         use of an IRP: IoSetCompletionRoutineNonPnpDriver)",
        per(short.completion_contexts, long.completion_contexts)
    );
}

fn main() {
    // Each run opens and closes its own session: the model is one per process at a time.
    report("async (a task awaiting send and receive)", in_a_task);
    report(
        "blocking (a thread waiting on send_blocking and receive_blocking)",
        on_a_thread,
    );
}
