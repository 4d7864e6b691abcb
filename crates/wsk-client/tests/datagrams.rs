//! Datagram (UDP) sockets (issue 18, item 3) against the host model's datagram echo: a datagram
//! sent to an address comes back from it, IPv4 and IPv6; one longer than the buffer is cut to it;
//! `SO_BROADCAST`; a provider without datagram sockets (Wine's) answers cleanly; a pending
//! receive in a cancelled task ends `STATUS_CANCELLED` and leaves nothing.

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

use common::{TestDriver, buffer_with, recv, spawn};
use wsk_client::buffer::Buffer;
use wsk_client::socket::{DATAGRAM_SLOTS, Datagram, SocketOption};
use wsk_client::sys::{AF_INET, AF_INET6};
use wsk_client::{BindingRef, NtError, task};
use wsk_host_model::{Event, ProviderConfig};

/// What a receive gave: the bytes and their sender.
type Received = Result<(Vec<u8>, SocketAddr), NtError>;

/// Sends `payload` to `to` on a socket of `family` bound to `local`, receives into `capacity`
/// bytes: (sent, what came back and from where).
fn round_trip(
    family: u16,
    local: &str,
    to: &str,
    payload: &'static [u8],
    capacity: usize,
) -> (Result<usize, NtError>, Received) {
    let mut s = common::started();
    s.register_provider(ProviderConfig::default_wsk());
    let (local, to): (SocketAddr, SocketAddr) = (local.parse().unwrap(), to.parse().unwrap());
    let (tx, rx) = mpsc::channel();
    spawn(async move {
        let reference = BindingRef::<TestDriver>::acquire().unwrap();
        let socket = Datagram::create(&reference, family).await.unwrap();
        socket.bind(local).await.unwrap();
        let (sent, _) = socket
            .send_to(buffer_with(payload), payload.len(), to)
            .await;
        let (received, back) = socket
            .receive_from(Buffer::new::<TestDriver>(capacity).unwrap())
            .await;
        let received = received.map(|(n, from)| (back.as_slice()[..n].to_vec(), from));
        socket.close();
        tx.send((sent, received)).unwrap();
    });
    let result = recv(&rx);
    s.wait_work_items();
    assert_eq!(s.open_sockets(), 0);
    assert!(s.events().contains(&Event::WskSendTo {
        bytes: payload.len()
    }));
    s.driver_unload();
    result
}

#[test]
fn a_datagram_comes_back_from_the_address_it_went_to() {
    let (sent, received) = round_trip(AF_INET, "0.0.0.0:0", "192.0.2.7:9", b"ping", 16);
    assert_eq!(sent, Ok(4));
    assert_eq!(
        received,
        Ok((b"ping".to_vec(), "192.0.2.7:9".parse().unwrap()))
    );
}

#[test]
fn an_ipv6_datagram_comes_back_from_its_address() {
    let (sent, received) = round_trip(AF_INET6, "[::]:0", "[2001:db8::1]:53", b"query", 16);
    assert_eq!(sent, Ok(5));
    assert_eq!(
        received,
        Ok((b"query".to_vec(), "[2001:db8::1]:53".parse().unwrap()))
    );
}

#[test]
fn a_datagram_longer_than_the_buffer_is_cut_to_it() {
    let (_, received) = round_trip(AF_INET, "0.0.0.0:0", "192.0.2.7:9", b"0123456789", 4);
    assert_eq!(
        received,
        Ok((b"0123".to_vec(), "192.0.2.7:9".parse().unwrap()))
    );
}

#[test]
fn broadcast_is_an_option_of_the_socket() {
    let mut s = common::started();
    s.register_provider(ProviderConfig::default_wsk());
    let (tx, rx) = mpsc::channel();
    spawn(async move {
        let reference = BindingRef::<TestDriver>::acquire().unwrap();
        let socket = Datagram::create(&reference, AF_INET).await.unwrap();
        let set = socket.set_option(SocketOption::Broadcast(true)).await;
        socket.bind("0.0.0.0:0".parse().unwrap()).await.unwrap();
        let local = socket.local_address().await;
        tx.send((set, local)).unwrap();
    });
    let (set, local) = recv(&rx);
    assert_eq!(set, Ok(()));
    assert_eq!(local, Ok("0.0.0.0:0".parse().unwrap()));
    assert!(s.events().contains(&Event::WskControlSocket {
        request: 0,
        level: 0xFFFF,
        name: 0x20,
        value: Some(1),
    }));
    s.wait_work_items();
    s.driver_unload();
}

#[test]
fn a_provider_without_datagram_sockets_answers_cleanly() {
    let mut s = common::started();
    s.register_provider(ProviderConfig {
        datagram_unsupported: true,
        ..ProviderConfig::default_wsk()
    });
    let (tx, rx) = mpsc::channel();
    spawn(async move {
        let reference = BindingRef::<TestDriver>::acquire().unwrap();
        let made = Datagram::create(&reference, AF_INET).await.map(|_| ());
        tx.send(made).unwrap();
    });
    assert_eq!(recv(&rx), Err(NtError::NOT_IMPLEMENTED));
    assert!(
        s.log()
            .iter()
            .any(|l| l
                == "test_driver: socket: the provider does not implement WskSocket (0xC0000002)"),
        "{:#?}",
        s.log()
    );
    s.wait_work_items();
    assert_eq!(s.open_sockets(), 0);
    s.driver_unload();
}

