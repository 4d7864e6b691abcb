//! The model's receive events: a provider's side of `SO_WSK_EVENT_CALLBACK`, `WskReceiveEvent`
//! and `WskDisconnectEvent` on accepted sockets, as `nc-wsk-pfn_wsk_receive_event` describes
//! them — data indicated (split over several `WSK_DATA_INDICATION`s and chained MDLs) only when
//! no `WskReceive` is pending; `STATUS_SUCCESS` with `*BytesAccepted` below the total, or
//! `STATUS_DATA_NOT_ACCEPTED`, keeps the rest and indicates nothing more until the client's next
//! `WskReceive`; callbacks called at `DISPATCH_LEVEL` (`@WskReceiveEvent`), one at a time per
//! socket, never after its close completed (the close waits for one in progress).

use wsk_sys::{
    GUID, MDL, MDL_SOURCE_IS_NONPAGED_POOL, NPI_WSK_INTERFACE_ID, NTSTATUS, PVOID,
    STATUS_DATA_NOT_ACCEPTED, STATUS_SUCCESS, WSK_BUF, WSK_CLIENT_CONNECTION_DISPATCH,
    WSK_DATA_INDICATION, WSK_EVENT_ACCEPT, WSK_EVENT_CALLBACK_CONTROL, WSK_EVENT_DISCONNECT,
    WSK_EVENT_RECEIVE,
};

use crate::Status;
use crate::state::{self, Event, State};

/// The most bytes one indication carries.
const MOST: usize = 6000;

/// A socket's event callbacks, as its client gave them (at `WskAccept`).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Callbacks {
    pub context: usize,
    pub dispatch: usize,
    /// `SO_WSK_EVENT_CALLBACK` turned them on (`WSK_EVENT_*`).
    pub enabled: u32,
    /// The client kept data back: nothing is indicated until its next `WskReceive`.
    pub paused: bool,
    /// `WskReceive`s posted on the socket: one posted while an indication was being made (after
    /// the client answered it, before the model recorded the answer) resumes the indications
    /// all the same.
    pub receives: u64,
    /// `receives` when the indication in progress began.
    pub receives_at_indication: u64,
    /// A callback of this socket is running.
    pub indicating: bool,
    /// The disconnect was indicated.
    pub disconnect_sent: bool,
}

/// `WskControlSocket(SO_WSK_EVENT_CALLBACK)` on `socket`.
pub(crate) fn control(socket: usize, input: PVOID, size: usize, irp: usize) -> NTSTATUS {
    if size != size_of::<WSK_EVENT_CALLBACK_CONTROL>() || input.is_null() {
        return Status::INVALID_PARAMETER.raw();
    }
    // SAFETY: the client's input of that size, valid for the call.
    let control = unsafe { input.cast::<WSK_EVENT_CALLBACK_CONTROL>().read_unaligned() };
    // SAFETY: the client's NPI id (checked for NULL).
    let npi = (!control.NpiId.is_null()).then(|| unsafe { control.NpiId.read_unaligned() });
    let enabled = state::with(|s| {
        if irp != 0 {
            // so-wsk-event-callback: "A WSK application does not specify a pointer to an IRP
            // when calling the WskControlSocket function to enable event callbacks."
            s.violation("SO_WSK_EVENT_CALLBACK enabling events with an IRP".into());
        }
        if npi.is_none_or(|id: GUID| id != NPI_WSK_INTERFACE_ID) {
            return Err(Status::INVALID_PARAMETER);
        }
        let peer = s.peers.get_mut(&socket).ok_or(Status::INVALID_PARAMETER)?;
        let callbacks = peer.events.as_mut().ok_or(Status::INVALID_PARAMETER)?;
        callbacks.enabled |= control.EventMask
            & (WSK_EVENT_RECEIVE
                | WSK_EVENT_DISCONNECT
                | WSK_EVENT_ACCEPT
                | wsk_sys::WSK_EVENT_RECEIVE_FROM);
        s.events.push(Event::EventsEnabled {
            mask: control.EventMask,
        });
        Ok(())
    });
    match enabled {
        Ok(()) => {
            crate::kernel::spawn_provider(move || {
                indicate(socket);
                indicate_datagrams(socket);
                crate::socket::match_accepts(socket);
            });
            STATUS_SUCCESS
        }
        Err(status) => status.raw(),
    }
}

