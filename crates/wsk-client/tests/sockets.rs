//! Requests and sockets against the host model: a socket holds a binding reference for its life,
//! the detach notification is where it gets closed, a pending IRP's completion may release the
//! last reference, and every failure of the request plumbing leaves nothing behind.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::Mutex;

use common::TestDriver;
use wsk_client::socket::Socket;
use wsk_client::sys::AF_INET;
use wsk_client::{BindingRef, NtStatus};
use wsk_host_model::{Event, ProviderConfig, Session, Status};

/// A socket the test driver keeps open, as a connection would.
static SOCKET: Mutex<Option<Socket<TestDriver>>> = Mutex::new(None);

fn has_log(s: &Session, line: &str) -> bool {
    s.log().iter().any(|l| l == line)
}

fn open_socket() -> Socket<TestDriver> {
    let reference = BindingRef::<TestDriver>::acquire().unwrap();
    Socket::connection(&reference, AF_INET, Some(10_000_000)).unwrap()
}

#[test]
fn a_socket_is_created_and_closed() {
    let mut s = common::started();
    s.register_provider(ProviderConfig::default_wsk());
    let socket = open_socket();
    assert_eq!(s.open_sockets(), 1);
    socket.close();
    s.wait_work_items();
    assert_eq!(s.open_sockets(), 0);
    assert!(has_log(&s, "test_driver: socket: closed"));
    s.driver_unload();
}

#[test]
fn a_socket_made_through_the_raw_dispatch_and_left_open_hangs_the_detach() {
    // The seed's design: a provider call inside a closure, the closure returns, nothing holds the
    // binding; the socket it made stays open, nothing tells the driver to close it, and the WSK
    // subsystem holds its side of the detach until it is closed: the unload hangs. The model
    // records the hang (after a bounded wait) instead of hanging the test.
    let mut s = common::started();
    s.register_provider(ProviderConfig::default_wsk());
    let reference = BindingRef::<TestDriver>::acquire().unwrap();
    let socket_fn = reference.socket().unwrap();
    let (status, _socket) = wsk_client::irp::call(&reference, None, |reference, irp| {
        // SAFETY: the model's WskSocket with the binding's client and the request's IRP.
        unsafe {
            socket_fn(
                reference.client(),
                AF_INET,
                1,
                6,
                2,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                irp,
            )
        }
    })
    .unwrap();
    assert_eq!(status, NtStatus::SUCCESS);
    drop(reference);
    s.driver_unload();
    let violations = s.violations();
    assert!(
        violations
            .iter()
            .any(|v| v.contains("socket(s) the client never closed: an unload hangs here")),
        "{violations:#?}"
    );
    s.forget_violations();
}

#[test]
fn the_unload_notification_closes_the_socket() {
    // The library's design: the socket holds a reference, the unload's notification closes it
    // (a close may be queued at DISPATCH_LEVEL), its completion releases the reference, the
    // unload goes on; the provider then finds no socket open.
    let mut s = common::started();
    s.register_provider(ProviderConfig::default_wsk());
    *SOCKET.lock().unwrap() = Some(open_socket());
    common::on_detach(|_| drop(SOCKET.lock().unwrap().take()));
    s.driver_unload();
    assert!(has_log(
        &s,
        "test_driver: unload: 1 reference(s) outstanding"
    ));
    assert!(has_log(&s, "test_driver: socket: closed"));
    assert_eq!(s.open_sockets(), 0);
    s.wait_work_items();
    assert!(s.image_unmapped());
}