#[test]
fn a_pending_receive_in_a_cancelled_task_ends_cancelled() {
    let mut s = common::started();
    s.register_provider(ProviderConfig::default_wsk());
    let (tx, rx) = mpsc::channel();
    let handle = task::spawn::<TestDriver, _>(async move {
        let reference = BindingRef::<TestDriver>::acquire().unwrap();
        let socket = Datagram::create(&reference, AF_INET).await.unwrap();
        socket.bind("0.0.0.0:0".parse().unwrap()).await.unwrap();
        tx.send(None).unwrap();
        let (received, back) = socket
            .receive_from(Buffer::new::<TestDriver>(8).unwrap())
            .await;
        tx.send(Some((received.map(|(n, _)| n), back.capacity())))
            .unwrap();
    })
    .unwrap();
    assert_eq!(recv(&rx), None);
    let posted = std::time::Instant::now();
    while !s.events().contains(&Event::WskReceiveFrom) {
        assert!(posted.elapsed() < StdDuration::from_secs(10));
        std::thread::sleep(StdDuration::from_millis(1));
    }
    handle.cancel();
    assert_eq!(recv(&rx), Some((Err(NtError::CANCELLED), 8)));
    drop(handle);
    s.wait_work_items();
    assert_eq!(s.open_sockets(), 0);
    s.driver_unload();
}

/// A socket made with receive-from events, bound and with them on; the answer to turning them on.
async fn with_events() -> (Datagram<TestDriver>, Result<(), NtError>) {
    let reference = BindingRef::<TestDriver>::acquire().unwrap();
    let socket = Datagram::create_with_events(&reference, AF_INET)
        .await
        .unwrap();
    socket.bind("0.0.0.0:0".parse().unwrap()).await.unwrap();
    let on = socket.enable_receive_from_events();
    (socket, on)
}

#[test]
fn with_receive_from_events_datagrams_come_through_the_callback_in_order() {
    let mut s = common::started();
    s.register_provider(ProviderConfig::default_wsk());
    let (tx, rx) = mpsc::channel();
    spawn(async move {
        let (socket, on) = with_events().await;
        let to: SocketAddr = "192.0.2.7:9".parse().unwrap();
        for payload in [&b"one"[..], b"two", b"three"] {
            let (sent, _) = socket
                .send_to(buffer_with(payload), payload.len(), to)
                .await;
            sent.unwrap();
        }
        let mut got = Vec::new();
        let mut buffer = Buffer::new::<TestDriver>(16).unwrap();
        for _ in 0..3 {
            let (received, back) = socket.receive_from(buffer).await;
            buffer = back;
            let (n, from) = received.unwrap();
            got.push((buffer.as_slice()[..n].to_vec(), from));
        }
        tx.send((on, got, socket.dropped())).unwrap();
    });
    let (on, got, dropped) = recv(&rx);
    assert_eq!(on, Ok(()));
    let from: SocketAddr = "192.0.2.7:9".parse().unwrap();
    assert_eq!(
        got,
        [
            (b"one".to_vec(), from),
            (b"two".to_vec(), from),
            (b"three".to_vec(), from)
        ]
    );
    assert_eq!(dropped, 0);
    let events = s.events();
    assert!(events.contains(&Event::EventsEnabled { mask: 0x100 }));
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::WskReceiveFromEvent { .. }))
    );
    assert!(!events.contains(&Event::WskReceiveFrom));
    s.wait_work_items();
    s.driver_unload();
}

#[test]
fn datagrams_past_the_slots_are_dropped_and_counted() {
    let mut s = common::started();
    s.register_provider(ProviderConfig::default_wsk());
    let (tx, rx) = mpsc::channel();
    spawn(async move {
        let (socket, on) = with_events().await;
        on.unwrap();
        let to: SocketAddr = "192.0.2.7:9".parse().unwrap();
        // All sent (each one echoed into a slot) before any is read.
        for i in 0..DATAGRAM_SLOTS + 2 {
            let payload = [u8::try_from(i).unwrap(); 4];
            let (sent, _) = socket.send_to(buffer_with(&payload), 4, to).await;
            sent.unwrap();
        }
        while socket.dropped() < 2 {
            task::yield_now().await;
        }
        let mut first = Vec::new();
        let mut buffer = Buffer::new::<TestDriver>(8).unwrap();
        for _ in 0..DATAGRAM_SLOTS {
            let (received, back) = socket.receive_from(buffer).await;
            buffer = back;
            let (n, _) = received.unwrap();
            first.push(buffer.as_slice()[..n].to_vec());
        }
        tx.send((first, socket.dropped())).unwrap();
    });
    let (kept, dropped) = recv(&rx);
    assert_eq!(dropped, 2);
    let want: Vec<Vec<u8>> = (0..DATAGRAM_SLOTS)
        .map(|i| vec![u8::try_from(i).unwrap(); 4])
        .collect();
    assert_eq!(kept, want);
    s.wait_work_items();
    s.driver_unload();
}

#[test]
fn a_receive_waiting_for_datagram_events_in_a_cancelled_task_ends_and_leaves_nothing() {
    let mut s = common::started();
    s.register_provider(ProviderConfig::default_wsk());
    let (tx, rx) = mpsc::channel();
    let handle = task::spawn::<TestDriver, _>(async move {
        let (socket, on) = with_events().await;
        tx.send(Some(on.map(|()| 0))).unwrap();
        let (received, back) = socket
            .receive_from(Buffer::new::<TestDriver>(8).unwrap())
            .await;
        tx.send(Some(received.map(|(n, _)| n).map(|_| back.capacity())))
            .unwrap();
    })
    .unwrap();
    assert_eq!(recv(&rx), Some(Ok(0)));
    handle.cancel();
    assert_eq!(recv(&rx), Some(Err(NtError::CANCELLED)));
    drop(handle);
    s.wait_work_items();
    assert_eq!(s.open_sockets(), 0);
    s.driver_unload();
}
