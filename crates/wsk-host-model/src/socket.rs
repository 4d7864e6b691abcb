//! The model's connection sockets: an echo peer behind each one — what the client sends comes
//! back to its receives — with the failures a test asks for (a refused connection, a peer that
//! never answers, a provider without `WskDisconnect` or that ignores `IoCancelIrp`, as Wine's).
//! Also the MDLs the client describes its buffers with, and the `WSK_BUF` check: a buffer longer
//! than its MDL is recorded (Windows bugchecks).

use std::collections::VecDeque;

use wsk_sys::{
    IRP, MDL, NTSTATUS, PVOID, SOCKADDR, SOCKADDR_IN, WSK_BUF, WSK_PROVIDER_BASIC_DISPATCH,
    WSK_PROVIDER_CONNECTION_DISPATCH, WSK_PROVIDER_DATAGRAM_DISPATCH, WSK_PROVIDER_LISTEN_DISPATCH,
    WSK_SOCKET,
};

use crate::Status;
use crate::image;
use crate::irp;
use crate::state::{self, Event, ProviderId, State};

/// A socket's peer and its pending receive.
pub(crate) struct Peer {
    pub provider: ProviderId,
    pub connected: bool,
    /// Bytes sent and not yet received back.
    pub echo: VecDeque<u8>,
    /// A receive waiting for data: its IRP and the client's buffer (address, length).
    pub receive: Option<(usize, usize, usize)>,
    /// A listening socket's state.
    pub listen: Option<Listen>,
    /// An accepted socket's remote client (its id in `State::remotes`): what the driver sends
    /// goes to it, what it sends comes to the driver's receives (no echo).
    pub remote: Option<usize>,
    /// The address it was bound to (its local address).
    pub local: Option<SOCKADDR_IN>,
    /// A datagram socket's echo: each datagram sent, with the address it went to (the sender
    /// of its echo), until received.
    pub datagrams: Option<VecDeque<(Vec<u8>, Vec<u8>)>>,
    /// Where a pending `WskReceiveFrom` wants the sender's address.
    pub receive_address: usize,
    /// An accepted socket's event callbacks (when the client gave them at `WskAccept`).
    pub events: Option<crate::events::Callbacks>,
    /// `WskCloseSocket` was called: no callback starts any more.
    pub closing: bool,
    pub _memory: Box<WSK_SOCKET>,
}

/// A listening socket: bound (listening) or not, its pending accepts, and remote clients
/// waiting to be accepted.
#[derive(Default)]
pub(crate) struct Listen {
    pub bound: bool,
    /// Pending `WskAccept`s: the IRP, where the remote address goes, and the new socket's
    /// context and client dispatch (0: none).
    pub accepts: VecDeque<(usize, usize, usize, usize)>,
    /// Remote clients that connected and are not accepted yet.
    pub backlog: VecDeque<usize>,
}

/// A remote client of a listening socket (the test's side of an accepted connection).
#[derive(Default)]
pub(crate) struct Remote {
    /// Its port (its address is 127.0.0.1).
    pub port: u16,
    /// What it sent and the driver has not received yet.
    pub to_server: VecDeque<u8>,
    /// What the driver sent it.
    pub from_server: Vec<u8>,
    /// It closed its side: once `to_server` is drained, the driver's receive gets 0 bytes.
    pub closed: bool,
    /// The driver closed the accepted socket.
    pub server_closed: bool,
    /// The accepted socket, once accepted.
    pub socket: Option<usize>,
}

// SAFETY: the socket memory points at a static dispatch table; only the driver reads it.
unsafe impl Send for Peer {}

impl Peer {
    /// Makes a socket of `provider` with `dispatch`, set up by `set`; its address.
    pub(crate) fn insert(
        provider: ProviderId,
        dispatch: *const core::ffi::c_void,
        set: impl FnOnce(&mut Self),
    ) -> usize {
        let memory = Box::new(WSK_SOCKET { Dispatch: dispatch });
        let socket = &raw const *memory as usize;
        let mut peer = Self {
            provider,
            connected: false,
            echo: VecDeque::new(),
            receive: None,
            listen: None,
            remote: None,
            local: None,
            datagrams: None,
            receive_address: 0,
            events: None,
            closing: false,
            _memory: memory,
        };
        set(&mut peer);
        state::with(|s| s.peers.insert(socket, peer));
        socket
    }
}

/// An MDL of the client: the buffer it describes.
pub(crate) struct Mdl {
    pub va: usize,
    pub len: usize,
    /// `MmBuildMdlForNonPagedPool` was called.
    pub built: bool,
    pub _memory: Box<[u64; 6]>,
}

