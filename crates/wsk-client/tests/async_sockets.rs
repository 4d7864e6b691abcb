//! The asynchronous socket operations (issue 17) in tasks, against the host model: a whole
//! exchange without a thread waiting (the model's work item rule is on), a receive in flight
//! beside a send on one socket, owned buffers handed back with the result, a pending operation
//! dropped (its IRP cancelled, its buffer freed once the provider completed it — the session's
//! end check finds no pool left), a provider completing inside the call, a creation dropped
//! before the provider answered (its socket closed by a work item), and the unload cancelling a
//! task whose receive is pending.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::mpsc;
use std::task::Poll;

use common::{TestDriver, buffer_with, recv, spawn};
use wsk_client::buffer::Buffer;
use wsk_client::socket::Socket;
use wsk_client::sys::AF_INET;
use wsk_client::time::Duration;
use wsk_client::{BindingRef, NtError, task, timer};
use wsk_host_model::{Event, ProviderConfig, Session};

fn echo_address() -> std::net::SocketAddr {
    "127.0.0.1:7".parse().unwrap()
}

/// A socket created, bound and connected to the model's echo peer, in a task.
async fn connected() -> Socket<TestDriver> {
    let reference = BindingRef::<TestDriver>::acquire().unwrap();
    let socket = Socket::create(&reference, AF_INET).await.unwrap();
    socket.bind("0.0.0.0:0".parse().unwrap()).await.unwrap();
    socket.connect(echo_address()).await.unwrap();
    socket
}

fn has_log(s: &Session, line: &str) -> bool {
    s.log().iter().any(|l| l == line)
}

fn exchange(config: ProviderConfig) {
    let mut s = common::started();
    s.register_provider(config);
    let (tx, rx) = mpsc::channel();
    spawn(async move {
        let socket = connected().await;
        let (sent, out) = socket.send(buffer_with(b"hello"), 5).await;
        let (received, back) = socket.receive(Buffer::new::<TestDriver>(8).unwrap()).await;
        let echoed = back.as_slice()[..received.unwrap_or(0)].to_vec();
        let disconnected = socket.disconnect().await;
        drop((out, back));
        socket.close();
        tx.send((sent, received, echoed, disconnected)).unwrap();
    });
    let (sent, received, echoed, disconnected) = recv(&rx);
    assert_eq!(sent, Ok(5));
    assert_eq!(received, Ok(5));
    assert_eq!(echoed, b"hello");
    assert_eq!(disconnected, Ok(()));
    s.wait_work_items();
    assert_eq!(s.open_sockets(), 0);
    s.driver_unload();
}

#[test]
fn an_exchange_in_a_task_waits_in_no_work_item() {
    exchange(ProviderConfig::default_wsk());
}

#[test]
fn requests_completed_inside_the_call_give_their_results() {
    exchange(ProviderConfig {
        requests_complete_inline: true,
        ..ProviderConfig::default_wsk()
    });
}

#[test]
fn a_receive_in_flight_beside_a_send_on_one_socket() {
    let mut s = common::started();
    s.register_provider(ProviderConfig::default_wsk());
    let (tx, rx) = mpsc::channel();
    spawn(async move {
        let socket = connected().await;
        // The receive is posted first (nothing to read yet); the send then goes out beside it.
        let mut receive = pin!(socket.receive(Buffer::new::<TestDriver>(4).unwrap()));
        let first = poll_fn(|cx| Poll::Ready(receive.as_mut().poll(cx).is_pending())).await;
        let (sent, _out) = socket.send(buffer_with(b"ping"), 4).await;
        let (received, back) = receive.await;
        tx.send((first, sent, received, back.as_slice().to_vec()))
            .unwrap();
    });
    let (first, sent, received, back) = recv(&rx);
    assert!(first, "the receive was pending before the send");
    assert_eq!((sent, received), (Ok(4), Ok(4)));
    assert_eq!(back, b"ping");
    s.wait_work_items();
    s.driver_unload();
}

