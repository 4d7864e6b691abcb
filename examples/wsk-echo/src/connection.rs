//! The echo driver's connection: one task, spawned once the driver is registered, takes a
//! binding reference and, when the parameters say where, makes one echo exchange — resolve or
//! parse `Host`, connect, send `Message`, receive as many bytes (or, with `Bytes`, stream that
//! many: [`crate::stream`]) — and logs exactly one of `echo ok, N bytes` (with `Bytes`: `echo ok,
//! N bytes in M ms`) or `echo failed: <step> 0x<NTSTATUS>`. The connection (its socket, or only
//! the reference without parameters) stays open until a detach or the unload begins; until then
//! a detach of the provider pends and the unload waits: the library's contract, exercised end to
//! end.
//!
//! The task awaits every request (no thread waits for the network): each step of the exchange
//! may take at most [`STEP`]. The stop — `on_detach`, for a provider's detach or the unload —
//! cancels the task: a pending request cancels its IRP and closes its socket (a provider that
//! ignores the cancel, as Wine's, completes the socket's requests at the close), so a stop
//! during a pending connect or receive ends at once with `echo failed: <step> 0xC0000120`; a
//! kept connection is disconnected (gracefully, within 500 ms), closed, and its reference let go
//! (`connection: reference released`).
//!
//! IRQL: [`start`] and [`on_detach`] at <= `DISPATCH_LEVEL`; the task runs at `PASSIVE_LEVEL`.

use core::ffi::CStr;
use core::future::{Future, poll_fn};
use core::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use core::sync::atomic::{AtomicBool, Ordering};
use core::task::Poll;

use wsk_client::buffer::Buffer;
use wsk_client::pool::Owned;
use wsk_client::socket::{Socket, TransferOp};
use wsk_client::sys::{AF_INET, AF_INET6};
use wsk_client::task::{self, TaskCell};
use wsk_client::time::Duration;
use wsk_client::{BindingRef, NtError, PoolTag, timer};

use crate::WskEcho;
use crate::values::Parameters;

/// The tag of the parameters' pool block (the task's, so that the task stays small).
pub(crate) const PARAMETERS_TAG: PoolTag = PoolTag::new(*b"EchP");

/// How long one step of the exchange may take.
pub(crate) const STEP: Duration = Duration::from_secs(5);

/// How long the stop lets a kept connection's graceful disconnect take before it closes it.
const DISCONNECT_GRACE: Duration = Duration::from_millis(500);

/// How long the exchange waits for a provider to attach: this many tries (10 s; without
/// parameters, one try), [`ATTACH_RETRY`] apart.
const ATTACH_TRIES: u32 = 100;
const ATTACH_RETRY: Duration = Duration::from_millis(100);

/// The connection's task, cancelled by the stop.
static TASK: TaskCell = TaskCell::new();

/// Whether the task holds the connection (tests).
static HELD: AtomicBool = AtomicBool::new(false);

/// Before the driver registers: no stop seen yet (a driver loaded again in one process: tests).
pub(crate) fn reset() {
    TASK.reset();
}

/// Spawns the task that opens the connection (and makes the exchange, given `parameters`).
///
/// # Errors
/// The task could not be spawned: logged as the exchange's result (`echo failed: start`), or as
/// a connection not kept when there is nothing to echo.
#[allow(clippy::large_types_passed_by_value)] // moved into the task, once
pub(crate) fn start(parameters: Option<Parameters>) -> Result<(), NtError> {
    let echo = parameters.is_some();
    let spawned = parameters
        .map(|parameters| Owned::try_new::<WskEcho>(parameters, PARAMETERS_TAG))
        .transpose()
        .and_then(|parameters| task::spawn::<WskEcho, _>(run(parameters)));
    match spawned {
        Ok(task) => {
            TASK.keep(task);
            Ok(())
        }
        Err(status) => {
            if echo {
                log_failed(c"start", status);
            } else {
                log_not_kept(c"start", status);
            }
            Err(status)
        }
    }
}

/// `Client::on_detach` of the echo driver: the stop — cancels the connection's task (a cancel
/// before the task is kept is remembered: [`TaskCell`]).
pub(crate) fn on_detach(_notice: wsk_client::DetachNotice) {
    TASK.cancel();
}