/// The dispatch of every socket the model makes.
pub(crate) static DISPATCH: WSK_PROVIDER_CONNECTION_DISPATCH = WSK_PROVIDER_CONNECTION_DISPATCH {
    Basic: WSK_PROVIDER_BASIC_DISPATCH {
        WskControlSocket: Some(control),
        WskCloseSocket: Some(close),
    },
    WskBind: Some(bind),
    WskConnect: Some(connect),
    WskGetLocalAddress: Some(local_address),
    WskGetRemoteAddress: Some(remote_address),
    WskSend: Some(send),
    WskReceive: Some(receive),
    WskDisconnect: Some(disconnect),
};

/// The dispatch of every listening socket the model makes.
pub(crate) static LISTEN_DISPATCH: WSK_PROVIDER_LISTEN_DISPATCH = WSK_PROVIDER_LISTEN_DISPATCH {
    Basic: WSK_PROVIDER_BASIC_DISPATCH {
        WskControlSocket: Some(control),
        WskCloseSocket: Some(close),
    },
    WskBind: Some(bind),
    WskAccept: Some(accept),
    WskInspectComplete: None,
    WskGetLocalAddress: Some(local_address),
};

/// The dispatch of every datagram socket the model makes.
pub(crate) static DATAGRAM_DISPATCH: WSK_PROVIDER_DATAGRAM_DISPATCH =
    WSK_PROVIDER_DATAGRAM_DISPATCH {
        Basic: WSK_PROVIDER_BASIC_DISPATCH {
            WskControlSocket: Some(control),
            WskCloseSocket: Some(close),
        },
        WskBind: Some(bind),
        WskSendTo: Some(send_to),
        WskReceiveFrom: Some(receive_from),
        WskRelease: None,
        WskGetLocalAddress: Some(local_address),
    };

/// `IoAllocateMdl`: remembers the buffer it describes.
///
/// # Safety
/// As the C function.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn IoAllocateMdl(
    VirtualAddress: PVOID,
    Length: u32,
    _SecondaryBuffer: u8,
    _ChargeQuota: u8,
    _Irp: *mut IRP,
) -> *mut MDL {
    state::with(|s| {
        let injected = image::driver_calls(s, "IoAllocateMdl").is_some();
        let nth = s.nth_fails(crate::Failable::Mdl);
        let fail = s.failing_mdls > 0 || nth || injected;
        s.failing_mdls = s.failing_mdls.saturating_sub(1);
        // IoAllocateMdl: "the maximum buffer size ... is (4 gigabytes - PAGE_SIZE)".
        if Length > 0xFFFF_F000 {
            s.violation(format!(
                "IoAllocateMdl of {Length:#x} bytes: above its limit of 4 GiB - PAGE_SIZE"
            ));
        }
        if fail {
            return std::ptr::null_mut();
        }
        let memory = Box::new([0u64; 6]);
        let address = memory.as_ptr() as usize;
        s.mdls.insert(
            address,
            Mdl {
                va: VirtualAddress as usize,
                len: Length as usize,
                built: false,
                _memory: memory,
            },
        );
        address as *mut MDL
    })
}

/// `MmBuildMdlForNonPagedPool`.
///
/// # Safety
/// As the C function.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn MmBuildMdlForNonPagedPool(MemoryDescriptorList: *mut MDL) {
    state::with(|s| {
        image::driver_calls(s, "MmBuildMdlForNonPagedPool");
        match s.mdls.get_mut(&(MemoryDescriptorList as usize)) {
            Some(mdl) => mdl.built = true,
            None => s.violation("MmBuildMdlForNonPagedPool of an unknown MDL".into()),
        }
    });
}

/// `MmMapLockedPagesSpecifyCache`: the model's provider MDLs are all mapped already (a client
/// maps only those, through `MmGetSystemAddressForMdlSafe`), so a call is a violation.
///
/// # Safety
/// As the C function.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn MmMapLockedPagesSpecifyCache(
    _MemoryDescriptorList: *mut MDL,
    _AccessMode: i8,
    _CacheType: i32,
    _RequestedAddress: PVOID,
    _BugCheckOnFailure: u32,
    _Priority: u32,
) -> PVOID {
    state::with(|s| {
        image::driver_calls(s, "MmMapLockedPagesSpecifyCache");
        s.violation("MmMapLockedPagesSpecifyCache of an MDL the model mapped already".into());
    });
    std::ptr::null_mut()
}

/// `IoFreeMdl`.
///
/// # Safety
/// As the C function.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn IoFreeMdl(Mdl: *mut MDL) {
    state::with(|s| {
        image::driver_calls(s, "IoFreeMdl");
        if s.mdls.remove(&(Mdl as usize)).is_none() {
            s.violation("IoFreeMdl of an unknown MDL".into());
        }
    });
}

