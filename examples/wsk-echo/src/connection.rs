//! The echo driver's connection: a work item queued once the driver is registered takes a
//! binding reference and, when the parameters say where, makes one echo exchange — resolve or
//! parse `Host`, connect, send `Message`, receive as many bytes (or, with `Bytes`, stream that
//! many: [`crate::stream`]) — and logs exactly one of `echo ok, N bytes` (with `Bytes`: `echo ok,
//! N bytes in M ms`) or `echo failed: <step> 0x<NTSTATUS>`. The connection (its socket, or only
//! the reference without parameters) stays open until a detach or the unload begins; then a work
//! item closes it (disconnect, close). Until then a detach of the provider pends and the unload
//! waits: the library's contract, exercised end to end.
//!
//! A stop during the exchange: every step waits at most [`STEP_TIMEOUT`]; a request the cancel
//! does not end (Wine ignores it) closes its socket, so the exchange always ends, and the unload,
//! which waits for its work item, with it.
//!
//! IRQL: [`start`] and [`on_detach`] at <= `DISPATCH_LEVEL` (they queue work items); the work runs
//! at `PASSIVE_LEVEL`.

use core::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

use wsk_client::buffer::Buffer;
use wsk_client::pool::PoolBox;
use wsk_client::socket::Socket;
use wsk_client::sys::{AF_INET, AF_INET6};
use wsk_client::time::Timeout;
use wsk_client::work::{self, Prepared, Work};
use wsk_client::{BindingRef, NtError, PoolTag, dbg_print};

use crate::WskEcho;
use crate::values::Parameters;

/// The tag of the connection's pool block.
pub(crate) const CONNECTION_TAG: PoolTag = PoolTag::new(*b"EchC");

/// How long one step of the exchange may take.
pub(crate) const STEP_TIMEOUT: Timeout = Timeout::secs(5);

/// How long the exchange waits for a provider to attach, in 100 ms steps (10 s; without
/// parameters, one try).
const ATTACH_TRIES: u32 = 100;