#[test]
fn a_dropped_receive_is_cancelled_and_its_buffer_freed_after_the_provider_completed_it() {
    let mut s = common::started();
    s.register_provider(ProviderConfig {
        peer_silent: true,
        ..ProviderConfig::default_wsk()
    });
    let (tx, rx) = mpsc::channel();
    spawn(async move {
        let socket = connected().await;
        let receive = socket.receive(Buffer::new::<TestDriver>(8).unwrap());
        let timed_out = timer::timeout::<TestDriver, _>(Duration::from_millis(200), receive).await;
        tx.send(timed_out.map(|(result, _)| result).err()).unwrap();
    });
    assert_eq!(recv(&rx), Some(NtError::IO_TIMEOUT));
    s.wait_work_items();
    assert!(s.events().contains(&Event::IoCancelIrp));
    // The session's end check: no pool left (the buffer went with the request), no socket open.
    s.driver_unload();
}

#[test]
fn the_unload_cancels_a_pending_receive_and_the_task_gets_its_buffer_back() {
    let mut s = common::started();
    s.register_provider(ProviderConfig {
        peer_silent: true,
        ..ProviderConfig::default_wsk()
    });
    let (tx, rx) = mpsc::channel();
    spawn(async move {
        let socket = connected().await;
        tx.send(None).unwrap();
        let (received, back) = socket.receive(Buffer::new::<TestDriver>(8).unwrap()).await;
        tx.send(Some((received, back.capacity()))).unwrap();
    });
    assert_eq!(recv(&rx), None);
    s.wait_work_items();
    s.driver_unload();
    assert_eq!(recv(&rx), Some((Err(NtError::CANCELLED), 8)));
    assert!(has_log(
        &s,
        "test_driver: request: cancelled (the task is cancelled)"
    ));
}

#[test]
fn a_creation_dropped_before_the_answer_is_cancelled() {
    let mut s = common::started();
    s.register_provider(ProviderConfig {
        socket_hangs_until_cancelled: true,
        ..ProviderConfig::default_wsk()
    });
    let (tx, rx) = mpsc::channel();
    spawn(async move {
        let reference = BindingRef::<TestDriver>::acquire().unwrap();
        let create = Socket::create(&reference, AF_INET);
        let result = timer::timeout::<TestDriver, _>(Duration::from_millis(100), create).await;
        tx.send(result.err()).unwrap();
    });
    assert_eq!(recv(&rx), Some(NtError::IO_TIMEOUT));
    s.wait_work_items();
    // The model completes a cancelled WskSocket with STATUS_CANCELLED: no socket, nothing to
    // close, the work item freed unqueued.
    assert_eq!(s.open_sockets(), 0);
    s.driver_unload();
}

#[test]
fn a_socket_that_cannot_be_created_is_reported() {
    let mut s = common::started();
    s.register_provider(ProviderConfig {
        socket_failure: Some(wsk_host_model::Status::INSUFFICIENT_RESOURCES),
        ..ProviderConfig::default_wsk()
    });
    let (tx, rx) = mpsc::channel();
    spawn(async move {
        let reference = BindingRef::<TestDriver>::acquire().unwrap();
        tx.send(Socket::create(&reference, AF_INET).await.err())
            .unwrap();
    });
    assert_eq!(recv(&rx), Some(NtError::INSUFFICIENT_RESOURCES));
    assert!(has_log(
        &s,
        "test_driver: socket: WskSocket failed: 0xC000009A"
    ));
    s.wait_work_items();
    s.driver_unload();
}

#[test]
fn block_on_runs_an_exchange_on_a_thread_of_the_drivers_own() {
    let mut s = common::started();
    s.register_provider(ProviderConfig::default_wsk());
    // The driver's own PASSIVE_LEVEL thread (joined before the unload, as the contract says).
    let thread = s.driver_thread(|| {
        task::block_on::<TestDriver, _>(async {
            let socket = connected().await;
            let (sent, _out) = socket.send(buffer_with(b"hi"), 2).await;
            let (received, back) = socket.receive(Buffer::new::<TestDriver>(2).unwrap()).await;
            (sent, received, back.as_slice().to_vec())
        })
    });
    let (sent, received, back) = thread.join().unwrap().unwrap();
    assert_eq!((sent, received), (Ok(2), Ok(2)));
    assert_eq!(back, b"hi");
    s.wait_work_items();
    s.driver_unload();
}

#[test]
fn block_on_in_a_work_item_is_reported() {
    // The documented restriction, checked: a work item must not wait (System Worker Threads).
    let mut s = common::started();
    let (tx, rx) = mpsc::channel();
    wsk_client::work::queue::<TestDriver, _>(wsk_client::work::Closure(move || {
        let slept =
            task::block_on::<TestDriver, _>(timer::sleep::<TestDriver>(Duration::from_millis(100)));
        tx.send(slept.map(|_| ())).unwrap();
    }))
    .unwrap();
    assert_eq!(recv(&rx), Ok(()));
    s.wait_work_items();
    let waits = s.take_violations_matching("waits inside a work item routine");
    assert!(!waits.is_empty(), "the wait in a work item went unreported");
    s.driver_unload();
}

