//! Requests and sockets against the host model: a socket holds a binding reference for its life,
//! the detach notification is where it gets closed, a pending IRP's completion may release the
//! last reference, and every failure of the request plumbing leaves nothing behind.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::mpsc;

mod common;

use std::sync::Mutex;

use common::TestDriver;
use wsk_client::socket::Socket;
use wsk_client::sys::AF_INET;
use wsk_client::time::Timeout;
use wsk_client::{BindingRef, Client, NtError, NtStatus};
use wsk_host_model::{Event, ProviderConfig, Session, Status};

/// A socket the test driver keeps open, as a connection would.
static SOCKET: Mutex<Option<Socket<TestDriver>>> = Mutex::new(None);

fn has_log(s: &Session, line: &str) -> bool {
    s.log().iter().any(|l| l == line)
}

fn open_socket() -> Socket<TestDriver> {
    let reference = BindingRef::<TestDriver>::acquire().unwrap();
    Socket::connection_blocking(&reference, AF_INET, Timeout::secs(1)).unwrap()
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
    let (status, _socket) = wsk_client::irp::call(&reference, Timeout::Never, |reference, irp| {
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

/// The driver's answer to a detach notice: close the socket. The notice (a work item) tells the
/// test thread, which closes it once the detach callback has returned `STATUS_PENDING`: so the
/// close is the detach's last reference every time, whatever the threads' timing.
fn close_on_notice() -> mpsc::Receiver<()> {
    let (notified_tx, notified_rx) = mpsc::channel();
    common::on_detach(move |_| {
        let _ = notified_tx.send(());
    });
    notified_rx
}

fn close_when_notified(notified: &mpsc::Receiver<()>) {
    notified.recv().unwrap();
    drop(SOCKET.lock().unwrap().take());
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
    let notified = close_on_notice();
    assert_eq!(s.deregister_provider(provider), [Status::PENDING]);
    close_when_notified(&notified);
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
fn a_request_is_freed_before_its_completion_lets_the_last_reference_go() {
    // The provider completes the close on the closing thread before it answers: the completion
    // routine runs before the submitter has let go of the request. The reference the
    // request holds is the binding's last; once it goes the detach completes (and an unload may
    // return), so the request's pool block must be freed before, whoever frees it.
    let mut s = common::started();
    let provider = s.register_provider(ProviderConfig {
        requests_complete_inline: true,
        ..ProviderConfig::default_wsk()
    });
    *SOCKET.lock().unwrap() = Some(open_socket());
    let notified = close_on_notice();
    assert_eq!(s.deregister_provider(provider), [Status::PENDING]);
    close_when_notified(&notified);
    s.wait_provider_unbound(provider);
    let events = s.events();
    let request_tag = u32::from_le_bytes(*b"WskI");
    let close = events
        .iter()
        .position(|e| *e == Event::WskCloseSocket)
        .expect("the socket was closed");
    let freed = events[close..]
        .iter()
        .position(|e| *e == Event::Free { tag: request_tag })
        .map(|i| close + i);
    let detached = events
        .iter()
        .position(|e| matches!(e, Event::NmrClientDetachProviderComplete { .. }));
    assert!(
        freed.is_some() && detached.is_some() && freed < detached,
        "the close's request freed at {freed:?}, the detach completed at {detached:?}: {events:#?}"
    );
    assert_eq!(s.open_sockets(), 0);
    s.driver_unload();
}

#[test]
fn requests_completed_before_the_call_returns_give_their_results() {
    // A provider may complete a request inside the call and return its status (no
    // STATUS_PENDING): the result — the new socket, the bytes sent — is in the IRP's IoStatus,
    // which the completion routine has already read; the call's return value carries only the
    // status.
    use wsk_client::buffer::Buffer;

    let mut s = common::started();
    s.register_provider(ProviderConfig {
        requests_complete_inline: true,
        ..ProviderConfig::default_wsk()
    });
    let socket = connected();
    let mut buffer = Buffer::new::<TestDriver>(5).unwrap();
    buffer.as_mut_slice().copy_from_slice(b"hello");
    assert_eq!(socket.send_blocking(&buffer, 5, Timeout::secs(1)), Ok(5));
    drop(buffer);
    drop(socket);
    s.wait_work_items();
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
    let result = Socket::connection_blocking(&reference, AF_INET, Timeout::millis(100));
    assert_eq!(result.err(), Some(NtError::CANCELLED));
    assert!(has_log(&s, "test_driver: request: timed out, cancelled"));
    assert!(s.events().contains(&Event::IoCancelIrp));
    drop(reference);
    s.driver_unload();
}

#[test]
fn a_waited_request_is_freed_before_its_caller_goes_on() {
    // The provider completes on its own thread; the routine sets the waiter's event and is then
    // preempted. Whatever the waiter does next (an unload counting pool, say) must find the
    // request freed: the routine must not be left to free it after the signal.
    let mut s = common::started();
    s.register_provider(ProviderConfig::default_wsk());
    s.pause_routines_after_set_event(std::time::Duration::from_millis(200));
    let requests = |s: &Session| {
        s.live_allocations()
            .iter()
            .filter(|a| a.tag == TestDriver::REQUEST_TAG.raw())
            .count()
    };
    // WskSocket's one-time request: freed by the waiter before `connection_blocking` returns.
    let socket = open_socket();
    assert_eq!(requests(&s), 1, "the socket's prepared close only");
    // The socket's waited operations keep one request (issue 20): the waiter has it back.
    socket
        .bind_blocking("0.0.0.0:0".parse().unwrap(), Timeout::secs(1))
        .unwrap();
    assert_eq!(
        requests(&s),
        2,
        "the prepared close and the kept request of the waited operations"
    );
    // The close is asynchronous (a drop may run at DISPATCH_LEVEL): the unload waits for it.
    drop(socket);
    s.wait_work_items();
    s.driver_unload();
}

#[test]
fn a_stub_that_never_completes_its_irp_gives_its_answer() {
    // Wine's WSK stubs return STATUS_NOT_IMPLEMENTED without completing the IRP: the answer is
    // the return value, and the client sends the untaken IRP to its own device object, whose
    // dispatch routine completes it at once (not waited for), so that IoSetCompletionRoutineEx's
    // context is freed (the model records an IRP freed with its routine never run) and the IRP
    // is completed by the driver it was sent to (the model records any other completion).
    let mut s = common::started();
    let mut config = ProviderConfig::default_wsk();
    config.socket_stub = true;
    s.register_provider(config);
    let reference = BindingRef::<TestDriver>::acquire().unwrap();
    let result = Socket::connection_blocking(&reference, AF_INET, Timeout::Never);
    assert_eq!(result.err(), Some(NtError::NOT_IMPLEMENTED));
    assert!(has_log(
        &s,
        "test_driver: request: answered 0xC0000002 without taking its IRP; completed by the client's device"
    ));
    assert!(s.calls("IofCallDriver") >= 1 && s.calls("IofCompleteRequest") >= 1);
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
    let result = Socket::connection_blocking(&reference, AF_INET, Timeout::Never);
    assert_eq!(result.err(), Some(NtError::INSUFFICIENT_RESOURCES));
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
        Socket::connection_blocking(&reference, AF_INET, Timeout::Never).err(),
        Some(NtError::INSUFFICIENT_RESOURCES)
    );
    assert!(has_log(&s, "test_driver: request: IoAllocateIrp failed"));
    s.fail_completion_routine(Status::INSUFFICIENT_RESOURCES);
    assert_eq!(
        Socket::connection_blocking(&reference, AF_INET, Timeout::Never).err(),
        Some(NtError::INSUFFICIENT_RESOURCES)
    );
    s.fail_allocations(1);
    assert_eq!(
        Socket::connection_blocking(&reference, AF_INET, Timeout::Never).err(),
        Some(NtError::INSUFFICIENT_RESOURCES)
    );
    assert!(has_log(&s, "test_driver: request: no pool for its context"));
    assert_eq!(s.open_sockets(), 0);
    drop(reference);
    s.driver_unload();
}

/// 127.0.0.1:7, the echo port.
fn echo_address() -> std::net::SocketAddr {
    "127.0.0.1:7".parse().unwrap()
}

/// A connected socket to the model's echo peer.
fn connected() -> Socket<TestDriver> {
    let socket = open_socket();
    socket
        .bind_blocking("0.0.0.0:0".parse().unwrap(), Timeout::secs(1))
        .unwrap();
    socket
        .connect_blocking(echo_address(), Timeout::secs(1))
        .unwrap();
    socket
}

#[test]
fn bind_connect_send_receive_disconnect_close() {
    use wsk_client::buffer::Buffer;

    let mut s = common::started();
    s.register_provider(ProviderConfig::default_wsk());
    let socket = connected();
    let mut out = Buffer::new::<TestDriver>(5).unwrap();
    out.as_mut_slice().copy_from_slice(b"hello");
    assert_eq!(socket.send_blocking(&out, 5, Timeout::secs(1)), Ok(5));
    let mut back = Buffer::new::<TestDriver>(16).unwrap();
    let received = socket
        .receive_blocking(&mut back, Timeout::secs(1))
        .unwrap();
    assert_eq!(&back.as_slice()[..received], b"hello");
    assert_eq!(socket.disconnect_blocking(Timeout::secs(1)), Ok(()));
    drop(socket);
    drop((out, back));
    s.wait_work_items();
    assert_eq!(s.open_sockets(), 0);
    assert!(s.events().contains(&Event::WskSend { bytes: 5 }));
    s.driver_unload();
}

#[test]
fn a_send_never_claims_more_than_the_buffer_holds() {
    use wsk_client::buffer::Buffer;

    let mut s = common::started();
    s.register_provider(ProviderConfig::default_wsk());
    let socket = connected();
    let out = Buffer::new::<TestDriver>(4).unwrap();
    // Asked for 1000 bytes of a 4-byte buffer: the WSK_BUF says 4 (a longer one would be a
    // bugcheck on Windows; the model records it).
    assert_eq!(socket.send_blocking(&out, 1000, Timeout::secs(1)), Ok(4));
    assert!(s.events().contains(&Event::WskSend { bytes: 4 }));
    drop((socket, out));
    s.wait_work_items();
    s.driver_unload();
}

#[test]
fn a_refused_connection_is_reported_and_closed() {
    let mut s = common::started();
    let mut config = ProviderConfig::default_wsk();
    config.connect_failure = Some(Status::from_raw(wsk_client::sys::STATUS_CONNECTION_REFUSED));
    s.register_provider(config);
    let socket = open_socket();
    assert_eq!(
        socket.connect_blocking(echo_address(), Timeout::secs(1)),
        Err(NtError::CONNECTION_REFUSED)
    );
    assert!(has_log(
        &s,
        "test_driver: socket: WskConnect failed: 0xC0000236"
    ));
    drop(socket);
    s.wait_work_items();
    assert_eq!(s.open_sockets(), 0);
    s.driver_unload();
}

#[test]
fn a_provider_without_disconnect_is_logged_and_the_socket_still_closes() {
    let mut s = common::started();
    let mut config = ProviderConfig::default_wsk();
    config.disconnect_stub = true;
    s.register_provider(config);
    let socket = connected();
    assert_eq!(
        socket.disconnect_blocking(Timeout::secs(1)),
        Err(NtError::NOT_IMPLEMENTED)
    );
    assert!(has_log(
        &s,
        "test_driver: socket: the provider does not implement WskDisconnect (0xC0000002)"
    ));
    assert!(has_log(
        &s,
        "test_driver: socket: closing without a graceful disconnect"
    ));
    assert!(
        !s.log().iter().any(|l| l.contains("failed")),
        "a missing function is said so, not logged as a failure: {:#?}",
        s.log()
    );
    drop(socket);
    s.wait_work_items();
    assert_eq!(s.open_sockets(), 0);
    s.driver_unload();
}

#[test]
fn a_receive_from_a_silent_peer_times_out_and_is_cancelled() {
    use wsk_client::buffer::Buffer;

    let mut s = common::started();
    let mut config = ProviderConfig::default_wsk();
    config.peer_silent = true;
    s.register_provider(config);
    let socket = connected();
    let mut back = Buffer::new::<TestDriver>(8).unwrap();
    assert_eq!(
        socket.receive_blocking(&mut back, Timeout::millis(100)),
        Err(NtError::CANCELLED)
    );
    assert!(s.events().contains(&Event::IoCancelIrp));
    drop((socket, back));
    s.wait_work_items();
    s.driver_unload();
}

#[test]
fn a_receive_the_provider_will_not_cancel_ends_by_closing_the_socket() {
    // Wine ignores IoCancelIrp on a pending receive; closing the socket completes it. The
    // receive's buffer is borrowed until then: the library waits for the completion.
    use wsk_client::buffer::Buffer;

    let mut s = common::started();
    let mut config = ProviderConfig::default_wsk();
    config.peer_silent = true;
    config.ignores_cancel = true;
    s.register_provider(config);
    let socket = connected();
    let mut back = Buffer::new::<TestDriver>(8).unwrap();
    assert_eq!(
        socket.receive_blocking(&mut back, Timeout::millis(100)),
        Err(NtError::CANCELLED)
    );
    assert!(has_log(
        &s,
        "test_driver: socket: closing it to end a stuck request"
    ));
    // Closed already: the socket refuses further operations, and dropping it closes nothing more.
    assert_eq!(
        socket.send_blocking(&back, 1, Timeout::millis(100)),
        Err(NtError::CONNECTION_ABORTED)
    );
    drop((socket, back));
    s.wait_work_items();
    assert_eq!(s.open_sockets(), 0);
    s.driver_unload();
}

#[test]
fn names_resolve_through_the_provider_at_1_1() {
    use wsk_client::resolve::resolve_blocking as resolve;

    let mut s = common::started();
    s.register_provider(ProviderConfig::default_wsk());
    let reference = BindingRef::<TestDriver>::acquire().unwrap();
    let found = resolve(&reference, "localhost", 7, Timeout::secs(1)).unwrap();
    assert_eq!(found.iter().collect::<Vec<_>>(), [echo_address()]);
    // A literal needs no provider call.
    let before = s.events().len();
    let literal = resolve(&reference, "10.1.2.3", 9, Timeout::Never).unwrap();
    assert_eq!(literal.iter().next().unwrap().to_string(), "10.1.2.3:9");
    assert_eq!(s.events().len(), before);
    // A name the provider does not know is its status.
    assert_eq!(
        resolve(&reference, "nowhere.invalid", 7, Timeout::secs(1))
            .err()
            .map(NtError::status),
        Some(NtStatus::from_raw(0xC000_0225_u32.cast_signed()))
    );
    drop(reference);
    s.wait_work_items();
    s.driver_unload();
}

#[test]
fn names_are_not_resolved_below_1_1() {
    use wsk_client::resolve::resolve_blocking as resolve;

    let mut s = common::started();
    s.register_provider(ProviderConfig::wsk(
        wsk_host_model::WSK_1_0,
        wsk_host_model::WSK_1_0,
    ));
    let reference = BindingRef::<TestDriver>::acquire().unwrap();
    assert_eq!(
        resolve(&reference, "localhost", 7, Timeout::Never).err(),
        Some(NtError::NOT_SUPPORTED)
    );
    assert!(has_log(
        &s,
        "test_driver: resolve: the provider is below WSK 1.1 (no WskGetAddressInfo)"
    ));
    drop(reference);
    s.driver_unload();
}

#[test]
fn a_buffer_is_never_larger_than_one_mdl_can_describe() {
    use wsk_client::buffer::Buffer;
    // IoAllocateMdl: "the maximum buffer size ... is (4 gigabytes - PAGE_SIZE)".
    let mut s = common::started();
    for capacity in [0, Buffer::MAX_CAPACITY + 1, u32::MAX as usize] {
        assert_eq!(
            Buffer::new::<TestDriver>(capacity).err(),
            Some(NtError::INVALID_PARAMETER),
            "{capacity:#x}"
        );
    }
    assert!(s.live_allocations().is_empty(), "nothing allocated");
    assert!(
        s.log()
            .iter()
            .any(|l| l
                == "test_driver: buffer: a capacity of 0xFFFFF001 bytes is not 1 to 0xFFFFF000")
    );
    s.driver_unload();
}