/// What the driver holds while connected.
enum Connection {
    /// Nothing yet (the block allocated before the exchange).
    Empty,
    /// No parameters: only the binding reference (held for its drop).
    Reference(#[allow(dead_code)] BindingRef<WskEcho>),
    /// The echo connection.
    Socket(Socket<WskEcho>),
}

/// The connection, in pool; NULL when there is none.
static CONNECTION: AtomicPtr<Connection> = AtomicPtr::new(ptr::null_mut());

/// A detach or the unload began: the exchange must not keep (or open) a connection.
static STOP: AtomicBool = AtomicBool::new(false);

/// Queues the work that opens the connection (and makes the exchange, given `parameters`).
///
/// # Errors
/// The work item could not be queued: logged as the exchange's result (`echo failed: start`), or
/// as a connection not kept when there is nothing to echo.
#[allow(clippy::large_types_passed_by_value)] // moved into the work item, once
pub(crate) fn start(parameters: Option<Parameters>) -> Result<(), NtError> {
    STOP.store(false, Ordering::Release);
    let echo = parameters.is_some();
    work::queue::<WskEcho, _>(Open { parameters }).inspect_err(|status| {
        if echo {
            log_failed(c"start", *status);
        } else {
            log_not_kept(c"start", *status);
        }
    })
}

/// `Client::on_detach` of the echo driver: stop, and close the connection from a work item.
pub(crate) fn on_detach(_notice: wsk_client::DetachNotice) {
    STOP.store(true, Ordering::SeqCst);
    // The close was prepared with the connection: queueing it cannot fail. None: no connection
    // is kept (or `keep` sees the stop and closes its own).
    if let Some(close) = NonNull::new(CLOSE.swap(ptr::null_mut(), Ordering::SeqCst)) {
        // SAFETY: CLOSE only holds `Prepared::<WskEcho, Close>::into_raw`, taken back once (swap).
        unsafe { Prepared::<WskEcho, Close>::from_raw(close) }.queue();
    }
}

/// The connection's close, prepared when it was kept (`Prepared::into_raw`); NULL when none.
static CLOSE: AtomicPtr<()> = AtomicPtr::new(ptr::null_mut());

/// Drops the prepared close, if it is still there (the connection was closed another way).
fn unprepare_close() {
    if let Some(close) = NonNull::new(CLOSE.swap(ptr::null_mut(), Ordering::SeqCst)) {
        // SAFETY: as in `on_detach`.
        drop(unsafe { Prepared::<WskEcho, Close>::from_raw(close) });
    }
}

/// Logs the exchange's result line for a failed `step`.
pub(crate) fn log_failed(step: &core::ffi::CStr, status: NtError) {
    // SAFETY: `%s` takes a NUL-terminated string, `%08X` the `u32`; no Unicode conversion.
    let _ = unsafe {
        dbg_print!(
            WskEcho,
            DPFLTR_ERROR_LEVEL,
            "echo failed: %s 0x%08X",
            step.as_ptr(),
            status.bits()
        )
    };
}

/// Keeps `connection` until the stop (or drops it now if the stop came first). `true` when kept.
fn keep(keeping: Keeping, connection: Connection) -> bool {
    let Keeping { close, slot } = keeping;
    // SAFETY: the slot is owned here and initialised (Empty, dropped by the assignment).
    unsafe { *slot.as_ptr() = connection };
    let raw = slot.into_raw();
    let kept = CONNECTION
        .compare_exchange(
            ptr::null_mut(),
            raw.as_ptr(),
            Ordering::SeqCst,
            Ordering::SeqCst,
        )
        .is_ok();
    // After the connection, before the stop check: a stop that finds no close here is one this
    // check sees (both SeqCst). (Unkept, the close is dropped unqueued below.)
    if kept {
        // One connection is kept at most (Open runs once): CLOSE was empty.
        CLOSE.store(close.into_raw().as_ptr(), Ordering::SeqCst);
    }
    if !kept || STOP.load(Ordering::SeqCst) {
        unprepare_close();
        // A stop came meanwhile (its Close may have found nothing): close it here.
        let mine = if kept {
            NonNull::new(CONNECTION.swap(ptr::null_mut(), Ordering::AcqRel))
        } else {
            Some(raw)
        };
        if let Some(mine) = mine {
            // SAFETY: a pointer from `into_raw` with CONNECTION_TAG, now this work's alone.
            drop(unsafe { PoolBox::from_raw::<WskEcho>(mine, CONNECTION_TAG) });
        }
        return false;
    }
    true
}

/// What keeping a connection takes, allocated before the exchange: keeping it (and the stop
/// path, which closes it) then allocates nothing, and a failure comes before any result line.
struct Keeping {
    close: Prepared<WskEcho, Close>,
    slot: PoolBox<Connection>,
}

/// Allocates what [`keep`] needs; a failure is logged as the step `what` failed with.
fn prepare_keeping(log: impl Fn(&core::ffi::CStr, NtError)) -> Option<Keeping> {
    let close = Prepared::<WskEcho, Close>::new(Close)
        .map_err(|status| log(c"work item", status))
        .ok()?;
    let slot = PoolBox::try_new::<WskEcho>(Connection::Empty, CONNECTION_TAG)
        .map_err(|status| log(c"pool", status))
        .ok()?;
    Some(Keeping { close, slot })
}

fn log_not_kept(what: &core::ffi::CStr, status: NtError) {
    // SAFETY: `%s` takes a NUL-terminated string, `%08X` the `u32`; no Unicode conversion.
    let _ = unsafe {
        dbg_print!(
            WskEcho,
            DPFLTR_ERROR_LEVEL,
            "connection: not kept: %s 0x%08X",
            what.as_ptr(),
            status.bits()
        )
    };
}

/// Tries `tries` times, 100 ms apart, for a binding, unless the stop comes first.
fn acquire(tries: u32) -> Result<BindingRef<WskEcho>, NtError> {
    let mut last = NtError::DEVICE_NOT_READY;
    for attempt in 0..tries {
        if attempt > 0 {
            sleep_100ms();
        }
        if STOP.load(Ordering::Acquire) {
            return Err(NtError::CANCELLED);
        }
        match BindingRef::<WskEcho>::acquire() {
            Ok(reference) => return Ok(reference),
            Err(error) => last = NtError::from(error),
        }
    }
    Err(last)
}

/// Sleeps 100 ms at `PASSIVE_LEVEL` (a wait on an event nobody sets).
fn sleep_100ms() {
    let mut event = wsk_client::sys::KEVENT { Header: [0; 3] };
    // SAFETY: an event on this thread's stack, used only here; PASSIVE_LEVEL.
    unsafe {
        wsk_client::sys::KeInitializeEvent(&raw mut event, wsk_client::sys::NotificationEvent, 0);
    };
    let timeout: i64 = -1_000_000;
    // SAFETY: the event above and a relative timeout, both valid for the call; PASSIVE_LEVEL.
    let _ = unsafe {
        wsk_client::sys::KeWaitForSingleObject(
            (&raw mut event).cast(),
            wsk_client::sys::Executive,
            wsk_client::sys::KernelMode,
            0,
            &raw const timeout,
        )
    };
}

/// One step's result: the error logged as `echo failed: <step> 0x<status>`.
pub(crate) fn step<T>(name: &core::ffi::CStr, result: Result<T, NtError>) -> Result<T, ()> {
    result.map_err(|status| log_failed(name, status))
}

/// The exchange: connect, send the message, receive it back. Returns the socket to keep.
fn exchange(
    reference: &BindingRef<WskEcho>,
    parameters: &Parameters,
) -> Result<Socket<WskEcho>, ()> {
    let addresses = step(
        c"resolve",
        wsk_client::resolve::resolve_blocking(
            reference,
            parameters.host(),
            parameters.port,
            STEP_TIMEOUT,
        ),
    )?;
    let remote = step(
        c"resolve",
        addresses.iter().next().ok_or(NtError::UNSUCCESSFUL),
    )?;
    let (family, wildcard) = match remote {
        SocketAddr::V4(_) => (AF_INET, SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0)),
        SocketAddr::V6(_) => (AF_INET6, SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), 0)),
    };
    let socket = step(
        c"socket",
        Socket::connection_blocking(reference, family, STEP_TIMEOUT),
    )?;
    step(c"bind", socket.bind_blocking(wildcard, STEP_TIMEOUT))?;
    step(c"connect", socket.connect_blocking(remote, STEP_TIMEOUT))?;
    let message = parameters.message();
    if let Some(total) = parameters.bytes() {
        // The bulk mode: `total` bytes, ended early by a stop.
        crate::stream::stream(&socket, message, total, || STOP.load(Ordering::Acquire))?;
        return Ok(socket);
    }
    let mut out = step(c"buffer", Buffer::new::<WskEcho>(message.len()))?;
    for (to, from) in out.as_mut_slice().iter_mut().zip(message) {
        *to = *from;
    }
    let sent = step(
        c"send",
        socket.send_blocking(&out, message.len(), STEP_TIMEOUT),
    )?;
    if sent != message.len() {
        log_failed(c"send", NtError::UNSUCCESSFUL);
        return Err(());
    }
    let mut back = step(c"buffer", Buffer::new::<WskEcho>(message.len()))?;
    let mut received = 0;
    while received < message.len() {
        let n = step(c"receive", socket.receive_blocking(&mut back, STEP_TIMEOUT))?;
        if n == 0 {
            // The peer closed (or reset: Wine reports a reset as a 0-byte receive).
            log_failed(c"receive", NtError::CONNECTION_ABORTED);
            return Err(());
        }
        if back.as_slice().get(..n) != message.get(received..received + n) {
            log_failed(c"compare", NtError::UNSUCCESSFUL);
            return Err(());
        }
        received += n;
    }
    #[allow(clippy::cast_possible_truncation)] // at most MAX_MESSAGE
    let n = received as u32;
    // SAFETY: `%u` takes the `u32`; no Unicode conversion.
    let _ = unsafe { dbg_print!(WskEcho, DPFLTR_INFO_LEVEL, "echo ok, %u bytes", n) };
    Ok(socket)
}

