//! The asynchronous forms of a socket's operations (issue 17): each returns a future, driven by
//! its request's completion routine ([`crate::irp`]'s `Op`), to await in a task
//! ([`crate::task`]). An operation takes what the provider borrows by value — the [`Buffer`], the
//! address — and keeps it in its request until the provider is done with it; a completed
//! operation hands the buffer back with its result (`(Result<usize, NtError>, Buffer)`, as
//! completion-based I/O libraries do), so that dropping a pending operation is sound: the drop
//! cancels its IRP and the request frees the buffer once the provider completed it. Several
//! operations may be in flight on one socket at once (a send beside a receive).
//!
//! In a cancelled task (the unload began) a pending operation cancels its IRP and closes its
//! socket (`Socket::abort`, once no call of the socket's functions is in progress), then goes on
//! waiting for the provider to complete it: `STATUS_CANCELLED` usually, whatever the provider
//! (Wine's ignores the cancel, and completes the socket's IRPs at the close).
//!
//! IRQL: making and polling at <= `DISPATCH_LEVEL` (`WskSend`, `WskReceive`, `WskConnect`,
//! `WskBind`, `WskDisconnect`, `WskSocket` all allow it); a task polls at `PASSIVE_LEVEL`.

use core::ffi::CStr;
use core::future::Future;
use core::net::SocketAddr;
use core::pin::Pin;
use core::ptr;
use core::task::{Context, Poll};

use super::{Owned, Sockaddr, Socket};
use crate::buffer::Buffer;
use crate::client::Client;
use crate::irp::{self, Kept, Op, Outcome};
use crate::log::log;
use crate::status::{NtError, NtStatus};
use crate::sys::{WSK_BUF, WSK_SOCKET};
use crate::task;

/// What a send or receive owns while in flight: the buffer and the `WSK_BUF` describing it.
pub(super) struct Transfer {
    buffer: Buffer,
    wsk_buf: WSK_BUF,
}

// SAFETY: the `WSK_BUF` points at the buffer's own MDL, which moves with it.
unsafe impl Send for Transfer {}

impl Transfer {
    fn new(buffer: Buffer, length: usize) -> Self {
        let wsk_buf = buffer.wsk_buf(length);
        Self { buffer, wsk_buf }
    }
}

/// The result of a provider's answer to `what`, logged (the waited forms' too).
pub(super) fn finish<C: Client>(
    what: &CStr,
    status: NtStatus,
    information: usize,
) -> Result<usize, NtError> {
    let Err(error) = status.into_result() else {
        return Ok(information);
    };
    if error == NtError::CANCELLED {
        // Cancelled: the caller's doing (a dropped operation, a cancelled task, the stop), not a
        // failure of the provider's.
        log!(C, DPFLTR_INFO_LEVEL, "socket: %s cancelled", what);
    } else if error == NtError::NOT_IMPLEMENTED {
        log!(
            C,
            DPFLTR_WARNING_LEVEL,
            "socket: the provider does not implement %s (0x%08X)",
            what,
            error.bits()
        );
    } else {
        log!(
            C,
            DPFLTR_ERROR_LEVEL,
            "socket: %s failed: 0x%08X",
            what,
            error.bits()
        );
    }
    Err(error)
}

/// An operation that could not be requested, logged.
pub(super) fn not_requested<C: Client>(what: &CStr, error: NtError) -> NtError {
    log!(
        C,
        DPFLTR_ERROR_LEVEL,
        "socket: %s not requested: 0x%08X",
        what,
        error.bits()
    );
    error
}

/// A byte count from the provider, checked against what the buffer holds (a count beyond it is
/// the provider's error, answered cleanly).
pub(super) fn transferred<C: Client>(
    what: &CStr,
    result: Result<usize, NtError>,
    most: usize,
) -> Result<usize, NtError> {
    match result {
        Ok(bytes) if bytes > most => {
            log!(
                C,
                DPFLTR_ERROR_LEVEL,
                "socket: %s reported %llu bytes, more than the %llu asked for",
                what,
                bytes as u64,
                most as u64
            );
            Err(NtError::UNSUCCESSFUL)
        }
        other => other,
    }
}

/// In a cancelled task (the unload began), a pending operation closes its socket: its request
/// cancelled its IRP already, and a provider that ignores the cancel (Wine's) completes every IRP
/// of a socket when the socket closes. So a cancelled task's operations end promptly.
pub(super) fn abort_if_cancelled<C: Client>(socket: &Socket<C>, cx: &Context<'_>) {
    if task::is_cancelled(cx) {
        socket.abort();
    }
}

/// A send or receive in flight: see [`Socket::send`] and [`Socket::receive`].
#[must_use = "a future does nothing unless awaited"]
pub struct TransferOp<'s, C: Client> {
    op: Op<C, Transfer>,
    what: &'static CStr,
    most: usize,
    socket: &'s Socket<C>,
}

