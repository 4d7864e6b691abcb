//! The echo server: one listening task and one task per connection, all cancelled by the stop.
//!
//! The listening task takes a binding reference (waiting up to 10 s for a provider), creates a
//! listening socket, sets `SO_EXCLUSIVEADDRUSE` on it (a provider without socket options —
//! Wine's — is said once: `options: SO_EXCLUSIVEADDRUSE not set (0x<NTSTATUS>): no socket
//! options, no TCP_NODELAY`) and binds it (it then listens), logs `listening on <address>:<port>` (or
//! `listen failed: <step> 0x<NTSTATUS>`), and accepts in a loop. Each connection is numbered
//! from 1 and logged `accepted #N from <address>:<port>`; past `MaxConnections` running at once
//! it is closed at once (`connection #N refused: too many connections`). Otherwise a task of its
//! own echoes it ([`echo`]), with `TCP_NODELAY` set when the provider has options, and its
//! receive events on (`accept_with_events`, `enable_receive_events`: the provider's data lands
//! in the socket's ring; a provider without events — Wine's — is said once, `events: no receive
//! events (0x<NTSTATUS>): accepting and receiving with IRPs`, and the server goes on with
//! `WskAccept`/`WskReceive`): a read, then sends until all of it went back, until the peer
//! closes (`connection #N closed: M bytes echoed`) or something fails (`connection #N failed:
//! <step> 0x<NTSTATUS>`). A peer that never reads stalls only its own task.
//!
//! A third task echoes UDP on the same address and port (RFC 862's other half): each datagram
//! back to its sender (`udp: echoing on <address>:<port>`, at the stop `udp: closed: N datagrams
//! echoed`); a provider without datagram sockets (Wine's) is said, `udp: not served: socket
//! 0xC0000002`, and the TCP echo goes on.
//!
//! The stop (`on_detach`: a provider's detach or the unload) cancels the listening task, the UDP
//! task and every connection's ([`TaskCell`], [`TaskSet`]): a pending accept, receive or send closes its
//! socket, so every task ends at once; the unload waits for them. A connection ended by the stop
//! is `closed`, not `failed`.
//!
//! IRQL: [`start`], [`stop`] at <= `DISPATCH_LEVEL`; the tasks run at `PASSIVE_LEVEL`.

use core::ffi::CStr;
use core::future::poll_fn;
use core::net::SocketAddr;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use core::task::Poll;

use wsk_client::buffer::Buffer;
use wsk_client::socket::{Datagram, Listener, Socket, SocketOption};
use wsk_client::sys::{AF_INET, AF_INET6};
use wsk_client::task::{self, TaskCell, TaskSet};
use wsk_client::text::AddressText;
use wsk_client::time::Duration;
use wsk_client::{BindingRef, NtError, timer};

use crate::WskEchoServer;
use crate::parameters::Parameters;

/// The most connections served at once (`MaxConnections` may not exceed it).
pub(crate) const MAX_CONNECTIONS: usize = 64;

/// How many bytes one receive takes.
const CHUNK: usize = 4096;

/// How long the stop lets a connection's graceful disconnect take before it closes it.
const DISCONNECT_GRACE: Duration = Duration::from_millis(500);

/// How long the listening task waits for a provider: this many tries, [`ATTACH_RETRY`] apart.
const ATTACH_TRIES: u32 = 100;
const ATTACH_RETRY: Duration = Duration::from_millis(100);

/// Accept failures in a row after which the server stops listening (each logged; a pause of
/// [`ATTACH_RETRY`] between them).
const ACCEPT_FAILURES: u32 = 5;

/// The listening task.
static LISTENER: TaskCell = TaskCell::new();

/// The UDP echo's task.
static UDP: TaskCell = TaskCell::new();

/// The largest datagram echoed whole (a longer one is cut to it, as UDP cuts to a receiver's
/// buffer).
const DATAGRAM: usize = 2048;

/// The connections' tasks.
static CONNECTIONS: TaskSet<MAX_CONNECTIONS> = TaskSet::new();

/// The last connection number given.
static ACCEPTED: AtomicU32 = AtomicU32::new(0);

/// Whether connections are accepted with receive events (until the provider says it has none).
static EVENTS: AtomicBool = AtomicBool::new(true);

/// Before the driver registers: no stop seen yet, no connection (a driver loaded again in one
/// process: tests).
pub(crate) fn reset() {
    LISTENER.reset();
    UDP.reset();
    CONNECTIONS.reset();
    ACCEPTED.store(0, Ordering::Relaxed);
    EVENTS.store(true, Ordering::Relaxed);
}

/// Spawns the listening task (a failure is logged: `listen failed: start`).
pub(crate) fn start(parameters: Parameters) {
    match task::spawn::<WskEchoServer, _>(listen(parameters)) {
        Ok(task) => LISTENER.keep(task),
        Err(status) => log_listen_failed(c"start", status),
    }
    match task::spawn::<WskEchoServer, _>(udp(parameters.address)) {
        Ok(task) => UDP.keep(task),
        Err(status) => log_udp_not_served(c"start", status),
    }
}