#[test]
fn a_provider_that_ignores_the_cancel_still_lets_a_cancelled_task_end() {
    // Wine's provider ignores IoCancelIrp on a pending receive. The unload cancels the task; its
    // receive cancels the IRP and closes the socket, and the close completes the receive: the
    // task ends, the unload goes on (without the close it would wait for ever).
    let mut s = common::started();
    s.register_provider(ProviderConfig {
        peer_silent: true,
        ignores_cancel: true,
        ..ProviderConfig::default_wsk()
    });
    let (tx, rx) = mpsc::channel();
    spawn(async move {
        let socket = connected().await;
        tx.send(None).unwrap();
        let (received, back) = socket.receive(Buffer::new::<TestDriver>(8).unwrap()).await;
        // Closed already: a new operation is refused, the buffer back at once.
        let (again, _) = socket.receive(back).await;
        tx.send(Some((received.is_err(), again))).unwrap();
    });
    assert_eq!(recv(&rx), None);
    s.wait_work_items();
    s.driver_unload();
    assert_eq!(recv(&rx), Some((true, Err(NtError::CONNECTION_ABORTED))));
    assert!(has_log(
        &s,
        "test_driver: socket: closing it: the task is cancelled"
    ));
    assert_eq!(s.open_sockets(), 0);
}

#[test]
fn a_socket_made_for_a_dropped_creation_is_closed_by_its_work_item() {
    // The cancel comes too late: the provider makes the socket anyway. Nobody waits for it any
    // more, so the work item allocated with the creation closes it (no WSK call in the
    // completion routine); the session's end check finds no socket open and no pool left.
    let mut s = common::started();
    s.register_provider(ProviderConfig {
        socket_hangs_until_cancelled: true,
        socket_made_despite_cancel: true,
        ..ProviderConfig::default_wsk()
    });
    let (tx, rx) = mpsc::channel();
    spawn(async move {
        let reference = BindingRef::<TestDriver>::acquire().unwrap();
        let create = Socket::create(&reference, AF_INET);
        let result = timer::timeout::<TestDriver, _>(Duration::from_millis(100), create).await;
        tx.send(result.err()).unwrap();
    });
    assert_eq!(recv(&rx), Some(NtError::IO_TIMEOUT));
    s.wait_work_items();
    assert!(has_log(
        &s,
        "test_driver: socket: made for a creation nobody waits for; closing it"
    ));
    assert_eq!(s.open_sockets(), 0);
    s.driver_unload();
}

#[test]
fn a_name_resolves_in_a_task_and_a_literal_needs_no_provider() {
    use wsk_client::resolve::resolve;

    let mut s = common::started();
    s.register_provider(ProviderConfig::default_wsk());
    let (tx, rx) = mpsc::channel();
    spawn(async move {
        let reference = BindingRef::<TestDriver>::acquire().unwrap();
        let found = resolve(&reference, "localhost", 7).await;
        let literal = resolve(&reference, "10.1.2.3", 9).await;
        let unknown = resolve(&reference, "nowhere.invalid", 7).await;
        let empty = resolve(&reference, "", 7).await;
        tx.send((found, literal, unknown, empty)).unwrap();
    });
    let (found, literal, unknown, empty) = recv(&rx);
    assert_eq!(found.unwrap().iter().collect::<Vec<_>>(), [echo_address()]);
    assert_eq!(
        literal.unwrap().iter().next().unwrap().to_string(),
        "10.1.2.3:9"
    );
    assert_eq!(
        unknown.err().map(NtError::bits),
        Some(0xC000_0225),
        "the provider's status"
    );
    assert_eq!(empty.err(), Some(NtError::INVALID_PARAMETER));
    s.wait_work_items();
    s.driver_unload();
    assert_eq!(s.address_chains(), 0);
}