/// Polls a transfer's request on `socket`: the byte count (checked against `most`) and what the
/// request owned, once the provider answered; a pending one in a cancelled task closes the
/// socket. (A send or receive, and a datagram's.)
pub(super) fn poll_transfer<C: Client, T>(
    op: &mut Op<C, T>,
    cx: &mut Context<'_>,
    socket: &Socket<C>,
    what: &CStr,
    most: usize,
) -> Poll<(Result<usize, NtError>, T)> {
    match Pin::new(op).poll(cx) {
        Poll::Pending => {
            abort_if_cancelled(socket, cx);
            Poll::Pending
        }
        Poll::Ready(Ok(Outcome {
            status,
            information,
            owned,
        })) => {
            let result = finish::<C>(what, status, information);
            Poll::Ready((transferred::<C>(what, result, most), owned))
        }
        Poll::Ready(Err((status, owned))) => {
            Poll::Ready((Err(not_requested::<C>(what, status)), owned))
        }
    }
}

impl<C: Client> Future for TransferOp<'_, C> {
    /// The bytes sent or received (0 received: the peer closed its side), and the buffer back.
    type Output = (Result<usize, NtError>, Buffer);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        poll_transfer(&mut this.op, cx, this.socket, this.what, this.most)
            .map(|(result, owned)| (result, owned.buffer))
    }
}

/// A bind, connect or disconnect in flight: see [`Socket::bind`], [`Socket::connect`],
/// [`Socket::disconnect`].
#[must_use = "a future does nothing unless awaited"]
pub struct SocketOp<'s, C: Client> {
    op: Op<C, Owned>,
    what: &'static CStr,
    socket: &'s Socket<C>,
    /// Whether a cancelled task's pending operation closes the socket (not a disconnect: the
    /// way a socket ends, bounded by its caller: [`crate::timer::grace`]).
    abort_when_cancelled: bool,
}

impl<'s, C: Client> SocketOp<'s, C> {
    /// `what` on `socket`, closing it when pending in a cancelled task.
    pub(super) fn new(op: Op<C, Owned>, what: &'static CStr, socket: &'s Socket<C>) -> Self {
        Self {
            op,
            what,
            socket,
            abort_when_cancelled: true,
        }
    }
}

impl<C: Client> Future for SocketOp<'_, C> {
    type Output = Result<(), NtError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match Pin::new(&mut this.op).poll(cx) {
            Poll::Pending => {
                if this.abort_when_cancelled {
                    abort_if_cancelled(this.socket, cx);
                }
                Poll::Pending
            }
            Poll::Ready(Ok(outcome)) => {
                Poll::Ready(finish::<C>(this.what, outcome.status, outcome.information).map(|_| ()))
            }
            Poll::Ready(Err((status, _))) => {
                Poll::Ready(Err(not_requested::<C>(this.what, status)))
            }
        }
    }
}