struct Open {
    parameters: Option<Parameters>,
}

impl Work for Open {
    fn run(self) {
        // An echo to make waits for a provider that attaches late; holding a reference does not.
        let tries = if self.parameters.is_some() {
            ATTACH_TRIES
        } else {
            1
        };
        let reference = match acquire(tries) {
            Ok(reference) => reference,
            Err(status) => {
                // SAFETY: `%08X` takes the `u32`; no Unicode conversion.
                let _ = unsafe {
                    dbg_print!(
                        WskEcho,
                        DPFLTR_WARNING_LEVEL,
                        "connection: no provider: 0x%08X",
                        status.bits()
                    )
                };
                if self.parameters.is_some() {
                    log_failed(c"attach", status);
                }
                return;
            }
        };
        let Some(parameters) = self.parameters else {
            let Some(keeping) = prepare_keeping(log_not_kept) else {
                return;
            };
            if keep(keeping, Connection::Reference(reference)) {
                // SAFETY: no argument; no Unicode conversion.
                let _ = unsafe {
                    dbg_print!(
                        WskEcho,
                        DPFLTR_INFO_LEVEL,
                        "connection: holding a binding reference"
                    )
                };
            }
            return;
        };
        let Some(keeping) = prepare_keeping(log_failed) else {
            return;
        };
        if let Ok(socket) = exchange(&reference, &parameters) {
            let _ = keep(keeping, Connection::Socket(socket));
        }
    }
}

struct Close;

impl Work for Close {
    fn run(self) {
        let Some(raw) = NonNull::new(CONNECTION.swap(ptr::null_mut(), Ordering::AcqRel)) else {
            return;
        };
        // SAFETY: CONNECTION only ever holds a pointer from `PoolBox::into_raw` with
        // CONNECTION_TAG, and the swap above made it this work's alone.
        let connection = unsafe { PoolBox::from_raw::<WskEcho>(raw, CONNECTION_TAG) };
        // SAFETY: owned here; the value is initialised.
        if let Connection::Socket(socket) = unsafe { &*connection.as_ptr() } {
            // A graceful disconnect first; a provider without one is logged by the library.
            let _ = socket.disconnect_blocking(STEP_TIMEOUT);
        }
        drop(connection);
        // SAFETY: no argument; no Unicode conversion.
        let _ = unsafe { dbg_print!(WskEcho, DPFLTR_INFO_LEVEL, "connection: reference released") };
    }
}

/// Whether the connection is held (tests).
#[cfg(test)]
pub(crate) fn is_open() -> bool {
    !CONNECTION.load(Ordering::Acquire).is_null()
}