/// The client memory a `WSK_BUF` names, checked against its MDL.
fn buffer_range(s: &mut State, buffer: *const WSK_BUF) -> Option<(usize, usize)> {
    // SAFETY: the client passes a valid WSK_BUF for the call.
    let buf = unsafe { *buffer };
    let Some(&Mdl { va, len, built, .. }) = s.mdls.get(&(buf.Mdl as usize)) else {
        s.violation("a WSK_BUF whose MDL the client never allocated".into());
        return None;
    };
    if !built {
        s.violation("a WSK_BUF whose MDL was never built (MmBuildMdlForNonPagedPool)".into());
    }
    let offset = buf.Offset as usize;
    if offset + buf.Length > len {
        s.violation(format!(
            "WSK_BUF offset {offset} length {} past its MDL of {len} bytes (a bugcheck on Windows)",
            buf.Length
        ));
        return None;
    }
    Some((va + offset, buf.Length))
}

fn peer(s: &mut State, socket: *mut WSK_SOCKET) -> Option<&mut Peer> {
    s.peers.get_mut(&(socket as usize))
}

/// What a provider function that keeps its IRP did with it.
enum Taken {
    /// Kept (published, pending).
    Kept,
    /// To be completed with this status.
    Fail(Status),
    /// Refused (a violation recorded): answered `STATUS_INVALID_PARAMETER`, not completed.
    Refused,
}

fn config(s: &State, provider: ProviderId) -> Option<&crate::ProviderConfig> {
    s.provider(provider).map(|p| &p.config)
}

/// Takes `irp` and completes it with `status`, as the socket's provider does ([`finish`]).
fn complete_later(
    socket: *mut WSK_SOCKET,
    irp: *mut IRP,
    status: Status,
    information: usize,
) -> NTSTATUS {
    let inline = state::with(|s| {
        let provider = peer(s, socket)?.provider;
        Some(config(s, provider)?.requests_complete_inline)
    });
    finish(irp, status, information, inline == Some(true))
}

/// Takes `irp` and completes it with `status`: on a provider thread (the call answers
/// `STATUS_PENDING`), or `inline` before the call returns `status` itself.
fn finish(irp: *mut IRP, status: Status, information: usize, inline: bool) -> NTSTATUS {
    if !irp::begin(irp) {
        return Status::INVALID_PARAMETER.raw();
    }
    if inline {
        irp::complete(irp, status, information);
        return status.raw();
    }
    let irp = irp as usize;
    crate::kernel::spawn_provider(move || irp::complete(irp as *mut IRP, status, information));
    Status::PENDING.raw()
}

unsafe extern "system" fn bind(
    Socket: *mut WSK_SOCKET,
    LocalAddress: *mut SOCKADDR,
    _Flags: u32,
    Irp: *mut IRP,
) -> NTSTATUS {
    // SAFETY: the client's address, valid for the request; read as far as its family says.
    let local = unsafe { read_ipv4(LocalAddress) };
    let known = state::with(|s| {
        let injected = image::driver_calls(s, "WskBind");
        s.events.push(Event::WskBind);
        let peer = peer(s, Socket)?;
        peer.local = local;
        if injected.is_none()
            && let Some(listen) = peer.listen.as_mut()
        {
            listen.bound = true;
        }
        Some(injected)
    });
    let Some(injected) = known else {
        state::with(|s| s.violation("WskBind on a socket that is not open".into()));
        return Status::INVALID_PARAMETER.raw();
    };
    complete_later(Socket, Irp, injected.unwrap_or(Status::SUCCESS), 0)
}

unsafe extern "system" fn connect(
    Socket: *mut WSK_SOCKET,
    _RemoteAddress: *mut SOCKADDR,
    _Flags: u32,
    Irp: *mut IRP,
) -> NTSTATUS {
    let answer = state::with(|s| {
        let injected = image::driver_calls(s, "WskConnect");
        let provider = peer(s, Socket)?.provider;
        let failure = injected.or_else(|| config(s, provider).and_then(|c| c.connect_failure));
        s.events.push(Event::WskConnect {
            status: failure.unwrap_or(Status::SUCCESS),
        });
        if failure.is_none() {
            peer(s, Socket)?.connected = true;
        }
        Some(failure.unwrap_or(Status::SUCCESS))
    });
    let Some(status) = answer else {
        state::with(|s| s.violation("WskConnect on a socket that is not open".into()));
        return Status::INVALID_PARAMETER.raw();
    };
    complete_later(Socket, Irp, status, 0)
}

