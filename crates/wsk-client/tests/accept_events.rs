//! Accept events (issue 18, item 1) against the host model's provider side: a listening socket
//! made with events hands its connections to `WskAcceptEvent`, whose queue `accept` takes from
//! (no `WskAccept` posted); each connection reads through receive events; past the queue's
//! `BACKLOG` the callback refuses connections (the provider closes them); connections queued
//! and never taken are closed with the listener, and a cancelled accept leaves nothing; a
//! provider without events (Wine's stub) is served with `WskAccept`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::mpsc;
use std::time::Duration as StdDuration;

use common::{LIMIT, TestDriver, client, count, recv, spawn};
use wsk_client::buffer::Buffer;
use wsk_client::socket::{BACKLOG, Listener};
use wsk_client::sys::AF_INET;
use wsk_client::{BindingRef, NtError, task};
use wsk_host_model::{Event, ProviderConfig, Session};

/// A listener made with events, bound and (when the provider has them) with accept events on.
async fn listening() -> (Listener<TestDriver>, Result<(), NtError>) {
    let reference = BindingRef::<TestDriver>::acquire().unwrap();
    let listener = Listener::create_with_events(&reference, AF_INET)
        .await
        .unwrap();
    listener
        .bind("0.0.0.0:7777".parse().unwrap())
        .await
        .unwrap();
    let on = listener.enable_accept_events();
    (listener, on)
}

#[test]
fn connections_come_through_the_callback_and_read_through_events() {
    let mut s = common::started();
    s.register_provider(ProviderConfig::default_wsk());
    let (tx, rx) = mpsc::channel();
    spawn(async move {
        let (listener, on) = listening().await;
        tx.send(Err(on)).unwrap();
        for _ in 0..2 {
            let (socket, remote) = listener.accept().await.unwrap();
            socket.enable_receive_events().unwrap();
            let (read, buffer) = socket.read(Buffer::new::<TestDriver>(16).unwrap()).await;
            let n = read.unwrap();
            let (sent, _) = socket.send(buffer, n).await;
            tx.send(Ok((remote.port(), sent.unwrap()))).unwrap();
        }
    });
    assert_eq!(recv(&rx), Err(Ok(())));
    let (a, b) = (client(), client());
    a.send(b"first");
    b.send(b"second!");
    let mut got = vec![recv(&rx).unwrap(), recv(&rx).unwrap()];
    got.sort_unstable();
    let mut want = vec![(a.port(), 5), (b.port(), 7)];
    want.sort_unstable();
    assert_eq!(got, want);
    assert_eq!(a.receive(5, LIMIT), b"first");
    assert_eq!(b.receive(7, LIMIT), b"second!");
    assert_eq!(
        count(&s, |e| matches!(e, Event::WskAcceptEvent { status: 0 })),
        2
    );
    assert_eq!(count(&s, |e| matches!(e, Event::WskAccept)), 0);
    assert!(count(&s, |e| matches!(e, Event::WskReceiveEvent { .. })) >= 2);
    s.wait_work_items();
    s.driver_unload();
}

#[test]
fn past_the_backlog_connections_are_refused_and_queued_ones_closed_with_the_listener() {
    let mut s = common::started();
    s.register_provider(ProviderConfig::default_wsk());
    let (tx, rx) = mpsc::channel();
    let (go, wait) = mpsc::channel::<()>();
    let wait = std::sync::Mutex::new(wait);
    spawn(async move {
        let (listener, on) = listening().await;
        tx.send(on.map(|()| 0)).unwrap();
        while wait.lock().unwrap().try_recv().is_err() {
            task::yield_now().await;
        }
        // One taken; the others queued are closed with the listener.
        let (socket, _) = listener.accept().await.unwrap();
        drop(socket);
        listener.close();
        tx.send(Ok(1)).unwrap();
    });
    assert_eq!(recv(&rx), Ok(0));
    let clients: Vec<_> = (0..BACKLOG + 2).map(|_| client()).collect();
    let refused = |s: &Session| {
        count(
            s,
            |e| matches!(e, Event::WskAcceptEvent { status } if (*status).cast_unsigned() == 0xC000_00D0),
        )
    };
    let start = std::time::Instant::now();
    while refused(&s) < 2 {
        assert!(start.elapsed() < LIMIT, "never refused: {:?}", s.events());
        std::thread::sleep(StdDuration::from_millis(2));
    }
    assert_eq!(
        count(&s, |e| matches!(e, Event::WskAcceptEvent { status: 0 })),
        BACKLOG
    );
    go.send(()).unwrap();
    assert_eq!(recv(&rx), Ok(1));
    for c in &clients {
        assert!(c.wait_closed(LIMIT), "a connection was left open");
    }
    s.wait_work_items();
    assert_eq!(s.open_sockets(), 0);
    s.driver_unload();
}

#[test]
fn a_cancelled_accept_closes_what_was_queued_and_leaves_nothing() {
    let mut s = common::started();
    s.register_provider(ProviderConfig::default_wsk());
    let (tx, rx) = mpsc::channel();
    let handle = spawn(async move {
        let (listener, on) = listening().await;
        tx.send(Some(on)).unwrap();
        // The task is cancelled while this accept waits; the queue is emptied then.
        task::cancelled().await;
        let accepted = listener.accept().await.map(|_| ());
        tx.send(Some(accepted)).unwrap();
        tx.send(None).unwrap();
    });
    assert_eq!(recv(&rx), Some(Ok(())));
    let c = client();
    let start = std::time::Instant::now();
    while count(&s, |e| matches!(e, Event::WskAcceptEvent { .. })) == 0 {
        assert!(start.elapsed() < LIMIT);
        std::thread::sleep(StdDuration::from_millis(2));
    }
    handle.cancel();
    // The queued connection is taken first (it was there), then the listener goes.
    let first = recv(&rx).unwrap();
    assert!(
        first.is_ok() || first == Err(NtError::CANCELLED),
        "{first:?}"
    );
    assert_eq!(recv(&rx), None);
    assert!(c.wait_closed(LIMIT));
    drop(handle);
    s.wait_work_items();
    assert_eq!(s.open_sockets(), 0);
    s.driver_unload();
}

#[test]
fn without_events_at_the_provider_accept_is_a_wsk_accept() {
    let mut s = common::started();
    s.register_provider(ProviderConfig {
        control_stub: true,
        ..ProviderConfig::default_wsk()
    });
    let (tx, rx) = mpsc::channel();
    spawn(async move {
        let (listener, on) = listening().await;
        let accepted = listener.accept().await.map(|(_, remote)| remote.port());
        tx.send((on, accepted)).unwrap();
    });
    let c = client();
    assert_eq!(recv(&rx), (Err(NtError::NOT_IMPLEMENTED), Ok(c.port())));
    assert_eq!(count(&s, |e| matches!(e, Event::WskAcceptEvent { .. })), 0);
    assert!(count(&s, |e| matches!(e, Event::WskAccept)) > 0);
    s.wait_work_items();
    s.driver_unload();
}
