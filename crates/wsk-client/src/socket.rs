//! Sockets: what a driver attaches to WSK for. A [`Socket`] holds a binding reference for its whole
//! life, so a detach (and the unload) waits until it is closed, and [`crate::Client::on_detach`] is
//! where the driver closes it.
//!
//! This is the start of the socket API: create a connection socket, and close it — explicitly with
//! [`Socket::close`], or by dropping it. Both queue `WskCloseSocket` with a request whose completion
//! drops the socket's binding reference (`crate::irp`), so a close never blocks and may run at
//! `DISPATCH_LEVEL`.
//!
//! IRQL: [`Socket::connection`] at `PASSIVE_LEVEL` (it waits); closing and dropping at
//! <= `DISPATCH_LEVEL`.

use core::ptr::{self, NonNull};

use crate::client::Client;
use crate::irp::{self, Completion};
use crate::log::log;
use crate::provider::BindingRef;
use crate::status::NtStatus;
use crate::sys::{
    IPPROTO_TCP, SOCK_STREAM, WSK_FLAG_CONNECTION_SOCKET, WSK_PROVIDER_BASIC_DISPATCH, WSK_SOCKET,
};

/// An open WSK socket of client `C`.
pub struct Socket<C: Client> {
    // INVARIANT: a socket the provider created for this binding, not closed yet.
    socket: NonNull<WSK_SOCKET>,
    // The binding reference the socket holds until its close completes.
    reference: Option<BindingRef<C>>,
}

// SAFETY: a WSK socket may be used and closed from any thread; the reference is Send.
unsafe impl<C: Client> Send for Socket<C> {}

impl<C: Client> Socket<C> {
    /// Creates a connection-oriented (TCP) socket of `family` (`AF_INET`, `AF_INET6`) through
    /// `reference`'s binding, waiting up to `timeout_100ns` (100 ns units; `None`: no limit).
    ///
    /// IRQL: `PASSIVE_LEVEL`.
    ///
    /// # Errors
    /// The provider's status (`WskSocket`), `STATUS_NOT_SUPPORTED` when its dispatch has no
    /// `WskSocket`, or a request that could not be made.
    pub fn connection(
        reference: &BindingRef<C>,
        family: u16,
        timeout_100ns: Option<i64>,
    ) -> Result<Self, NtStatus> {
        let socket_fn = reference.socket().ok_or(NtStatus::NOT_SUPPORTED)?;
        // The socket's own reference, taken first: once the socket exists, it must be closable.
        let own = reference.try_clone().map_err(NtStatus::from)?;
        let (status, information) = irp::call(reference, timeout_100ns, |reference, irp| {
            // SAFETY: the provider's WskSocket for this binding, with its WSK_CLIENT; no socket
            // context or event dispatch (no callbacks); the IRP is the request's; PASSIVE_LEVEL.
            unsafe {
                socket_fn(
                    reference.client(),
                    family,
                    SOCK_STREAM,
                    IPPROTO_TCP,
                    WSK_FLAG_CONNECTION_SOCKET,
                    ptr::null_mut(),
                    ptr::null(),
                    ptr::null_mut(),
                    ptr::null_mut(),
                    ptr::null_mut(),
                    irp,
                )
            }
        })?;
        if let Err(status) = status.into_result() {
            log!(
                C,
                DPFLTR_ERROR_LEVEL,
                "socket: WskSocket failed: 0x%08X",
                status.bits()
            );
            return Err(status);
        }
        let Some(socket) = NonNull::new(information as *mut WSK_SOCKET) else {
            log!(
                C,
                DPFLTR_ERROR_LEVEL,
                "socket: WskSocket succeeded without a socket"
            );
            return Err(NtStatus::UNSUCCESSFUL);
        };
        // INVARIANT: the provider's new socket, open.
        Ok(Self {
            socket,
            reference: Some(own),
        })
    }

    /// The raw socket, for the provider's functions (valid while `self` lives).
    #[must_use]
    pub fn as_raw(&self) -> *mut WSK_SOCKET {
        self.socket.as_ptr()
    }

    /// Closes the socket (`WskCloseSocket`); its binding reference goes when the close completes.
    ///
    /// IRQL <= `DISPATCH_LEVEL`; never blocks.
    pub fn close(mut self) {
        self.close_now();
    }

    fn close_now(&mut self) {
        if let Some(reference) = self.reference.take() {
            close_raw::<C>(self.socket, reference);
        }
    }
}

impl<C: Client> Drop for Socket<C> {
    /// Closes the socket like [`Socket::close`]. IRQL <= `DISPATCH_LEVEL`.
    fn drop(&mut self) {
        self.close_now();
    }
}

/// What ends a close: the socket's reference goes.
struct Closed;

impl<C: Client> Completion<C> for Closed {
    fn complete(self, reference: BindingRef<C>, status: NtStatus, _information: usize) {
        if status.is_success() {
            log!(C, DPFLTR_INFO_LEVEL, "socket: closed");
        } else {
            log!(
                C,
                DPFLTR_ERROR_LEVEL,
                "socket: WskCloseSocket failed: 0x%08X",
                status.bits()
            );
        }
        drop(reference);
    }
}

/// `WskCloseSocket` of `socket`, with a request that holds `reference` until it completes. If the
/// request cannot be made, the socket leaks rather than being freed under the provider: logged.
fn close_raw<C: Client>(socket: NonNull<WSK_SOCKET>, reference: BindingRef<C>) {
    // SAFETY: an open socket's dispatch starts with WSK_PROVIDER_BASIC_DISPATCH.
    let dispatch = unsafe { (*socket.as_ptr()).Dispatch }.cast::<WSK_PROVIDER_BASIC_DISPATCH>();
    // SAFETY: the provider's dispatch of this socket, valid while it is open.
    let close = unsafe { dispatch.as_ref() }.and_then(|d| d.WskCloseSocket);
    let Some(close) = close else {
        log!(
            C,
            DPFLTR_ERROR_LEVEL,
            "socket: the provider has no WskCloseSocket"
        );
        return;
    };
    let submitted = irp::submit(reference, Closed, |_reference, irp| {
        // SAFETY: the open socket, closed once (the Socket's reference moved here); the IRP is the
        // request's; IRQL <= DISPATCH_LEVEL.
        unsafe { close(socket.as_ptr(), irp) }
    });
    if let Err(status) = submitted {
        log!(
            C,
            DPFLTR_ERROR_LEVEL,
            "socket: close not submitted (0x%08X): socket left open",
            status.bits()
        );
    }
}