unsafe extern "system" fn send(
    Socket: *mut WSK_SOCKET,
    Buffer: *mut WSK_BUF,
    _Flags: u32,
    Irp: *mut IRP,
) -> NTSTATUS {
    let answer = state::with(|s| {
        let injected = image::driver_calls(s, "WskSend");
        let (va, length) = buffer_range(s, Buffer)?;
        let peer = peer(s, Socket)?;
        if let Some(status) = injected {
            return Some(Err(status));
        }
        if !peer.connected {
            return Some(Err(Status::from_raw(wsk_sys::STATUS_INVALID_DEVICE_STATE)));
        }
        // SAFETY: the client's buffer, checked against its MDL, valid for the request.
        let bytes = unsafe { std::slice::from_raw_parts(va as *const u8, length) };
        let provider = peer.provider;
        let remote = peer.remote;
        let silent = s.provider(provider).is_some_and(|p| p.config.peer_silent);
        if let Some(remote) = remote {
            s.remotes.get_mut(&remote)?.from_server.extend(bytes);
        } else if !silent {
            s.peers.get_mut(&(Socket as usize))?.echo.extend(bytes);
        }
        s.events.push(Event::WskSend { bytes: length });
        Some(Ok(length))
    });
    match answer {
        Some(Ok(length)) => {
            let status = complete_later(Socket, Irp, Status::SUCCESS, length);
            deliver(Socket);
            status
        }
        Some(Err(status)) => complete_later(Socket, Irp, status, 0),
        None => Status::INVALID_PARAMETER.raw(),
    }
}

unsafe extern "system" fn receive(
    Socket: *mut WSK_SOCKET,
    Buffer: *mut WSK_BUF,
    _Flags: u32,
    Irp: *mut IRP,
) -> NTSTATUS {
    let taken = state::with(|s| {
        let injected = image::driver_calls(s, "WskReceive");
        s.events.push(Event::WskReceive);
        let (va, length) = buffer_range(s, Buffer)?;
        let peer = peer(s, Socket)?;
        if let Some(status) = injected {
            return Some(Taken::Fail(status));
        }
        if peer.receive.is_some() {
            s.violation("a second WskReceive while one is pending".into());
            return None;
        }
        // Taken and published in one step: a remote client's send (another thread) may complete
        // it at once.
        if !irp::begin_locked(s, Irp) {
            return Some(Taken::Refused);
        }
        let peer = s.peers.get_mut(&(Socket as usize))?;
        // nc-wsk-pfn_wsk_receive_event: after a WskReceive the provider indicates again.
        if let Some(callbacks) = peer.events.as_mut() {
            callbacks.paused = false;
            callbacks.receives += 1;
        }
        peer.receive = Some((Irp as usize, va, length));
        Some(Taken::Kept)
    });
    match taken {
        None | Some(Taken::Refused) => Status::INVALID_PARAMETER.raw(),
        Some(Taken::Fail(status)) => complete_later(Socket, Irp, status, 0),
        Some(Taken::Kept) => {
            deliver(Socket);
            Status::PENDING.raw()
        }
    }
}

/// Completes the socket's pending receive if data is there (or, from a remote client that closed
/// its side, 0 bytes once everything it sent was received).
pub(crate) fn deliver(socket: *mut WSK_SOCKET) {
    let done = state::with(|s| {
        let State { peers, remotes, .. } = s;
        let peer = peers.get_mut(&(socket as usize))?;
        if let Some(queue) = peer.datagrams.as_mut() {
            // One datagram per receive; what does not fit in the buffer is lost (UDP). With no
            // receive pending, the receive-from events (if on) get them (below).
            if queue.is_empty() || peer.receive.is_none() {
                return None;
            }
            let (irp, va, length) = peer.receive.take()?;
            let (address, bytes) = queue.pop_front()?;
            let n = length.min(bytes.len());
            // SAFETY: the pending receive's buffer, checked against its MDL when it was posted.
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), va as *mut u8, n) };
            if peer.receive_address != 0 {
                // SAFETY: the pending receive's address slot (room for any socket address).
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        address.as_ptr(),
                        peer.receive_address as *mut u8,
                        address.len(),
                    );
                }
            }
            return Some((irp, n));
        }
        // Bytes being indicated belong to the indication until the client answered it: a
        // receive waits for that answer (the indication's end delivers it).
        if peer.events.is_some_and(|c| c.indicating) {
            return None;
        }
        let (source, closed) = match peer.remote {
            Some(remote) => {
                let remote = remotes.get_mut(&remote)?;
                (&mut remote.to_server, remote.closed)
            }
            None => (&mut peer.echo, false),
        };
        if source.is_empty() && !closed {
            return None;
        }
        let (irp, va, length) = peer.receive.take()?;
        let n = length.min(source.len());
        let bytes: Vec<u8> = source.drain(..n).collect();
        // SAFETY: the pending receive's buffer, checked against its MDL when it was posted.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), va as *mut u8, n) };
        Some((irp, n))
    });
    let socket = socket as usize;
    if let Some((irp, n)) = done {
        crate::kernel::spawn_provider(move || {
            irp::complete(irp as *mut IRP, Status::SUCCESS, n);
            crate::events::indicate(socket);
            crate::events::indicate_datagrams(socket);
        });
    } else {
        crate::kernel::spawn_provider(move || {
            crate::events::indicate(socket);
            crate::events::indicate_datagrams(socket);
        });
    }
}