/// The stop: cancels the listening task and every connection's (a cancel that comes before a
/// task is kept is remembered).
pub(crate) fn stop() {
    LISTENER.cancel();
    UDP.cancel();
    CONNECTIONS.cancel();
}

/// Logs the server's result line for a failed `step`.
pub(crate) fn log_listen_failed(step: &CStr, status: NtError) {
    wsk_client::error!(
        WskEchoServer,
        "listen failed: %s 0x%08X",
        step,
        status.bits()
    );
}

/// Whether the task is cancelled (the stop came).
async fn stopped() -> bool {
    poll_fn(|cx| Poll::Ready(task::is_cancelled(cx))).await
}

/// Tries [`ATTACH_TRIES`] times for a binding, unless the stop comes first.
async fn acquire() -> Result<BindingRef<WskEchoServer>, NtError> {
    let mut last = NtError::DEVICE_NOT_READY;
    for attempt in 0..ATTACH_TRIES {
        if attempt > 0 {
            timer::sleep::<WskEchoServer>(ATTACH_RETRY).await?;
        }
        if stopped().await {
            return Err(NtError::CANCELLED);
        }
        match BindingRef::<WskEchoServer>::acquire() {
            Ok(reference) => return Ok(reference),
            Err(error) => last = NtError::from(error),
        }
    }
    Err(last)
}

/// The listening socket, bound to the parameters' address (it then listens), and whether the
/// provider takes socket options.
async fn open(
    reference: &BindingRef<WskEchoServer>,
    address: SocketAddr,
) -> Result<(Listener<WskEchoServer>, bool), (&'static CStr, NtError)> {
    let family = match address {
        SocketAddr::V4(_) => AF_INET,
        SocketAddr::V6(_) => AF_INET6,
    };
    let listener = Listener::create(reference, family)
        .await
        .map_err(|status| (c"socket", status))?;
    // No other socket may take the address while the server listens (Microsoft's advice for a
    // server). A provider without options (Wine's) is said, and the server goes on without.
    let options = listener
        .set_option(SocketOption::ExclusiveAddressUse(true))
        .await;
    listener
        .bind(address)
        .await
        .map_err(|status| (c"bind", status))?;
    if let Err(status) = options {
        wsk_client::warning!(
            WskEchoServer,
            "options: SO_EXCLUSIVEADDRUSE not set (0x%08X): no socket options, no TCP_NODELAY",
            status.bits()
        );
    }
    Ok((listener, options.is_ok()))
}

/// The listening task.
async fn listen(parameters: Parameters) {
    let reference = match acquire().await {
        Ok(reference) => reference,
        Err(status) => return log_listen_failed(c"attach", status),
    };
    let (listener, options) = match open(&reference, parameters.address).await {
        Ok(opened) => opened,
        Err((step, status)) => return log_listen_failed(step, status),
    };
    let text = AddressText::new(parameters.address);
    wsk_client::info!(WskEchoServer, "listening on %s", &text);
    let mut failures = 0;
    loop {
        let accept = if EVENTS.load(Ordering::Relaxed) {
            listener.accept_with_events()
        } else {
            listener.accept()
        };
        match accept.await {
            Ok((socket, remote)) => {
                failures = 0;
                serve(socket, remote, parameters.max_connections, options);
            }
            Err(_) if stopped().await => break,
            Err(status) => {
                failures += 1;
                if failures == ACCEPT_FAILURES {
                    log_listen_failed(c"accept", status);
                    break;
                }
                if timer::sleep::<WskEchoServer>(ATTACH_RETRY).await.is_err() {
                    break;
                }
            }
        }
    }
    listener.close();
    drop(reference);
}

/// An accepted connection: numbered, logged, and echoed by a task of its own, unless
/// `max_connections` are running already (then closed).
fn serve(socket: Socket<WskEchoServer>, remote: SocketAddr, max_connections: u32, options: bool) {
    let id = ACCEPTED.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
    let text = AddressText::new(remote);
    wsk_client::info!(WskEchoServer, "accepted #%u from %s", id, &text);
    if CONNECTIONS.running() >= max_connections as usize {
        wsk_client::warning!(
            WskEchoServer,
            "connection #%u refused: too many connections",
            id
        );
        socket.close();
        return;
    }
    match task::spawn::<WskEchoServer, _>(connection(id, socket, options)) {
        Ok(task) => {
            if let Err(task) = CONNECTIONS.keep(task) {
                // Every slot runs a task (MAX_CONNECTIONS caps MaxConnections): not reached;
                // the task is cancelled rather than left unstoppable.
                task.cancel();
            }
        }
        Err(status) => log_connection_failed(id, c"start", status),
    }
}

fn log_connection_failed(id: u32, step: &CStr, status: NtError) {
    wsk_client::error!(
        WskEchoServer,
        "connection #%u failed: %s 0x%08X",
        id,
        step,
        status.bits()
    );
}

