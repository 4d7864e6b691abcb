//! Receive events (issue 18, item 2) against the host model's provider side: an accepted socket
//! made with events reads what the provider indicates (split over indications and chained MDLs),
//! in order; a peer sending more than the ring holds gets back-pressure (a partial accept, then a
//! `WskReceive` that resumes the indications) and every byte arrives once, in order; a peer's
//! close ends the stream after its data; a provider without events (Wine's stub) is read with
//! `WskReceive`s; a read waiting on the ring in a cancelled task ends `STATUS_CANCELLED` with
//! nothing left (the session's end check: the events block and its ring freed after the close).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation // test patterns: bytes from counters
)]

mod common;

use std::future::Future;
use std::sync::mpsc;
use std::time::Duration as StdDuration;

use common::{LIMIT, TestDriver, client, count, recv};
use wsk_client::buffer::Buffer;
use wsk_client::socket::{Listener, RING, Socket};
use wsk_client::sys::AF_INET;
use wsk_client::{BindingRef, NtError, task};
use wsk_host_model::{Event, ProviderConfig, Session};

/// A task that accepts one connection with events, turns them on (their answer sent first),
/// then runs `body` on it.
fn serve<F, R>(body: impl FnOnce(Socket<TestDriver>) -> F + Send + 'static) -> mpsc::Receiver<R>
where
    F: Future<Output = R> + Send + 'static,
    R: Send + 'static,
{
    let (tx, rx) = mpsc::channel();
    task::spawn::<TestDriver, _>(async move {
        let reference = BindingRef::<TestDriver>::acquire().unwrap();
        let listener = Listener::create(&reference, AF_INET).await.unwrap();
        listener
            .bind("0.0.0.0:7777".parse().unwrap())
            .await
            .unwrap();
        let (socket, _) = listener.accept_with_events().await.unwrap();
        listener.close();
        let _ = socket.enable_receive_events();
        tx.send(body(socket).await).unwrap();
    })
    .unwrap();
    rx
}

/// Reads until the peer closes: every byte, and the status that ended it.
async fn read_all(socket: &Socket<TestDriver>) -> (Vec<u8>, Result<usize, NtError>) {
    let mut all = Vec::new();
    let mut buffer = Buffer::new::<TestDriver>(1500).unwrap();
    loop {
        let (read, back) = socket.read(buffer).await;
        buffer = back;
        match read {
            Ok(0) | Err(_) => return (all, read),
            Ok(n) => all.extend_from_slice(&buffer.as_slice()[..n]),
        }
    }
}

/// [`recv`], with the session's last events and log lines shown when the task never got there.
fn recv_or_show<T>(s: &Session, rx: &mpsc::Receiver<T>) -> T {
    rx.recv_timeout(LIMIT).unwrap_or_else(|_| {
        let events = s.events();
        let log = s.log();
        panic!(
            "the task never got there; last events: {:#?}\nlast log lines: {:#?}",
            &events[events.len().saturating_sub(25)..],
            &log[log.len().saturating_sub(15)..]
        )
    })
}

#[test]
fn indicated_data_is_read_in_order_and_the_peers_close_ends_it() {
    let mut s = common::started();
    s.register_provider(ProviderConfig::default_wsk());
    let rx = serve(|socket| async move { read_all(&socket).await });
    let peer = client();
    let sent: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    peer.send(&sent[..4000]);
    peer.send(&sent[4000..]);
    peer.close();
    let (read, end) = recv_or_show(&s, &rx);
    assert_eq!(end, Ok(0));
    assert_eq!(read, sent);
    assert!(s.events().contains(&Event::EventsEnabled { mask: 0xC0 }));
    assert!(count(&s, |e| matches!(e, Event::WskReceiveEvent { .. })) > 0);
    assert!(s.events().contains(&Event::WskDisconnectEvent));
    // Everything came through the callbacks: no WskReceive was needed.
    assert_eq!(count(&s, |e| matches!(e, Event::WskReceive)), 0);
    s.wait_work_items();
    assert_eq!(s.open_sockets(), 0);
    s.driver_unload();
}

#[test]
fn more_than_the_ring_holds_is_held_back_then_read_through_wsk_receive_in_order() {
    let mut s = common::started();
    s.register_provider(ProviderConfig::default_wsk());
    let (go, wait) = mpsc::channel::<()>();
    let wait = std::sync::Mutex::new(wait);
    let rx = serve(move |socket| async move {
        // Nothing is read until the peer has sent it all: the ring fills.
        while wait.lock().unwrap().try_recv().is_err() {
            task::yield_now().await;
        }
        read_all(&socket).await
    });
    let peer = client();
    let sent: Vec<u8> = (0..3 * RING as u32 + 123)
        .map(|i| (i % 241) as u8)
        .collect();
    for chunk in sent.chunks(5000) {
        peer.send(chunk);
    }
    peer.close();
    std::thread::sleep(StdDuration::from_millis(50));
    go.send(()).unwrap();
    let (read, end) = recv_or_show(&s, &rx);
    assert_eq!(end, Ok(0));
    assert_eq!(read.len(), sent.len());
    assert!(read == sent, "the bytes came out of order or changed");
    let partial = count(
        &s,
        |e| matches!(e, Event::WskReceiveEvent { indicated, accepted, .. } if accepted < indicated),
    );
    assert!(
        partial > 0,
        "the full ring never held data back: {:?}",
        s.events()
    );
    assert!(count(&s, |e| matches!(e, Event::WskReceive)) > 0);
    s.wait_work_items();
    s.driver_unload();
}

#[test]
fn without_events_at_the_provider_a_read_is_a_wsk_receive() {
    let mut s = common::started();
    s.register_provider(ProviderConfig {
        control_stub: true,
        ..ProviderConfig::default_wsk()
    });
    let rx = serve(|socket| async move { read_all(&socket).await });
    let peer = client();
    peer.send(b"no events here");
    peer.close();
    let (read, end) = recv_or_show(&s, &rx);
    assert_eq!((read.as_slice(), end), (&b"no events here"[..], Ok(0)));
    assert_eq!(count(&s, |e| matches!(e, Event::WskReceiveEvent { .. })), 0);
    assert!(
        s.log()
            .iter()
            .any(|l| l == "test_driver: events: no receive events (0xC0000002): with IRPs"),
        "{:#?}",
        s.log()
    );
    s.wait_work_items();
    s.driver_unload();
}

#[test]
fn a_read_waiting_for_events_in_a_cancelled_task_ends_and_leaves_nothing() {
    let mut s = common::started();
    s.register_provider(ProviderConfig::default_wsk());
    let (tx, rx) = mpsc::channel();
    let handle = task::spawn::<TestDriver, _>(async move {
        let reference = BindingRef::<TestDriver>::acquire().unwrap();
        let listener = Listener::create(&reference, AF_INET).await.unwrap();
        listener
            .bind("0.0.0.0:7777".parse().unwrap())
            .await
            .unwrap();
        let (socket, _) = listener.accept_with_events().await.unwrap();
        listener.close();
        socket.enable_receive_events().unwrap();
        tx.send(None).unwrap();
        let (read, _) = socket.read(Buffer::new::<TestDriver>(64).unwrap()).await;
        tx.send(Some(read)).unwrap();
    })
    .unwrap();
    let peer = client();
    assert_eq!(recv(&rx), None);
    handle.cancel();
    assert_eq!(recv(&rx), Some(Err(NtError::CANCELLED)));
    assert!(peer.wait_closed(LIMIT));
    drop(handle);
    s.wait_work_items();
    assert_eq!(s.open_sockets(), 0);
    s.driver_unload();
}

#[test]
fn a_socket_made_without_events_cannot_turn_them_on() {
    let mut s = common::started();
    s.register_provider(ProviderConfig::default_wsk());
    let (tx, rx) = mpsc::channel();
    task::spawn::<TestDriver, _>(async move {
        let reference = BindingRef::<TestDriver>::acquire().unwrap();
        let listener = Listener::create(&reference, AF_INET).await.unwrap();
        listener
            .bind("0.0.0.0:7777".parse().unwrap())
            .await
            .unwrap();
        let (socket, _) = listener.accept().await.unwrap();
        tx.send(socket.enable_receive_events()).unwrap();
    })
    .unwrap();
    let _peer = client();
    assert_eq!(recv(&rx), Err(NtError::NOT_SUPPORTED));
    s.wait_work_items();
    s.driver_unload();
}

#[test]
fn indications_that_pass_the_rings_end_wrap_to_its_start_in_order() {
    // Rounds of one 6000-byte indication read whole: the ring's start moves 6000 a round, so the
    // third round's indication passes the ring's end (16 KiB) and wraps.
    const ROUND: usize = 6000;
    let mut s = common::started();
    s.register_provider(ProviderConfig::default_wsk());
    let (next, rounds) = mpsc::channel::<()>();
    let rounds = std::sync::Mutex::new(rounds);
    let (each, read) = mpsc::channel::<Vec<u8>>();
    let rx = serve(move |socket| async move {
        let mut buffer = Buffer::new::<TestDriver>(ROUND).unwrap();
        for _ in 0..5 {
            let (got, back) = socket.read(buffer).await;
            buffer = back;
            each.send(buffer.as_slice()[..got.unwrap()].to_vec())
                .unwrap();
            while rounds.lock().unwrap().try_recv().is_err() {
                task::yield_now().await;
            }
        }
    });
    let peer = client();
    for round in 0..5u8 {
        let sent: Vec<u8> = (0..ROUND)
            .map(|i| (i as u8).wrapping_mul(3) ^ round)
            .collect();
        peer.send(&sent);
        assert!(recv(&read) == sent, "round {round}: other bytes came back");
        next.send(()).unwrap();
    }
    recv(&rx);
    let _ = peer;
    s.wait_work_items();
    s.driver_unload();
}

#[test]
fn a_stream_read_while_it_arrives_wraps_the_ring_and_keeps_its_order() {
    let mut s = common::started();
    s.register_provider(ProviderConfig::default_wsk());
    let rx = serve(|socket| async move { read_all(&socket).await });
    let peer = client();
    let sent: Vec<u8> = (0..8 * RING as u32).map(|i| (i * 7 % 253) as u8).collect();
    for chunk in sent.chunks(3000) {
        peer.send(chunk);
        std::thread::sleep(StdDuration::from_micros(200));
    }
    peer.close();
    let (read, end) = recv_or_show(&s, &rx);
    assert_eq!(end, Ok(0));
    assert_eq!(read.len(), sent.len());
    assert!(read == sent, "the bytes came out of order or changed");
    s.wait_work_items();
    s.driver_unload();
}