/// `WskAccept`: pending until a remote client connects ([`crate::connect_client`]).
unsafe extern "system" fn accept(
    ListenSocket: *mut WSK_SOCKET,
    _Flags: u32,
    AcceptSocketContext: PVOID,
    AcceptSocketDispatch: *const core::ffi::c_void,
    _LocalAddress: *mut SOCKADDR,
    RemoteAddress: *mut SOCKADDR,
    Irp: *mut IRP,
) -> NTSTATUS {
    let answer = state::with(|s| {
        let injected = image::driver_calls(s, "WskAccept");
        s.events.push(Event::WskAccept);
        let listen = peer(s, ListenSocket)?.listen.as_mut()?;
        if let Some(status) = injected {
            return Some(Taken::Fail(status));
        }
        if !listen.bound {
            return Some(Taken::Fail(Status::from_raw(
                wsk_sys::STATUS_INVALID_DEVICE_STATE,
            )));
        }
        // Taken and published in one step: a remote client (another thread) may be matched
        // with it at once.
        if !irp::begin_locked(s, Irp) {
            return Some(Taken::Refused);
        }
        let listen = peer(s, ListenSocket)?.listen.as_mut()?;
        listen.accepts.push_back((
            Irp as usize,
            RemoteAddress as usize,
            AcceptSocketContext as usize,
            AcceptSocketDispatch as usize,
        ));
        Some(Taken::Kept)
    });
    let Some(failure) = answer else {
        state::with(|s| s.violation("WskAccept on a socket that is not listening".into()));
        return Status::INVALID_PARAMETER.raw();
    };
    match failure {
        Taken::Refused => Status::INVALID_PARAMETER.raw(),
        Taken::Fail(status) => complete_later(ListenSocket, Irp, status, 0),
        Taken::Kept => {
            match_accepts(ListenSocket as usize);
            Status::PENDING.raw()
        }
    }
}

/// Pairs the listening socket's pending accepts with its waiting remote clients: each pair gets
/// an accepted socket, its remote address written, the accept completed.
pub(crate) fn match_accepts(listener: usize) {
    offer_accepts(listener);
    loop {
        let paired = state::with(|s| {
            let peer = s.peers.get_mut(&listener)?;
            let provider = peer.provider;
            let listen = peer.listen.as_mut()?;
            if listen.accepts.is_empty() || listen.backlog.is_empty() {
                return None;
            }
            let accept = listen.accepts.pop_front()?;
            let remote = listen.backlog.pop_front()?;
            Some((accept, remote, provider))
        });
        let Some(((irp, address, context, callbacks), remote, provider)) = paired else {
            return;
        };
        let dispatch = (&raw const DISPATCH).cast();
        let socket = Peer::insert(provider, dispatch, |peer| {
            peer.connected = true;
            peer.remote = Some(remote);
            if callbacks != 0 {
                peer.events = Some(crate::events::Callbacks {
                    context,
                    dispatch: callbacks,
                    ..crate::events::Callbacks::default()
                });
            }
        });
        let port = state::with(|s| {
            s.events.push(Event::WskSocket {
                status: Status::SUCCESS,
            });
            let remote = s.remotes.get_mut(&remote)?;
            remote.socket = Some(socket);
            Some(remote.port)
        });
        if address != 0 {
            let written = SOCKADDR_IN {
                sin_family: wsk_sys::AF_INET,
                sin_port: port.unwrap_or(0).to_be(),
                sin_addr: [127, 0, 0, 1],
                sin_zero: [0; 8],
            };
            // SAFETY: the client's address slot for the accept, valid until its IRP completes.
            unsafe { (address as *mut SOCKADDR_IN).write_unaligned(written) };
        }
        crate::kernel::spawn_provider(move || {
            irp::complete(irp as *mut IRP, Status::SUCCESS, socket);
        });
    }
}

/// With the listening socket's accept events on, its waiting remote clients go to the client's
/// `WskAcceptEvent` instead: each gets a connection socket, kept when the client takes it and
/// closed (by the provider) when it refuses it.
fn offer_accepts(listener: usize) {
    loop {
        let offered = state::with(|s| {
            let peer = s.peers.get_mut(&listener)?;
            let provider = peer.provider;
            let callbacks = peer
                .events
                .filter(|c| c.enabled & wsk_sys::WSK_EVENT_ACCEPT != 0)?;
            if peer.closing || callbacks.indicating {
                return None;
            }
            let remote = peer.listen.as_mut()?.backlog.pop_front()?;
            // One callback at a time, and the close waits for it.
            if let Some(c) = peer.events.as_mut() {
                c.indicating = true;
            }
            Some((callbacks, remote, provider))
        });
        let Some((callbacks, remote, provider)) = offered else {
            return;
        };
        let dispatch = (&raw const DISPATCH).cast();
        let socket = Peer::insert(provider, dispatch, |peer| {
            peer.connected = true;
            peer.remote = Some(remote);
        });
        let port = state::with(|s| {
            s.events.push(Event::WskSocket {
                status: Status::SUCCESS,
            });
            let remote = s.remotes.get_mut(&remote)?;
            remote.socket = Some(socket);
            Some(remote.port)
        });
        let taken = crate::events::offer(callbacks, socket, port.unwrap_or(0));
        state::with(|s| {
            if !taken {
                // Refused: the provider closes the connection.
                s.peers.remove(&socket);
                if let Some(r) = s.remotes.get_mut(&remote) {
                    r.server_closed = true;
                    r.socket = None;
                }
            }
            if let Some(c) = s.peers.get_mut(&listener).and_then(|p| p.events.as_mut()) {
                c.indicating = false;
            }
        });
    }
}