/// A connection's task: `TCP_NODELAY` (when the provider takes `options`), then echoes until
/// the peer closes, fails, or the stop; then a graceful disconnect (bounded by
/// [`DISCONNECT_GRACE`]) and the close.
async fn connection(id: u32, socket: Socket<WskEchoServer>, options: bool) {
    let mut echoed: u64 = 0;
    if options {
        // An echo answers at once: no Nagle delay (a failure is logged by the library).
        let _ = socket.set_option(SocketOption::NoDelay(true)).await;
    }
    if EVENTS.load(Ordering::Relaxed) {
        receive_events(&socket);
    }
    let result = echo(&socket, &mut echoed).await;
    let _ = timer::grace::<WskEchoServer, _>(DISCONNECT_GRACE, socket.disconnect()).await;
    socket.close();
    match result {
        // The stop ended it: closed by the server, not failed.
        Err((_, NtError::CANCELLED)) | Ok(()) => {
            wsk_client::info!(
                WskEchoServer,
                "connection #%u closed: %llu bytes echoed",
                id,
                echoed
            );
        }
        Err((step, status)) => log_connection_failed(id, step, status),
    }
}

/// Turns on the connection's receive events; a provider without them (Wine's) is said once, and
/// the next connections are accepted without (their reads are `WskReceive`s).
fn receive_events(socket: &Socket<WskEchoServer>) {
    if let Err(status) = socket.enable_receive_events()
        && EVENTS.swap(false, Ordering::Relaxed)
    {
        wsk_client::warning!(
            WskEchoServer,
            "events: no receive events (0x%08X): accepting and receiving with IRPs",
            status.bits()
        );
    }
}

/// Echoes every byte received, in order, counting them into `echoed`, until the peer closes its
/// side (a 0-byte receive).
async fn echo(
    socket: &Socket<WskEchoServer>,
    echoed: &mut u64,
) -> Result<(), (&'static CStr, NtError)> {
    let mut buffer = Buffer::new::<WskEchoServer>(CHUNK).map_err(|status| (c"buffer", status))?;
    loop {
        let (received, back) = socket.read(buffer).await;
        buffer = back;
        let length = received.map_err(|status| (c"receive", status))?;
        if length == 0 {
            return Ok(());
        }
        let mut left = length;
        while left > 0 {
            let (result, back) = socket.send(buffer, left).await;
            buffer = back;
            // At most `left` (the library refuses a provider's count past what it was given).
            let sent = result.map_err(|status| (c"send", status))?;
            if sent == 0 {
                return Err((c"send", NtError::CONNECTION_ABORTED));
            }
            *echoed += sent as u64;
            left = left.saturating_sub(sent);
            // What is left goes to the start of the buffer (a send starts there).
            move_to_front(buffer.as_mut_slice(), sent, left);
        }
    }
}

/// Moves the `length` bytes at `from` to the start of `bytes` (without a panic path: bytes past
/// the end are not there to move).
fn move_to_front(bytes: &mut [u8], from: usize, length: usize) {
    for i in 0..length {
        if let Some(&byte) = bytes.get(from + i)
            && let Some(slot) = bytes.get_mut(i)
        {
            *slot = byte;
        }
    }
}

fn log_udp_not_served(step: &CStr, status: NtError) {
    wsk_client::warning!(
        WskEchoServer,
        "udp: not served: %s 0x%08X",
        step,
        status.bits()
    );
}

/// The UDP echo (RFC 862's other half) on the same address and port: each datagram goes back to
/// its sender, until the stop. A provider without datagram sockets (Wine's) is said (`udp: not
/// served: socket 0xC0000002`) and the TCP echo goes on.
async fn udp(address: SocketAddr) {
    let reference = match acquire().await {
        Ok(reference) => reference,
        Err(status) => return log_udp_not_served(c"attach", status),
    };
    let family = match address {
        SocketAddr::V4(_) => AF_INET,
        SocketAddr::V6(_) => AF_INET6,
    };
    let socket = match Datagram::create(&reference, family).await {
        Ok(socket) => socket,
        Err(status) => return log_udp_not_served(c"socket", status),
    };
    if let Err(status) = socket.bind(address).await {
        return log_udp_not_served(c"bind", status);
    }
    let mut buffer = match Buffer::new::<WskEchoServer>(DATAGRAM) {
        Ok(buffer) => buffer,
        Err(status) => return log_udp_not_served(c"buffer", status),
    };
    let text = AddressText::new(address);
    wsk_client::info!(WskEchoServer, "udp: echoing on %s", &text);
    let mut echoed: u32 = 0;
    loop {
        let (received, back) = socket.receive_from(buffer).await;
        buffer = back;
        let (length, sender) = match received {
            Ok(datagram) => datagram,
            Err(_) if stopped().await => break,
            Err(status) => {
                wsk_client::error!(WskEchoServer, "udp: receive failed: 0x%08X", status.bits());
                break;
            }
        };
        let (sent, back) = socket.send_to(buffer, length, sender).await;
        buffer = back;
        if sent.is_ok() {
            echoed = echoed.wrapping_add(1);
        }
    }
    socket.close();
    drop(reference);
    wsk_client::info!(WskEchoServer, "udp: closed: %u datagrams echoed", echoed);
}
