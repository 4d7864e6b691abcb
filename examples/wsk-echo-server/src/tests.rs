//! `wsk_echo_server.sys` against the host model: its parameters, several clients echoed at once,
//! the cap on connections, a client that never reads beside one that does, and the stop with
//! clients connected (every connection closed, nothing left: the session's end check).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::Duration;

use wsk_client::sys::{REG_DWORD, REG_SZ};
use wsk_host_model::{ProviderConfig, RemoteClient, Session, Status, connect_client, reg_sz};

use crate::DriverEntry;

const LIMIT: Duration = Duration::from_secs(10);

fn log_line(s: &Session, line: &str) -> bool {
    s.log().iter().any(|l| l == line)
}

/// Waits until `line` is logged.
fn wait_log(s: &Session, line: &str) {
    let start = std::time::Instant::now();
    while !log_line(s, line) {
        assert!(
            start.elapsed() < LIMIT,
            "never logged {line:?}: {:#?}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn started(port: u32, max_connections: Option<u32>) -> Session {
    let mut s = wsk_host_model::session();
    s.set_parameter("Parameters", "Port", REG_DWORD, &port.to_le_bytes());
    if let Some(n) = max_connections {
        s.set_parameter("Parameters", "MaxConnections", REG_DWORD, &n.to_le_bytes());
    }
    s.register_provider(ProviderConfig::default_wsk());
    assert_eq!(s.driver_entry(DriverEntry), Status::SUCCESS);
    wait_log(&s, &format!("wsk_echo_server: listening on 0.0.0.0:{port}"));
    s
}

fn client() -> RemoteClient {
    connect_client(LIMIT).expect("the server never listened")
}

#[test]
fn clients_are_echoed_at_once_and_their_closes_logged() {
    let mut s = started(7007, None);
    let clients: Vec<_> = (0..3).map(|_| client()).collect();
    for (i, c) in clients.iter().enumerate() {
        wait_log(
            &s,
            &format!(
                "wsk_echo_server: accepted #{} from 127.0.0.1:{}",
                i + 1,
                c.port()
            ),
        );
    }
    for (i, c) in clients.iter().enumerate().rev() {
        c.send(format!("client {i}: ").as_bytes());
        c.send(&vec![u8::try_from(i).unwrap(); 5000]);
    }
    for (i, c) in clients.iter().enumerate() {
        let mut want = format!("client {i}: ").into_bytes();
        want.extend(vec![u8::try_from(i).unwrap(); 5000]);
        assert_eq!(c.receive(want.len(), LIMIT), want);
        c.close();
        wait_log(
            &s,
            &format!(
                "wsk_echo_server: connection #{} closed: {} bytes echoed",
                i + 1,
                want.len()
            ),
        );
        assert!(c.wait_closed(LIMIT));
    }
    s.driver_unload();
    assert_eq!(
        s.log().last().unwrap(),
        "wsk_echo_server: unloaded, live pool allocations: 0"
    );
}

#[test]
fn past_the_cap_a_connection_is_accepted_then_closed() {
    let mut s = started(7008, Some(2));
    let first = client();
    let second = client();
    wait_log(
        &s,
        &format!(
            "wsk_echo_server: accepted #2 from 127.0.0.1:{}",
            second.port()
        ),
    );
    let third = client();
    wait_log(
        &s,
        "wsk_echo_server: connection #3 refused: too many connections",
    );
    assert!(third.wait_closed(LIMIT));
    // The first two are served still.
    first.send(b"one");
    second.send(b"two");
    assert_eq!(first.receive(3, LIMIT), b"one");
    assert_eq!(second.receive(3, LIMIT), b"two");
    // One leaves: the next is served.
    first.close();
    wait_log(&s, "wsk_echo_server: connection #1 closed: 3 bytes echoed");
    let fourth = client();
    fourth.send(b"four");
    assert_eq!(fourth.receive(4, LIMIT), b"four");
    s.driver_unload();
    assert!(second.wait_closed(LIMIT) && fourth.wait_closed(LIMIT));
}

#[test]
fn the_stop_with_clients_connected_closes_every_connection_and_leaves_nothing() {
    let mut s = started(7009, None);
    let clients: Vec<_> = (0..4).map(|_| client()).collect();
    clients[0].send(b"ping");
    assert_eq!(clients[0].receive(4, LIMIT), b"ping");
    wait_log(
        &s,
        &format!(
            "wsk_echo_server: accepted #4 from 127.0.0.1:{}",
            clients[3].port()
        ),
    );
    s.driver_unload();
    for c in &clients {
        assert!(c.wait_closed(LIMIT), "a connection was left open");
    }
    assert!(log_line(
        &s,
        "wsk_echo_server: connection #1 closed: 4 bytes echoed"
    ));
    assert_eq!(s.open_sockets(), 0);
    assert_eq!(
        s.log().last().unwrap(),
        "wsk_echo_server: unloaded, live pool allocations: 0"
    );
}

#[test]
fn missing_or_bad_parameters_are_named_and_the_driver_serves_nothing() {
    let mut s = wsk_host_model::session();
    s.register_provider(ProviderConfig::default_wsk());
    assert_eq!(s.driver_entry(DriverEntry), Status::SUCCESS);
    assert!(log_line(
        &s,
        "wsk_echo_server: parameters: no Parameters key (0xC0000034): not serving"
    ));
    assert!(
        !s.log().iter().any(|l| l.contains("failed")),
        "{:#?}",
        s.log()
    );
    s.driver_unload();
    drop(s);
    for (set, line) in [
        (
            ("MaxConnections", REG_DWORD, 1u32.to_le_bytes().to_vec()),
            "wsk_echo_server: parameters: Port missing",
        ),
        (
            ("Port", REG_DWORD, 70_000u32.to_le_bytes().to_vec()),
            "wsk_echo_server: parameters: Port out of range or malformed",
        ),
        (
            ("Port", REG_SZ, reg_sz("7")),
            "wsk_echo_server: parameters: Port of the wrong type",
        ),
    ] {
        let mut s = wsk_host_model::session();
        let (name, kind, data) = &set;
        s.set_parameter("Parameters", name, *kind, data);
        s.register_provider(ProviderConfig::default_wsk());
        assert_eq!(s.driver_entry(DriverEntry), Status::SUCCESS);
        assert!(log_line(&s, line), "{line:?}: {:#?}", s.log());
        assert!(
            s.log()
                .iter()
                .any(|l| l.starts_with("wsk_echo_server: listen failed: parameters 0x")),
            "{:#?}",
            s.log()
        );
        s.driver_unload();
    }
    for (name, kind, data, line) in [
        (
            "MaxConnections",
            REG_DWORD,
            65u32.to_le_bytes().to_vec(),
            "wsk_echo_server: parameters: MaxConnections out of range or malformed",
        ),
        (
            "Address",
            REG_SZ,
            reg_sz("localhost"),
            "wsk_echo_server: parameters: Address out of range or malformed",
        ),
    ] {
        let mut s = wsk_host_model::session();
        s.set_parameter("Parameters", "Port", REG_DWORD, &7u32.to_le_bytes());
        s.set_parameter("Parameters", name, kind, &data);
        s.register_provider(ProviderConfig::default_wsk());
        assert_eq!(s.driver_entry(DriverEntry), Status::SUCCESS);
        assert!(log_line(&s, line), "{line:?}: {:#?}", s.log());
        s.driver_unload();
    }
}

#[test]
fn an_ipv6_address_is_listened_on() {
    let mut s = wsk_host_model::session();
    s.set_parameter("Parameters", "Port", REG_DWORD, &7010u32.to_le_bytes());
    s.set_parameter("Parameters", "Address", REG_SZ, &reg_sz("::1"));
    s.register_provider(ProviderConfig::default_wsk());
    assert_eq!(s.driver_entry(DriverEntry), Status::SUCCESS);
    wait_log(&s, "wsk_echo_server: listening on [::1]:7010");
    s.driver_unload();
}

#[test]
fn a_provider_without_socket_options_is_said_and_served_all_the_same() {
    let mut s = wsk_host_model::session();
    s.set_parameter("Parameters", "Port", REG_DWORD, &7011u32.to_le_bytes());
    s.register_provider(ProviderConfig {
        control_stub: true,
        ..ProviderConfig::default_wsk()
    });
    assert_eq!(s.driver_entry(DriverEntry), Status::SUCCESS);
    wait_log(&s, "wsk_echo_server: listening on 0.0.0.0:7011");
    assert!(log_line(
        &s,
        "wsk_echo_server: options: SO_EXCLUSIVEADDRUSE not set (0xC0000002): no socket options, no TCP_NODELAY"
    ));
    let c = client();
    c.send(b"still echoed");
    assert_eq!(c.receive(12, LIMIT), b"still echoed");
    let d = client();
    d.send(b"twice");
    assert_eq!(d.receive(5, LIMIT), b"twice");
    // No events either: said once, the second connection accepted without them.
    let said = s
        .log()
        .iter()
        .filter(|l| {
            *l == "wsk_echo_server: events: no receive events (0xC0000002): accepting and receiving with IRPs"
        })
        .count();
    assert_eq!(said, 1, "{:#?}", s.log());
    s.driver_unload();
    // Not tried per connection once the provider said it has no options.
    assert!(
        !s.log().iter().any(|l| l.contains("TCP_NODELAY (")),
        "{:#?}",
        s.log()
    );
}

#[test]
fn connections_get_tcp_nodelay_and_receive_events_and_the_listener_exclusive_use() {
    let mut s = started(7012, None);
    let c = client();
    c.send(b"x");
    assert_eq!(c.receive(1, LIMIT), b"x");
    let options: Vec<(u32, u32)> = s
        .events()
        .into_iter()
        .filter_map(|e| match e {
            wsk_host_model::Event::WskControlSocket { level, name, .. } => Some((level, name)),
            _ => None,
        })
        .collect();
    assert_eq!(options, [(0xFFFF, 0xFFFF_FFFB), (6, 1)]);
    // The receive came through the event callback, not a WskReceive.
    let events = s.events();
    assert!(events.contains(&wsk_host_model::Event::EventsEnabled { mask: 0xC0 }));
    assert!(
        events
            .iter()
            .any(|e| matches!(e, wsk_host_model::Event::WskReceiveEvent { .. }))
    );
    assert!(!events.contains(&wsk_host_model::Event::WskReceive));
    s.driver_unload();
}

#[test]
fn datagrams_are_echoed_to_their_sender_on_the_same_port() {
    let mut s = started(7013, None);
    wait_log(&s, "wsk_echo_server: udp: echoing on 0.0.0.0:7013");
    let (a, b) = (
        wsk_host_model::datagram_peer(40_001),
        wsk_host_model::datagram_peer(40_002),
    );
    assert!(a.send(b"first", LIMIT) && b.send(b"second", LIMIT) && a.send(b"third", LIMIT));
    assert_eq!(a.receive(2, LIMIT), [b"first".to_vec(), b"third".to_vec()]);
    assert_eq!(b.receive(1, LIMIT), [b"second".to_vec()]);
    s.driver_unload();
    assert!(
        log_line(&s, "wsk_echo_server: udp: closed: 3 datagrams echoed"),
        "{:#?}",
        s.log()
    );
}

#[test]
fn a_provider_without_datagram_sockets_is_said_and_tcp_is_served_all_the_same() {
    let mut s = wsk_host_model::session();
    s.set_parameter("Parameters", "Port", REG_DWORD, &7014u32.to_le_bytes());
    s.register_provider(ProviderConfig {
        datagram_unsupported: true,
        ..ProviderConfig::default_wsk()
    });
    assert_eq!(s.driver_entry(DriverEntry), Status::SUCCESS);
    wait_log(&s, "wsk_echo_server: udp: not served: socket 0xC0000002");
    wait_log(&s, "wsk_echo_server: listening on 0.0.0.0:7014");
    let c = client();
    c.send(b"tcp");
    assert_eq!(c.receive(3, LIMIT), b"tcp");
    s.driver_unload();
}