/// `IoCancelIrp` of a pending receive or accept: completed with `STATUS_CANCELLED`, unless the
/// provider ignores cancels (as Wine's does).
pub(crate) fn cancel(irp: usize) {
    let cancelled = state::with(|s| {
        let (socket, provider) = s
            .peers
            .iter()
            .find(|(_, p)| {
                p.receive.is_some_and(|r| r.0 == irp)
                    || p.listen
                        .as_ref()
                        .is_some_and(|l| l.accepts.iter().any(|a| a.0 == irp))
            })
            .map(|(k, p)| (*k, p.provider))?;
        if s.provider(provider)
            .is_some_and(|p| p.config.ignores_cancel)
        {
            return None;
        }
        let peer = s.peers.get_mut(&socket)?;
        if peer.receive.is_some_and(|r| r.0 == irp) {
            peer.receive = None;
        }
        if let Some(listen) = peer.listen.as_mut() {
            listen.accepts.retain(|a| a.0 != irp);
        }
        Some(())
    });
    if cancelled.is_some() {
        crate::kernel::spawn_provider(move || {
            irp::complete(
                irp as *mut IRP,
                Status::from_raw(wsk_sys::STATUS_CANCELLED),
                0,
            );
        });
    }
}

unsafe extern "system" fn disconnect(
    Socket: *mut WSK_SOCKET,
    _Buffer: *mut WSK_BUF,
    _Flags: u32,
    Irp: *mut IRP,
) -> NTSTATUS {
    let stub = state::with(|s| {
        let injected = image::driver_calls(s, "WskDisconnect");
        s.events.push(Event::WskDisconnect);
        let provider = peer(s, Socket)?.provider;
        Some((
            config(s, provider).is_some_and(|c| c.disconnect_stub),
            injected,
        ))
    });
    match stub {
        None => Status::INVALID_PARAMETER.raw(),
        // Wine: an answer, and the IRP never completed.
        Some((true, _)) => wsk_sys::STATUS_NOT_IMPLEMENTED,
        Some((false, injected)) => {
            complete_later(Socket, Irp, injected.unwrap_or(Status::SUCCESS), 0)
        }
    }
}

/// `WskCloseSocket`: completes a pending receive (or a listening socket's accepts) with
/// `STATUS_CANCELLED`, then the close.
unsafe extern "system" fn close(Socket: *mut WSK_SOCKET, Irp: *mut IRP) -> NTSTATUS {
    let receive = state::with(|s| {
        let injected = image::driver_calls(s, "WskCloseSocket");
        s.events.push(Event::WskCloseSocket);
        let peer = peer(s, Socket)?;
        let provider = peer.provider;
        peer.closing = true;
        // The pending receive, or every pending accept, completes with the close.
        let mut pending: Vec<usize> = peer.receive.take().map(|r| r.0).into_iter().collect();
        if let Some(listen) = peer.listen.as_mut() {
            pending.extend(listen.accepts.drain(..).map(|a| a.0));
        }
        if let Some(remote) = peer.remote {
            s.remotes.entry(remote).or_default().server_closed = true;
        }
        let inline = config(s, provider).is_some_and(|c| c.requests_complete_inline);
        Some((pending, inline, injected))
    });
    // An injected failure: the close completes with it, and the socket is gone all the same (a
    // client can do nothing else with a socket it closed).
    let Some((pending, inline, injected)) = receive else {
        state::with(|s| s.violation(format!("WskCloseSocket of {Socket:p}: not an open socket")));
        return Status::INVALID_PARAMETER.raw();
    };
    if !irp::begin(Irp) {
        return Status::INVALID_PARAMETER.raw();
    }
    let (socket, irp) = (Socket as usize, Irp as usize);
    let finish = move || {
        for pending in pending {
            irp::complete(
                pending as *mut IRP,
                Status::from_raw(wsk_sys::STATUS_CANCELLED),
                0,
            );
        }
        // A callback in progress returns before the close completes (the client frees its
        // context then).
        state::wait_until(|s| {
            !s.peers
                .get(&socket)
                .and_then(|p| p.events)
                .is_some_and(|c| c.indicating)
        });
        state::with(|s| {
            s.peers.remove(&socket);
        });
        irp::complete(irp as *mut IRP, injected.unwrap_or(Status::SUCCESS), 0);
    };
    if inline {
        finish();
        return injected.unwrap_or(Status::SUCCESS).raw();
    }
    crate::kernel::spawn_provider(finish);
    Status::PENDING.raw()
}