/// Why the exchange failed: the step and its status, logged as `echo failed: <step> 0x<status>`.
pub(crate) struct Failure {
    step: &'static CStr,
    status: NtError,
}

impl Failure {
    pub(crate) const fn new(step: &'static CStr, status: NtError) -> Self {
        Self { step, status }
    }

    /// A closure for `map_err`: `step` failed with the status it is given.
    pub(crate) fn at(step: &'static CStr) -> impl Fn(NtError) -> Self {
        move |status| Self::new(step, status)
    }
}

/// Logs the exchange's result line for a failed `step`.
pub(crate) fn log_failed(step: &CStr, status: NtError) {
    wsk_client::error!(WskEcho, "echo failed: %s 0x%08X", step, status.bits());
}

fn log_not_kept(what: &CStr, status: NtError) {
    wsk_client::error!(
        WskEcho,
        "connection: not kept: %s 0x%08X",
        what,
        status.bits()
    );
}

/// Whether the task is cancelled (the stop came).
async fn stopped() -> bool {
    poll_fn(|cx| Poll::Ready(task::is_cancelled(cx))).await
}

/// Tries `tries` times, [`ATTACH_RETRY`] apart, for a binding, unless the stop comes first
/// (`STATUS_CANCELLED`).
async fn acquire(tries: u32) -> Result<BindingRef<WskEcho>, NtError> {
    let mut last = NtError::DEVICE_NOT_READY;
    for attempt in 0..tries {
        if attempt > 0 {
            timer::sleep::<WskEcho>(ATTACH_RETRY).await?;
        }
        if stopped().await {
            return Err(NtError::CANCELLED);
        }
        match BindingRef::<WskEcho>::acquire() {
            Ok(reference) => return Ok(reference),
            Err(error) => last = NtError::from(error),
        }
    }
    Err(last)
}

/// One step of the exchange: unless the stop came (`STATUS_CANCELLED`, nothing requested), the
/// request `make` makes, within [`STEP`].
pub(crate) async fn step<T, F: Future<Output = Result<T, NtError>>>(
    name: &'static CStr,
    make: impl FnOnce() -> F,
) -> Result<T, Failure> {
    if stopped().await {
        return Err(Failure::new(name, NtError::CANCELLED));
    }
    match timer::timeout::<WskEcho, _>(STEP, make()).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(status)) | Err(status) => Err(Failure::new(name, status)),
    }
}

/// A send or receive, as [`step`]: the bytes moved and the buffer back.
pub(crate) async fn transfer<'s>(
    name: &'static CStr,
    make: impl FnOnce() -> TransferOp<'s, WskEcho>,
) -> Result<(usize, Buffer), Failure> {
    if stopped().await {
        return Err(Failure::new(name, NtError::CANCELLED));
    }
    match timer::timeout::<WskEcho, _>(STEP, make()).await {
        Ok((Ok(bytes), buffer)) => Ok((bytes, buffer)),
        Ok((Err(status), _)) | Err(status) => Err(Failure::new(name, status)),
    }
}

/// The exchange: connect, send the message, receive it back (or stream `Bytes`). Returns the
/// socket to keep.
async fn exchange(
    reference: &BindingRef<WskEcho>,
    parameters: &Parameters,
) -> Result<Socket<WskEcho>, Failure> {
    let addresses = step(c"resolve", || {
        wsk_client::resolve::resolve(reference, parameters.host(), parameters.port)
    })
    .await?;
    let remote = addresses
        .iter()
        .next()
        .ok_or(Failure::new(c"resolve", NtError::UNSUCCESSFUL))?;
    let (family, wildcard) = match remote {
        SocketAddr::V4(_) => (AF_INET, SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0)),
        SocketAddr::V6(_) => (AF_INET6, SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), 0)),
    };
    let socket = step(c"socket", || Socket::create(reference, family)).await?;
    step(c"bind", || socket.bind(wildcard)).await?;
    step(c"connect", || socket.connect(remote)).await?;
    let message = parameters.message();
    if let Some(total) = parameters.bytes() {
        // The bulk mode: `total` bytes, ended early by the stop.
        crate::stream::stream(&socket, message, total).await?;
        return Ok(socket);
    }
    if let Some(count) = parameters.round_trips() {
        // The latency mode: `count` round trips of the message, each timed.
        crate::latency::round_trips(&socket, message, count).await?;
        return Ok(socket);
    }
    let mut out = Buffer::new::<WskEcho>(message.len()).map_err(Failure::at(c"buffer"))?;
    crate::stream::fill(out.as_mut_slice(), message);
    let back = Buffer::new::<WskEcho>(message.len()).map_err(Failure::at(c"buffer"))?;
    // Both buffers go once the round trip is over, before its result line.
    drop(round_trip(&socket, out, back, message.len()).await?);
    #[allow(clippy::cast_possible_truncation)] // at most MAX_MESSAGE
    let n = message.len() as u32;
    wsk_client::info!(WskEcho, "echo ok, %u bytes", n);
    Ok(socket)
}

