//! Listening sockets (issue 18) against the host model's listen side: accept a remote client and
//! echo it, several at once, an accept pending when the task is cancelled (the listener closes,
//! the accept ends `STATUS_CANCELLED`), an accept dropped before a client came (its IRP
//! cancelled, nothing left), an accept on a listener never bound, and tasks kept in a
//! [`TaskSet`] cancelled together.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::Duration as StdDuration;

use common::{LIMIT, TestDriver, client, recv, spawn};
use wsk_client::buffer::Buffer;
use wsk_client::socket::{Listener, Socket, SocketOption};
use wsk_client::sys::AF_INET;
use wsk_client::task::{self, TaskSet};
use wsk_client::time::Duration;
use wsk_client::{BindingRef, NtError, timer};
use wsk_host_model::{Event, ProviderConfig};

fn any_port() -> SocketAddr {
    "0.0.0.0:7777".parse().unwrap()
}

async fn listening() -> Listener<TestDriver> {
    let reference = BindingRef::<TestDriver>::acquire().unwrap();
    let listener = Listener::create(&reference, AF_INET).await.unwrap();
    listener.bind(any_port()).await.unwrap();
    listener
}

/// Echoes one connection until its peer closes: the bytes echoed.
async fn echo(socket: Socket<TestDriver>) -> usize {
    let mut buffer = Buffer::new::<TestDriver>(64).unwrap();
    let mut total = 0;
    loop {
        let (received, back) = socket.receive(buffer).await;
        let n = received.unwrap();
        if n == 0 {
            return total;
        }
        let (sent, back) = socket.send(back, n).await;
        assert_eq!(sent, Ok(n));
        buffer = back;
        total += n;
    }
}

#[test]
fn an_accepted_connection_is_a_socket_that_echoes_its_peer() {
    let mut s = common::started();
    s.register_provider(ProviderConfig::default_wsk());
    let (tx, rx) = mpsc::channel();
    spawn(async move {
        let listener = listening().await;
        let (socket, remote) = listener.accept().await.unwrap();
        let echoed = echo(socket).await;
        listener.close();
        tx.send((remote, echoed)).unwrap();
    });
    let peer = client();
    peer.send(b"hello, ");
    assert_eq!(peer.receive(7, LIMIT), b"hello, ");
    peer.send(b"server");
    assert_eq!(peer.receive(13, LIMIT), b"hello, server");
    peer.close();
    let (remote, echoed) = recv(&rx);
    assert_eq!(remote, SocketAddr::from(([127, 0, 0, 1], peer.port())));
    assert_eq!(echoed, 13);
    assert!(peer.wait_closed(LIMIT), "the accepted socket was closed");
    s.wait_work_items();
    assert_eq!(s.open_sockets(), 0);
    s.driver_unload();
}

#[test]
fn connections_accepted_in_turn_are_echoed_at_once_in_tasks_of_their_own() {
    static CONNECTIONS: TaskSet<4> = TaskSet::new();
    let mut s = common::started();
    s.register_provider(ProviderConfig::default_wsk());
    CONNECTIONS.reset();
    let (tx, rx) = mpsc::channel();
    spawn(async move {
        let listener = listening().await;
        for _ in 0..3 {
            let (socket, _) = listener.accept().await.unwrap();
            let tx = tx.clone();
            let connection = task::spawn::<TestDriver, _>(async move {
                tx.send(echo(socket).await).unwrap();
            })
            .unwrap();
            CONNECTIONS.keep(connection).unwrap();
        }
    });
    let peers: Vec<_> = (0..3).map(|_| client()).collect();
    for (i, peer) in peers.iter().enumerate().rev() {
        peer.send(format!("peer {i}").as_bytes());
    }
    for (i, peer) in peers.iter().enumerate() {
        assert_eq!(peer.receive(6, LIMIT), format!("peer {i}").as_bytes());
        peer.close();
    }
    let mut echoed: Vec<usize> = (0..3).map(|_| recv(&rx)).collect();
    echoed.sort_unstable();
    assert_eq!(echoed, [6, 6, 6]);
    s.wait_work_items();
    assert_eq!(CONNECTIONS.running(), 0);
    CONNECTIONS.reset();
    s.driver_unload();
}

#[test]
fn a_cancelled_task_closes_its_listener_and_the_pending_accept_ends_cancelled() {
    let mut s = common::started();
    s.register_provider(ProviderConfig {
        ignores_cancel: true,
        ..ProviderConfig::default_wsk()
    });
    let (tx, rx) = mpsc::channel();
    let handle = task::spawn::<TestDriver, _>(async move {
        let listener = listening().await;
        tx.send(None).unwrap();
        let accepted = listener.accept().await.map(|_| ());
        tx.send(Some(accepted)).unwrap();
    })
    .unwrap();
    assert_eq!(recv(&rx), None);
    // Once the accept is posted: the provider ignores IoCancelIrp, so only the close ends it.
    let posted = std::time::Instant::now();
    while !s.events().contains(&Event::WskAccept) {
        assert!(posted.elapsed() < LIMIT, "the accept was never posted");
        std::thread::sleep(StdDuration::from_millis(1));
    }
    handle.cancel();
    assert_eq!(recv(&rx), Some(Err(NtError::CANCELLED)));
    drop(handle);
    s.wait_work_items();
    assert_eq!(s.open_sockets(), 0);
    s.driver_unload();
}