#[test]
fn a_resolution_dropped_before_the_answer_has_its_chain_freed() {
    use wsk_client::resolve::resolve;

    let mut s = common::started();
    s.register_provider(ProviderConfig::default_wsk());
    let (tx, rx) = mpsc::channel();
    spawn(async move {
        let reference = BindingRef::<TestDriver>::acquire().unwrap();
        drop(resolve(&reference, "localhost", 7));
        tx.send(()).unwrap();
    });
    recv(&rx);
    s.wait_work_items();
    s.driver_unload();
    assert_eq!(s.address_chains(), 0, "the chain made for nobody is freed");
    assert!(s.violations().is_empty(), "{:?}", s.violations());
}

#[test]
fn a_cancelled_task_still_disconnects_gracefully_within_its_grace() {
    let mut s = common::started();
    s.register_provider(ProviderConfig::default_wsk());
    let (tx, rx) = mpsc::channel();
    spawn(async move {
        let socket = connected().await;
        tx.send(None).unwrap();
        task::cancelled().await;
        // Once cancelled: a disconnect is not cancelled with the task (nor its socket closed),
        // and the unload has already begun (the socket's own reference keeps its binding).
        let disconnected =
            timer::grace::<TestDriver, _>(Duration::from_millis(500), socket.disconnect()).await;
        tx.send(Some(disconnected)).unwrap();
    });
    assert_eq!(recv(&rx), None);
    s.wait_work_items();
    s.driver_unload();
    assert_eq!(recv(&rx), Some(Ok(Ok(()))));
    assert!(s.events().contains(&Event::WskDisconnect));
    assert!(!has_log(
        &s,
        "test_driver: request: cancelled (the task is cancelled)"
    ));
    assert_eq!(s.open_sockets(), 0);
}

#[test]
fn grace_runs_out_in_a_cancelled_task_where_a_timeout_ends_at_once() {
    let mut s = common::started();
    let (tx, rx) = mpsc::channel();
    spawn(async move {
        task::cancelled().await;
        // A future that never ends, cancelled or not.
        let long = std::future::pending::<()>;
        let timeout = timer::timeout::<TestDriver, _>(Duration::from_millis(100), long()).await;
        let started = wsk_client::time::Instant::now();
        let grace = timer::grace::<TestDriver, _>(Duration::from_millis(100), long()).await;
        tx.send((timeout, grace, started.elapsed())).unwrap();
    });
    s.wait_work_items();
    s.driver_unload();
    let (timeout, grace, took) = recv(&rx);
    assert_eq!(
        timeout,
        Err(NtError::CANCELLED),
        "a timeout ends with its task"
    );
    assert_eq!(grace, Err(NtError::IO_TIMEOUT), "a grace runs out");
    assert!(took >= Duration::from_millis(100), "{took:?}");
}

/// `Socket::connect_to` against a provider with `WskSocketConnect` (one request) and one without
/// it (the model's default answers `STATUS_NOT_SUPPORTED`, as a provider that lacks it): both
/// give a connected socket that echoes.
fn connect_to(config: ProviderConfig) -> Vec<Event> {
    let mut s = common::started();
    s.register_provider(config);
    let (tx, rx) = mpsc::channel();
    spawn(async move {
        let reference = BindingRef::<TestDriver>::acquire().unwrap();
        let socket = Socket::connect_to(&reference, echo_address())
            .await
            .unwrap();
        let (sent, _) = socket.send(buffer_with(b"one go"), 6).await;
        let (received, back) = socket.receive(Buffer::new::<TestDriver>(6).unwrap()).await;
        tx.send((sent, received, back.as_slice().to_vec())).unwrap();
    });
    assert_eq!(recv(&rx), (Ok(6), Ok(6), b"one go".to_vec()));
    s.wait_work_items();
    assert_eq!(s.open_sockets(), 0);
    let events = s.events();
    s.driver_unload();
    events
}

#[test]
fn connect_to_is_one_wsk_socket_connect_where_the_provider_has_it() {
    let events = connect_to(ProviderConfig {
        socket_connect: true,
        ..ProviderConfig::default_wsk()
    });
    assert!(events.contains(&Event::WskSocketConnect));
    assert!(!events.contains(&Event::WskBind));
}

#[test]
fn connect_to_goes_the_long_way_where_the_provider_lacks_it() {
    let events = connect_to(ProviderConfig::default_wsk());
    assert!(!events.contains(&Event::WskSocketConnect));
    assert!(events.contains(&Event::WskBind));
    assert!(events.iter().any(|e| matches!(e, Event::WskConnect { .. })));
}