impl<C: Client> Socket<C> {
    /// Starts `what` through this socket's reference: `call` gets the socket, what the request
    /// owns and its IRP.
    pub(super) fn start<T: Send + 'static>(
        &self,
        owned: T,
        call: impl FnOnce(*mut WSK_SOCKET, &mut T, *mut crate::sys::IRP) -> crate::sys::NTSTATUS,
    ) -> Op<C, T> {
        self.start_or_orphan(owned, call, irp::drop_orphan)
    }

    /// [`Socket::start`] with the request kept for this kind of operation (`kept`, the socket's
    /// or its datagram socket's): reused, so that a steady exchange allocates nothing (a one-time
    /// request when it is busy).
    pub(super) fn start_kept<T: Send + 'static>(
        &self,
        kept: &Kept<C, T>,
        transfer: T,
        call: impl FnOnce(*mut WSK_SOCKET, &mut T, *mut crate::sys::IRP) -> crate::sys::NTSTATUS,
    ) -> Op<C, T> {
        let Some(reference) = self.open_reference() else {
            return Op::failed(NtError::CONNECTION_ABORTED, transfer);
        };
        let socket = self.socket.as_ptr();
        // The call counted as in progress: an abort meanwhile closes the socket after it.
        if !self.enter_call() {
            return Op::failed(NtError::CONNECTION_ABORTED, transfer);
        }
        let op = kept.start(
            reference,
            transfer,
            |_, transfer, irp| call(socket, transfer, irp),
            irp::drop_orphan,
        );
        self.leave_call();
        op
    }

    /// [`Socket::start`], with `orphaned` given what the request owns, and its result, when the
    /// `Op` was dropped before the provider answered.
    pub(super) fn start_or_orphan<T: Send + 'static>(
        &self,
        owned: T,
        call: impl FnOnce(*mut WSK_SOCKET, &mut T, *mut crate::sys::IRP) -> crate::sys::NTSTATUS,
        orphaned: fn(T, NtStatus, usize),
    ) -> Op<C, T> {
        let Some(reference) = self.open_reference() else {
            return Op::failed(NtError::CONNECTION_ABORTED, owned);
        };
        let socket = self.socket.as_ptr();
        // The call counted as in progress: an abort meanwhile closes the socket after it.
        if !self.enter_call() {
            return Op::failed(NtError::CONNECTION_ABORTED, owned);
        }
        let op = irp::start_held(
            reference,
            owned,
            |_, owned, irp| call(socket, owned, irp),
            orphaned,
        );
        self.leave_call();
        op
    }

    /// `WskSend` of the first `length` bytes of `buffer` (at most its capacity): the bytes sent,
    /// and the buffer back.
    pub fn send(&self, buffer: Buffer, length: usize) -> TransferOp<'_, C> {
        let length = length.min(buffer.capacity());
        let transfer = Transfer::new(buffer, length);
        let op = match self
            .dispatch()
            .and_then(|d| d.WskSend.ok_or(NtError::NOT_SUPPORTED))
        {
            Ok(send) => self.start_kept(&self.sends, transfer, |socket, transfer, irp| {
                // SAFETY: the open socket's WskSend, with a WSK_BUF within the buffer's MDL, both
                // kept by the request until the provider completed its IRP.
                unsafe { send(socket, &raw mut transfer.wsk_buf, 0, irp) }
            }),
            Err(status) => Op::failed(status, transfer),
        };
        TransferOp {
            op,
            what: c"WskSend",
            most: length,
            socket: self,
        }
    }

    /// `WskReceive` into `buffer` (up to its capacity): the bytes received (0: the peer closed its
    /// side), and the buffer back.
    pub fn receive(&self, buffer: Buffer) -> TransferOp<'_, C> {
        let length = buffer.capacity();
        let transfer = Transfer::new(buffer, length);
        let op = match self
            .dispatch()
            .and_then(|d| d.WskReceive.ok_or(NtError::NOT_SUPPORTED))
        {
            Ok(receive) => self.start_kept(&self.receives, transfer, |socket, transfer, irp| {
                // SAFETY: as in `send`; the buffer is the request's alone until it completes.
                unsafe { receive(socket, &raw mut transfer.wsk_buf, 0, irp) }
            }),
            Err(status) => Op::failed(status, transfer),
        };
        TransferOp {
            op,
            what: c"WskReceive",
            most: length,
            socket: self,
        }
    }

    /// `WskBind` to `local` (a client binds the wildcard address of its family, port 0).
    pub fn bind(&self, local: SocketAddr) -> SocketOp<'_, C> {
        let op = match self
            .dispatch()
            .and_then(|d| d.WskBind.ok_or(NtError::NOT_SUPPORTED))
        {
            Ok(bind) => self.start(
                Owned::Address(Sockaddr::new(local)),
                |socket, address, irp| {
                    let address = address.address();
                    // SAFETY: the open socket's WskBind, with an address the request keeps until the
                    // provider completed its IRP.
                    unsafe { bind(socket, address, 0, irp) }
                },
            ),
            Err(status) => Op::failed(status, Owned::Nothing),
        };
        SocketOp {
            op,
            what: c"WskBind",
            socket: self,
            abort_when_cancelled: true,
        }
    }

    /// `WskConnect` to `remote`.
    pub fn connect(&self, remote: SocketAddr) -> SocketOp<'_, C> {
        let op = match self
            .dispatch()
            .and_then(|d| d.WskConnect.ok_or(NtError::NOT_SUPPORTED))
        {
            Ok(connect) => {
                self.start(
                    Owned::Address(Sockaddr::new(remote)),
                    |socket, address, irp| {
                        let address = address.address();
                        // SAFETY: as in `bind`.
                        unsafe { connect(socket, address, 0, irp) }
                    },
                )
            }
            Err(status) => Op::failed(status, Owned::Nothing),
        };
        SocketOp {
            op,
            what: c"WskConnect",
            socket: self,
            abort_when_cancelled: true,
        }
    }

    /// `WskDisconnect` (graceful). A provider that does not implement it (Wine's answers
    /// `STATUS_NOT_IMPLEMENTED`) is logged; the socket is closed anyway when dropped. Unlike the
    /// other operations, a disconnect pending in a cancelled task does not close its socket: it
    /// is how a task ends its connection once cancelled, within a bound of its own
    /// ([`crate::timer::grace`]); dropping it cancels it.
    pub fn disconnect(&self) -> SocketOp<'_, C> {
        let op = match self.dispatch().map(|d| d.WskDisconnect) {
            Ok(Some(disconnect)) => self
                .start(Owned::Nothing, |socket, _, irp| {
                    // SAFETY: the open socket's WskDisconnect, without a final buffer.
                    unsafe { disconnect(socket, ptr::null_mut(), 0, irp) }
                })
                .outlasting_cancel(),
            Ok(None) => {
                log!(
                    C,
                    DPFLTR_WARNING_LEVEL,
                    "socket: no WskDisconnect; closing without it"
                );
                Op::failed(NtError::NOT_SUPPORTED, Owned::Nothing)
            }
            Err(status) => Op::failed(status, Owned::Nothing),
        };
        SocketOp {
            op,
            what: c"WskDisconnect",
            socket: self,
            abort_when_cancelled: false,
        }
    }
}