#[test]
fn a_pending_close_completes_the_providers_detach_from_its_completion_routine() {
    // (b) The provider detaches while a socket is open: the detach pends; the notification
    // closes the socket; the close's IRP completes on a provider thread, and its completion
    // routine drops the last reference, which completes the detach — in a routine the I/O manager
    // runs holding the client's device object (IoSetCompletionRoutineEx).
    let mut s = common::started();
    let provider = s.register_provider(ProviderConfig::default_wsk());
    *SOCKET.lock().unwrap() = Some(open_socket());
    common::on_detach(|_| drop(SOCKET.lock().unwrap().take()));
    assert_eq!(s.deregister_provider(provider), [Status::PENDING]);
    s.wait_provider_unbound(provider);
    assert!(
        s.events()
            .iter()
            .any(|e| matches!(e, Event::NmrClientDetachProviderComplete { .. }))
    );
    assert_eq!(s.open_sockets(), 0);
    s.driver_unload();
}

#[test]
fn a_request_that_times_out_is_cancelled() {
    let mut s = common::started();
    let mut config = ProviderConfig::default_wsk();
    config.socket_hangs_until_cancelled = true;
    s.register_provider(config);
    let reference = BindingRef::<TestDriver>::acquire().unwrap();
    // 100 ms: the model completes the cancelled IRP with STATUS_CANCELLED.
    let result = Socket::connection(&reference, AF_INET, Some(1_000_000));
    assert_eq!(result.err(), Some(NtStatus::CANCELLED));
    assert!(has_log(&s, "test_driver: request: timed out, cancelled"));
    assert!(s.events().contains(&Event::IoCancelIrp));
    drop(reference);
    s.driver_unload();
}

#[test]
fn a_stub_that_never_completes_its_irp_gives_its_answer() {
    // Wine's WSK stubs return STATUS_NOT_IMPLEMENTED without completing the IRP: the answer is
    // the return value, and the IRP is freed at once (not waited for).
    let mut s = common::started();
    let mut config = ProviderConfig::default_wsk();
    config.socket_stub = true;
    s.register_provider(config);
    let reference = BindingRef::<TestDriver>::acquire().unwrap();
    let result = Socket::connection(&reference, AF_INET, None);
    assert_eq!(result.err(), Some(NtStatus::NOT_IMPLEMENTED));
    assert!(has_log(
        &s,
        "test_driver: request: answered 0xC0000002 without completing its IRP"
    ));
    drop(reference);
    s.driver_unload();
}

#[test]
fn a_failed_socket_creation_is_reported() {
    let mut s = common::started();
    let mut config = ProviderConfig::default_wsk();
    config.socket_failure = Some(Status::INSUFFICIENT_RESOURCES);
    s.register_provider(config);
    let reference = BindingRef::<TestDriver>::acquire().unwrap();
    let result = Socket::connection(&reference, AF_INET, None);
    assert_eq!(result.err(), Some(NtStatus::INSUFFICIENT_RESOURCES));
    assert!(has_log(
        &s,
        "test_driver: socket: WskSocket failed: 0xC000009A"
    ));
    drop(reference);
    s.driver_unload();
}

#[test]
fn request_plumbing_failures_leave_nothing_behind() {
    let mut s = common::started();
    s.register_provider(ProviderConfig::default_wsk());
    let reference = BindingRef::<TestDriver>::acquire().unwrap();
    s.fail_irps(1);
    assert_eq!(
        Socket::connection(&reference, AF_INET, None).err(),
        Some(NtStatus::INSUFFICIENT_RESOURCES)
    );
    assert!(has_log(&s, "test_driver: request: IoAllocateIrp failed"));
    s.fail_completion_routine(Status::INSUFFICIENT_RESOURCES);
    assert_eq!(
        Socket::connection(&reference, AF_INET, None).err(),
        Some(NtStatus::INSUFFICIENT_RESOURCES)
    );
    s.fail_allocations(1);
    assert_eq!(
        Socket::connection(&reference, AF_INET, None).err(),
        Some(NtStatus::INSUFFICIENT_RESOURCES)
    );
    assert!(has_log(&s, "test_driver: request: no pool for its context"));
    assert_eq!(s.open_sockets(), 0);
    drop(reference);
    s.driver_unload();
}