/// An IPv4 address the client gave (`None` for another family, or NULL).
///
/// # Safety
/// `address` is NULL or a client's `SOCKADDR` of at least its family's length.
unsafe fn read_ipv4(address: *const SOCKADDR) -> Option<SOCKADDR_IN> {
    if address.is_null() {
        return None;
    }
    // SAFETY: per the contract: the family comes first.
    let family = unsafe { address.cast::<u16>().read_unaligned() };
    // SAFETY: an AF_INET address is a SOCKADDR_IN.
    (family == wsk_sys::AF_INET).then(|| unsafe { address.cast::<SOCKADDR_IN>().read_unaligned() })
}

/// `WskControlSocket`: records the option set; a provider with `control_stub` answers like
/// Wine's (`STATUS_NOT_IMPLEMENTED`, the IRP never completed).
#[allow(clippy::too_many_arguments)] // the C signature
unsafe extern "system" fn control(
    Socket: *mut WSK_SOCKET,
    RequestType: i32,
    ControlCode: u32,
    Level: u32,
    InputSize: usize,
    InputBuffer: PVOID,
    _OutputSize: usize,
    _OutputBuffer: PVOID,
    _OutputSizeReturned: *mut usize,
    Irp: *mut IRP,
) -> NTSTATUS {
    let value = if InputSize == 4 && !InputBuffer.is_null() {
        // SAFETY: the client's 4-byte input, valid for the request.
        Some(unsafe { InputBuffer.cast::<u32>().read_unaligned() })
    } else {
        None
    };
    let answer = state::with(|s| {
        let injected = image::driver_calls(s, "WskControlSocket");
        let provider = peer(s, Socket)?.provider;
        let stub = config(s, provider).is_some_and(|c| c.control_stub);
        if !stub && ControlCode == wsk_sys::SO_WSK_EVENT_CALLBACK {
            return Some((false, Some(Status::PENDING)));
        }
        s.events.push(Event::WskControlSocket {
            request: RequestType,
            level: Level,
            name: ControlCode,
            value,
        });
        Some((stub, injected))
    });
    match answer {
        None => {
            state::with(|s| s.violation("WskControlSocket on a socket that is not open".into()));
            Status::INVALID_PARAMETER.raw()
        }
        Some((true, _)) => wsk_sys::STATUS_NOT_IMPLEMENTED,
        // SO_WSK_EVENT_CALLBACK: synchronous, the events' own path.
        Some((false, Some(Status::PENDING))) => {
            crate::events::control(Socket as usize, InputBuffer, InputSize, Irp as usize)
        }
        Some((false, injected)) => {
            complete_later(Socket, Irp, injected.unwrap_or(Status::SUCCESS), 0)
        }
    }
}

/// `WskGetLocalAddress`: the address the socket was bound to (`STATUS_INVALID_DEVICE_STATE`
/// before a bind); a provider with `control_stub` answers like Wine's.
unsafe extern "system" fn local_address(
    Socket: *mut WSK_SOCKET,
    LocalAddress: *mut SOCKADDR,
    Irp: *mut IRP,
) -> NTSTATUS {
    address_query(
        Socket,
        LocalAddress,
        Irp,
        "WskGetLocalAddress",
        |_, peer| peer.local,
    )
}

/// `WskGetRemoteAddress`: an accepted socket's client (127.0.0.1 and its port).
unsafe extern "system" fn remote_address(
    Socket: *mut WSK_SOCKET,
    RemoteAddress: *mut SOCKADDR,
    Irp: *mut IRP,
) -> NTSTATUS {
    address_query(
        Socket,
        RemoteAddress,
        Irp,
        "WskGetRemoteAddress",
        |s, peer| {
            let remote = s.remotes.get(&peer.remote?)?;
            Some(SOCKADDR_IN {
                sin_family: wsk_sys::AF_INET,
                sin_port: remote.port.to_be(),
                sin_addr: [127, 0, 0, 1],
                sin_zero: [0; 8],
            })
        },
    )
}

/// An address query: the address `get` finds written to `out`, the IRP completed.
fn address_query(
    socket: *mut WSK_SOCKET,
    out: *mut SOCKADDR,
    irp: *mut IRP,
    name: &'static str,
    get: impl FnOnce(&State, &Peer) -> Option<SOCKADDR_IN>,
) -> NTSTATUS {
    let answer = state::with(|s| {
        let injected = image::driver_calls(s, name);
        let peer = s.peers.get(&(socket as usize))?;
        let stub = config(s, peer.provider).is_some_and(|c| c.control_stub);
        Some((stub, injected, get(s, peer)))
    });
    match answer {
        None => {
            state::with(|s| s.violation(format!("{name} on a socket that is not open")));
            Status::INVALID_PARAMETER.raw()
        }
        Some((true, _, _)) => wsk_sys::STATUS_NOT_IMPLEMENTED,
        Some((false, Some(status), _)) => complete_later(socket, irp, status, 0),
        Some((false, None, None)) => complete_later(
            socket,
            irp,
            Status::from_raw(wsk_sys::STATUS_INVALID_DEVICE_STATE),
            0,
        ),
        Some((false, None, Some(address))) => {
            // SAFETY: the client's address slot, valid until the request completes.
            unsafe { out.cast::<SOCKADDR_IN>().write_unaligned(address) };
            complete_later(socket, irp, Status::SUCCESS, 0)
        }
    }
}