#[test]
fn an_accept_dropped_before_a_client_came_leaves_nothing() {
    let mut s = common::started();
    s.register_provider(ProviderConfig::default_wsk());
    let (tx, rx) = mpsc::channel();
    spawn(async move {
        let listener = listening().await;
        let accept = listener.accept();
        let result = timer::timeout::<TestDriver, _>(Duration::from_millis(100), accept).await;
        tx.send(result.err()).unwrap();
    });
    assert_eq!(recv(&rx), Some(NtError::IO_TIMEOUT));
    s.wait_work_items();
    assert!(s.events().contains(&Event::IoCancelIrp));
    assert_eq!(s.open_sockets(), 0);
    s.driver_unload();
}

#[test]
fn an_accept_on_a_listener_never_bound_fails_cleanly() {
    let mut s = common::started();
    s.register_provider(ProviderConfig::default_wsk());
    let (tx, rx) = mpsc::channel();
    spawn(async move {
        let reference = BindingRef::<TestDriver>::acquire().unwrap();
        let listener = Listener::create(&reference, AF_INET).await.unwrap();
        tx.send(listener.accept().await.map(|_| ()).err()).unwrap();
    });
    assert_eq!(recv(&rx), Some(NtError::INVALID_DEVICE_STATE));
    s.wait_work_items();
    assert_eq!(s.open_sockets(), 0);
    s.driver_unload();
}

#[test]
fn a_task_set_cancels_every_task_it_keeps_and_refuses_past_its_size() {
    static SET: TaskSet<2> = TaskSet::new();
    let mut s = common::started();
    s.register_provider(ProviderConfig::default_wsk());
    SET.reset();
    let (tx, rx) = mpsc::channel();
    let waiting = |tx: mpsc::Sender<u32>, n: u32| async move {
        task::cancelled().await;
        tx.send(n).unwrap();
    };
    SET.keep(task::spawn::<TestDriver, _>(waiting(tx.clone(), 1)).unwrap())
        .unwrap();
    SET.keep(task::spawn::<TestDriver, _>(waiting(tx.clone(), 2)).unwrap())
        .unwrap();
    let third = task::spawn::<TestDriver, _>(waiting(tx.clone(), 3)).unwrap();
    let third = SET.keep(third).expect_err("a set of 2 is full");
    assert_eq!(SET.running(), 2);
    SET.cancel();
    let mut ended = vec![recv(&rx), recv(&rx)];
    ended.sort_unstable();
    assert_eq!(ended, [1, 2]);
    // Kept after the cancel: cancelled at once.
    SET.keep(third).unwrap();
    assert_eq!(recv(&rx), 3);
    s.wait_work_items();
    assert_eq!(SET.running(), 0);
    SET.reset();
    s.driver_unload();
}

#[test]
fn options_are_set_and_addresses_read_through_the_provider() {
    let mut s = common::started();
    s.register_provider(ProviderConfig::default_wsk());
    let (tx, rx) = mpsc::channel();
    spawn(async move {
        let reference = BindingRef::<TestDriver>::acquire().unwrap();
        let listener = Listener::create(&reference, AF_INET).await.unwrap();
        let exclusive = listener
            .set_option(SocketOption::ExclusiveAddressUse(true))
            .await;
        listener.bind(any_port()).await.unwrap();
        let local = listener.local_address().await;
        let (socket, remote) = listener.accept().await.unwrap();
        let no_delay = socket.set_option(SocketOption::NoDelay(true)).await;
        let queried = socket.remote_address().await;
        tx.send((exclusive, local, remote, no_delay, queried))
            .unwrap();
    });
    let peer = client();
    let (exclusive, local, remote, no_delay, queried) = recv(&rx);
    assert_eq!((exclusive, no_delay), (Ok(()), Ok(())));
    assert_eq!(local, Ok(any_port()));
    assert_eq!(queried, Ok(remote));
    assert_eq!(remote.port(), peer.port());
    let options: Vec<_> = s
        .events()
        .into_iter()
        .filter(|e| matches!(e, Event::WskControlSocket { .. }))
        .collect();
    assert_eq!(
        options,
        [
            Event::WskControlSocket {
                request: 0,
                level: 0xFFFF,
                name: 0xFFFF_FFFB,
                value: Some(1)
            },
            Event::WskControlSocket {
                request: 0,
                level: 6,
                name: 1,
                value: Some(1)
            },
        ]
    );
    s.wait_work_items();
    s.driver_unload();
}

#[test]
fn a_provider_without_options_answers_not_implemented_and_the_socket_goes_on() {
    let mut s = common::started();
    s.register_provider(ProviderConfig {
        control_stub: true,
        ..ProviderConfig::default_wsk()
    });
    let (tx, rx) = mpsc::channel();
    spawn(async move {
        let reference = BindingRef::<TestDriver>::acquire().unwrap();
        let listener = Listener::create(&reference, AF_INET).await.unwrap();
        let exclusive = listener
            .set_option(SocketOption::ExclusiveAddressUse(true))
            .await;
        let bound = listener.bind(any_port()).await;
        let local = listener.local_address().await;
        tx.send((exclusive, bound, local)).unwrap();
    });
    let (exclusive, bound, local) = recv(&rx);
    assert_eq!(exclusive, Err(NtError::NOT_IMPLEMENTED));
    assert_eq!(bound, Ok(()));
    assert_eq!(local, Err(NtError::NOT_IMPLEMENTED));
    assert!(
        s.log()
            .iter()
            .any(|l| l == "test_driver: socket: the provider does not implement SO_EXCLUSIVEADDRUSE (0xC0000002)"),
        "{:#?}",
        s.log()
    );
    s.wait_work_items();
    s.driver_unload();
}