enum Job {
    Data {
        context: usize,
        dispatch: usize,
        bytes: Vec<u8>,
        /// Its `Event::WskReceiveEvent`, recorded when the indication begins (so that whoever
        /// sees what the driver did with the bytes finds it), completed once it returned.
        event: usize,
    },
    Disconnect {
        context: usize,
        dispatch: usize,
    },
}

/// Picks what `socket` indicates next (and marks it indicating).
fn next(s: &mut State, socket: usize) -> Option<Job> {
    let State {
        peers,
        remotes,
        events,
        ..
    } = s;
    let peer = peers.get_mut(&socket)?;
    let remote = remotes.get(&peer.remote?)?;
    let callbacks = peer.events.as_mut()?;
    if callbacks.indicating || callbacks.paused || peer.closing || peer.receive.is_some() {
        return None;
    }
    let (context, dispatch) = (callbacks.context, callbacks.dispatch);
    if callbacks.enabled & WSK_EVENT_RECEIVE != 0 && !remote.to_server.is_empty() {
        callbacks.indicating = true;
        callbacks.receives_at_indication = callbacks.receives;
        let bytes: Vec<u8> = remote.to_server.iter().copied().take(MOST).collect();
        events.push(Event::WskReceiveEvent {
            indicated: bytes.len(),
            accepted: 0,
            status: Status::PENDING.raw(),
        });
        return Some(Job::Data {
            context,
            dispatch,
            bytes,
            event: events.len() - 1,
        });
    }
    if callbacks.enabled & WSK_EVENT_DISCONNECT != 0
        && remote.closed
        && remote.to_server.is_empty()
        && !callbacks.disconnect_sent
    {
        callbacks.indicating = true;
        callbacks.disconnect_sent = true;
        return Some(Job::Disconnect { context, dispatch });
    }
    None
}

/// Indicates what `socket`'s remote client sent, as long as the client takes it.
pub(crate) fn indicate(socket: usize) {
    while let Some(job) = state::with(|s| next(s, socket)) {
        let irql = state::with(|s| crate::irql::callback(s, "WskReceiveEvent"));
        match job {
            Job::Data {
                context,
                dispatch,
                bytes,
                event,
            } => {
                let (status, accepted) = crate::irql::at(irql, || data(context, dispatch, &bytes));
                state::with(|s| taken(s, socket, event, bytes.len(), status, accepted));
                // A receive posted meanwhile waited for this answer.
                crate::socket::deliver(socket as *mut wsk_sys::WSK_SOCKET);
            }
            Job::Disconnect { context, dispatch } => {
                // SAFETY: the client's dispatch for this socket ('static, per WskAccept).
                let callbacks = unsafe { &*(dispatch as *const WSK_CLIENT_CONNECTION_DISPATCH) };
                if let Some(event) = callbacks.WskDisconnectEvent {
                    // SAFETY: the client's callback with its context; the socket is open.
                    let _ = crate::irql::at(irql, || unsafe { event(context as PVOID, 0) });
                }
                state::with(|s| {
                    s.events.push(Event::WskDisconnectEvent);
                    if let Some(c) = s.peers.get_mut(&socket).and_then(|p| p.events.as_mut()) {
                        c.indicating = false;
                    }
                });
            }
        }
    }
}