/// The socket address the client gave, as bytes (its family's length; empty for an unknown
/// family or NULL).
///
/// # Safety
/// `address` is NULL or a client's `SOCKADDR` of at least its family's length.
unsafe fn address_bytes(address: *const SOCKADDR) -> Vec<u8> {
    if address.is_null() {
        return Vec::new();
    }
    // SAFETY: per the contract: the family comes first.
    let length = match unsafe { address.cast::<u16>().read_unaligned() } {
        wsk_sys::AF_INET => size_of::<SOCKADDR_IN>(),
        wsk_sys::AF_INET6 => size_of::<wsk_sys::SOCKADDR_IN6>(),
        _ => 0,
    };
    // SAFETY: per the contract, `length` bytes of the client's address.
    unsafe { std::slice::from_raw_parts(address.cast::<u8>(), length) }.to_vec()
}

/// `WskSendTo`: the datagram comes back to the socket's receives, from the address it went to.
unsafe extern "system" fn send_to(
    Socket: *mut WSK_SOCKET,
    Buffer: *mut WSK_BUF,
    _Flags: u32,
    RemoteAddress: *mut SOCKADDR,
    _ControlInfoLength: u32,
    _ControlInfo: PVOID,
    Irp: *mut IRP,
) -> NTSTATUS {
    // SAFETY: the client's address, valid for the request.
    let address = unsafe { address_bytes(RemoteAddress) };
    let answer = state::with(|s| {
        let injected = image::driver_calls(s, "WskSendTo");
        let (va, length) = buffer_range(s, Buffer)?;
        if let Some(status) = injected {
            return Some(Err(status));
        }
        if address.is_empty() {
            return Some(Err(Status::INVALID_PARAMETER));
        }
        // SAFETY: the client's buffer, checked against its MDL, valid for the request.
        let bytes = unsafe { std::slice::from_raw_parts(va as *const u8, length) }.to_vec();
        s.events.push(Event::WskSendTo { bytes: length });
        if let Some(inbox) = s.datagram_peers.get_mut(&address) {
            inbox.push(bytes);
            return Some(Ok(length));
        }
        peer(s, Socket)?
            .datagrams
            .as_mut()?
            .push_back((address, bytes));
        Some(Ok(length))
    });
    match answer {
        Some(Ok(length)) => {
            let status = complete_later(Socket, Irp, Status::SUCCESS, length);
            deliver(Socket);
            status
        }
        Some(Err(status)) => complete_later(Socket, Irp, status, 0),
        None => {
            state::with(|s| {
                s.violation("WskSendTo on a socket that is not a datagram socket".into());
            });
            Status::INVALID_PARAMETER.raw()
        }
    }
}

/// `WskReceiveFrom`: pending until a datagram is there.
unsafe extern "system" fn receive_from(
    Socket: *mut WSK_SOCKET,
    Buffer: *mut WSK_BUF,
    _Flags: u32,
    RemoteAddress: *mut SOCKADDR,
    _ControlLength: *mut u32,
    _ControlInfo: PVOID,
    _ControlFlags: *mut u32,
    Irp: *mut IRP,
) -> NTSTATUS {
    let taken = state::with(|s| {
        let injected = image::driver_calls(s, "WskReceiveFrom");
        s.events.push(Event::WskReceiveFrom);
        let (va, length) = buffer_range(s, Buffer)?;
        let peer = peer(s, Socket)?;
        peer.datagrams.as_ref()?;
        if let Some(status) = injected {
            return Some(Taken::Fail(status));
        }
        if peer.receive.is_some() {
            s.violation("a second WskReceiveFrom while one is pending".into());
            return None;
        }
        if !irp::begin_locked(s, Irp) {
            return Some(Taken::Refused);
        }
        let peer = s.peers.get_mut(&(Socket as usize))?;
        peer.receive = Some((Irp as usize, va, length));
        peer.receive_address = RemoteAddress as usize;
        Some(Taken::Kept)
    });
    match taken {
        None | Some(Taken::Refused) => Status::INVALID_PARAMETER.raw(),
        Some(Taken::Fail(status)) => complete_later(Socket, Irp, status, 0),
        Some(Taken::Kept) => {
            deliver(Socket);
            Status::PENDING.raw()
        }
    }
}