/// One round trip: sends the first `length` bytes of `out`, then receives into `back` until as
/// many came back, each piece checked against what was sent there; the buffers back.
///
/// IRQL: `PASSIVE_LEVEL` (in the connection's task).
pub(crate) async fn round_trip(
    socket: &Socket<WskEcho>,
    out: Buffer,
    mut back: Buffer,
    length: usize,
) -> Result<(Buffer, Buffer), Failure> {
    let (sent, out) = transfer(c"send", || socket.send(out, length)).await?;
    if sent != length {
        return Err(Failure::new(c"send", NtError::UNSUCCESSFUL));
    }
    let mut received = 0;
    while received < length {
        let (n, buffer) = transfer(c"receive", || socket.receive(back)).await?;
        back = buffer;
        if n == 0 {
            // The peer closed (or reset: Wine reports a reset as a 0-byte receive).
            return Err(Failure::new(c"receive", NtError::CONNECTION_ABORTED));
        }
        let expected = out.as_slice().get(received..length).unwrap_or(&[]);
        if n > expected.len() || back.as_slice().get(..n) != expected.get(..n) {
            return Err(Failure::new(c"compare", NtError::UNSUCCESSFUL));
        }
        received += n;
    }
    Ok((out, back))
}

/// Holds the connection until the stop, then closes it: a graceful disconnect given at most
/// [`DISCONNECT_GRACE`] (a provider that does not implement it, as Wine's, is logged by the
/// library), the close, then the reference.
async fn hold(reference: BindingRef<WskEcho>, socket: Option<Socket<WskEcho>>) {
    HELD.store(true, Ordering::Release);
    task::cancelled().await;
    if let Some(socket) = &socket {
        let _ = timer::grace::<WskEcho, _>(DISCONNECT_GRACE, socket.disconnect()).await;
    }
    // Not held from here on, before the drops: the last reference's drop may complete a
    // provider's detach, and whoever waited for that must find the connection gone.
    HELD.store(false, Ordering::Release);
    drop(socket);
    drop(reference);
    wsk_client::info!(WskEcho, "connection: reference released");
}

/// The connection's task.
async fn run(parameters: Option<Owned<Parameters>>) {
    // An echo to make waits for a provider that attaches late; holding a reference does not.
    let tries = if parameters.is_some() {
        ATTACH_TRIES
    } else {
        1
    };
    let reference = match acquire(tries).await {
        Ok(reference) => reference,
        Err(status) => {
            wsk_client::warning!(WskEcho, "connection: no provider: 0x%08X", status.bits());
            if parameters.is_some() {
                log_failed(c"attach", status);
            }
            return;
        }
    };
    let Some(parameters) = parameters else {
        wsk_client::info!(WskEcho, "connection: holding a binding reference");
        hold(reference, None).await;
        return;
    };
    match exchange(&reference, &parameters).await {
        Ok(socket) => hold(reference, Some(socket)).await,
        Err(Failure { step, status }) => log_failed(step, status),
    }
}

/// Whether the connection is held (tests).
#[cfg(test)]
pub(crate) fn is_open() -> bool {
    HELD.load(Ordering::Acquire)
}
/// The task's future is moved by value through `spawn` (its frames hold it): it stays well
/// under a page, or the kernel build needs `__chkstk`, which no driver image links (the link
/// fails), and kernel stacks are small (the parameters live in pool for this).
#[cfg(test)]
#[test]
fn the_task_is_small_enough_to_move_on_a_kernel_stack() {
    let size = core::mem::size_of_val(&run(None));
    assert!(size <= 2048, "the connection's task is {size} bytes");
}