/// Calls the client's `WskReceiveEvent` with `bytes`, split over three indications, the middle
/// one over two chained MDLs: its answer and `*BytesAccepted`.
fn data(context: usize, dispatch: usize, bytes: &[u8]) -> (NTSTATUS, usize) {
    // SAFETY: the client's dispatch for this socket ('static, per WskAccept).
    let callbacks = unsafe { &*(dispatch as *const WSK_CLIENT_CONNECTION_DISPATCH) };
    let Some(event) = callbacks.WskReceiveEvent else {
        return (STATUS_DATA_NOT_ACCEPTED, 0);
    };
    let third = bytes.len() / 3;
    let cuts = [0, third, 2 * third, bytes.len()];
    let mdl = |from: usize, to: usize| {
        Box::new(MDL {
            Next: std::ptr::null_mut(),
            Size: 48,
            MdlFlags: MDL_SOURCE_IS_NONPAGED_POOL,
            Process: std::ptr::null_mut(),
            MappedSystemVa: bytes[from..to].as_ptr().cast_mut().cast(),
            StartVa: std::ptr::null_mut(),
            ByteCount: u32::try_from(to - from).unwrap(),
            ByteOffset: 0,
        })
    };
    // The middle run over two MDLs: the first ends half-way.
    let half = cuts[1] + (cuts[2] - cuts[1]) / 2;
    let mut mdls = vec![
        mdl(cuts[0], cuts[1]),
        mdl(cuts[1], half),
        mdl(half, cuts[2]),
        mdl(cuts[2], cuts[3]),
    ];
    mdls[1].Next = &raw mut *mdls[2];
    let mut entries: Vec<WSK_DATA_INDICATION> =
        [(0, cuts[1]), (1, cuts[2] - cuts[1]), (3, cuts[3] - cuts[2])]
            .into_iter()
            .map(|(m, length)| WSK_DATA_INDICATION {
                Next: std::ptr::null_mut(),
                Buffer: WSK_BUF {
                    Mdl: &raw mut *mdls[m],
                    Offset: 0,
                    Length: length,
                },
            })
            .collect();
    entries[0].Next = &raw mut entries[1];
    entries[1].Next = &raw mut entries[2];
    let mut accepted = bytes.len();
    // SAFETY: the client's callback with its context, a well-formed list over `bytes` (alive for
    // the call) and an out-parameter.
    let status = unsafe {
        event(
            context as PVOID,
            0,
            &raw mut entries[0],
            bytes.len(),
            &raw mut accepted,
        )
    };
    drop(entries);
    drop(mdls);
    (status, accepted)
}

/// Records what the client took of `indicated` bytes (in the indication's event, `event`).
fn taken(
    s: &mut State,
    socket: usize,
    event: usize,
    indicated: usize,
    status: NTSTATUS,
    accepted: usize,
) {
    let took = if status == STATUS_SUCCESS {
        if accepted > indicated {
            s.violation(format!(
                "WskReceiveEvent accepted {accepted} of {indicated} bytes indicated"
            ));
        }
        accepted.min(indicated)
    } else if status == STATUS_DATA_NOT_ACCEPTED {
        0
    } else {
        s.violation(format!(
            "WskReceiveEvent answered {status:#x} (the library neither keeps indications nor fails them)"
        ));
        0
    };
    if let Some(recorded) = s.events.get_mut(event) {
        *recorded = Event::WskReceiveEvent {
            indicated,
            accepted: took,
            status,
        };
    }
    let State { peers, remotes, .. } = s;
    let Some(peer) = peers.get_mut(&socket) else {
        return;
    };
    if let Some(remote) = peer.remote.and_then(|r| remotes.get_mut(&r)) {
        remote.to_server.drain(..took);
    }
    if let Some(callbacks) = peer.events.as_mut() {
        callbacks.indicating = false;
        // Held back, unless a WskReceive came since the indication began (it resumes them).
        if took < indicated && callbacks.receives == callbacks.receives_at_indication {
            callbacks.paused = true;
        }
    }
}

/// Offers `socket` (accepted on `listener`, from 127.0.0.1:`port`) to the client's
/// `WskAcceptEvent` at `DISPATCH_LEVEL`: whether it took it (it then gave the socket's own
/// context and dispatch, recorded for its events).
pub(crate) fn offer(listener: Callbacks, socket: usize, port: u16) -> bool {
    // SAFETY: the client's listening socket dispatch ('static, per WskSocket).
    let callbacks = unsafe { &*(listener.dispatch as *const wsk_sys::WSK_CLIENT_LISTEN_DISPATCH) };
    let Some(event) = callbacks.WskAcceptEvent else {
        return false;
    };
    let mut remote = wsk_sys::SOCKADDR_IN {
        sin_family: wsk_sys::AF_INET,
        sin_port: port.to_be(),
        sin_addr: [127, 0, 0, 1],
        sin_zero: [0; 8],
    };
    let mut context: PVOID = std::ptr::null_mut();
    let mut dispatch: *const WSK_CLIENT_CONNECTION_DISPATCH = std::ptr::null();
    let irql = state::with(|s| crate::irql::callback(s, "WskAcceptEvent"));
    // SAFETY: the client's callback with its listening socket's context, addresses valid for
    // the call, the new socket and the out-parameters.
    let status = crate::irql::at(irql, || unsafe {
        event(
            listener.context as PVOID,
            0,
            std::ptr::null_mut(),
            (&raw mut remote).cast(),
            socket as *mut wsk_sys::WSK_SOCKET,
            &raw mut context,
            &raw mut dispatch,
        )
    });
    state::with(|s| {
        s.events.push(Event::WskAcceptEvent { status });
        if status == STATUS_SUCCESS
            && !dispatch.is_null()
            && let Some(peer) = s.peers.get_mut(&socket)
        {
            peer.events = Some(Callbacks {
                context: context as usize,
                dispatch: dispatch as usize,
                ..Callbacks::default()
            });
        }
    });
    status == STATUS_SUCCESS
}

/// With `socket`'s receive-from events on and no `WskReceiveFrom` pending, hands its queued
/// datagrams to the client's `WskReceiveFromEvent` at `DISPATCH_LEVEL`, as one list (each over
/// its own MDL, with its sender), one call at a time.
pub(crate) fn indicate_datagrams(socket: usize) {
    loop {
        let job = state::with(|s| {
            let peer = s.peers.get_mut(&socket)?;
            let callbacks = peer.events?;
            if callbacks.enabled & wsk_sys::WSK_EVENT_RECEIVE_FROM == 0
                || callbacks.indicating
                || peer.closing
                || peer.receive.is_some()
            {
                return None;
            }
            let queue = peer.datagrams.as_mut()?;
            if queue.is_empty() {
                return None;
            }
            let datagrams: Vec<(Vec<u8>, Vec<u8>)> = queue.drain(..).collect();
            if let Some(c) = peer.events.as_mut() {
                c.indicating = true;
            }
            Some((callbacks, datagrams))
        });
        let Some((callbacks, datagrams)) = job else {
            return;
        };
        // SAFETY: the client's datagram socket dispatch ('static, per WskSocket).
        let dispatch =
            unsafe { &*(callbacks.dispatch as *const wsk_sys::WSK_CLIENT_DATAGRAM_DISPATCH) };
        let mut addresses: Vec<Vec<u8>> = datagrams.iter().map(|(a, _)| a.clone()).collect();
        let mut mdls: Vec<Box<MDL>> = datagrams
            .iter()
            .map(|(_, bytes)| {
                Box::new(MDL {
                    Next: std::ptr::null_mut(),
                    Size: 48,
                    MdlFlags: MDL_SOURCE_IS_NONPAGED_POOL,
                    Process: std::ptr::null_mut(),
                    MappedSystemVa: bytes.as_ptr().cast_mut().cast(),
                    StartVa: std::ptr::null_mut(),
                    ByteCount: u32::try_from(bytes.len()).unwrap(),
                    ByteOffset: 0,
                })
            })
            .collect();
        let mut list: Vec<wsk_sys::WSK_DATAGRAM_INDICATION> = (0..datagrams.len())
            .map(|i| wsk_sys::WSK_DATAGRAM_INDICATION {
                Next: std::ptr::null_mut(),
                Buffer: WSK_BUF {
                    Mdl: &raw mut *mdls[i],
                    Offset: 0,
                    Length: datagrams[i].1.len(),
                },
                ControlInfo: std::ptr::null_mut(),
                ControlInfoLength: 0,
                RemoteAddress: addresses[i].as_mut_ptr().cast(),
            })
            .collect();
        for i in 1..list.len() {
            let next = &raw mut list[i];
            list[i - 1].Next = next;
        }
        let irql = state::with(|s| crate::irql::callback(s, "WskReceiveFromEvent"));
        let status = dispatch
            .WskReceiveFromEvent
            .map_or(STATUS_SUCCESS, |event| {
                // SAFETY: the client's callback with its context and a well-formed list over
                // memory alive for the call.
                crate::irql::at(irql, || unsafe {
                    event(callbacks.context as PVOID, 0, &raw mut list[0])
                })
            });
        drop(list);
        drop(mdls);
        drop(addresses);
        state::with(|s| {
            if status != STATUS_SUCCESS {
                s.violation(format!(
                    "WskReceiveFromEvent answered {status:#x} (the library takes every datagram or drops it)"
                ));
            }
            s.events.push(Event::WskReceiveFromEvent {
                datagrams: datagrams.len(),
            });
            if let Some(c) = s.peers.get_mut(&socket).and_then(|p| p.events.as_mut()) {
                c.indicating = false;
            }
        });
    }
}
