//! The model's ntoskrnl.exe: pool with per-tag accounting, `MmGetSystemRoutineAddress`, the
//! `DbgPrintEx` sink, and the provider's WSK dispatch functions.

use core::ffi::{c_char, c_void};
use std::alloc::{Layout, alloc, alloc_zeroed, dealloc};
use std::ffi::CStr;

use crate::Status;
use wsk_sys::{
    ADDRESS_FAMILY, ADDRINFOEXW, DRIVER_OBJECT, EPROCESS, ETHREAD, GUID, IRP, NTSTATUS,
    NonPagedPool, NonPagedPoolNx, POOL_FLAG_NON_PAGED, POOL_FLAGS, POOL_TYPE, PVOID, PWSK_CLIENT,
    RTL_OSVERSIONINFOW, SECURITY_DESCRIPTOR, SOCKADDR, UNICODE_STRING, WSK_PROVIDER_DISPATCH,
};

use super::image;
use super::irp;
use super::state::{self, Allocation, BindingState, Event, ProviderId};

/// Pool blocks are 16-byte aligned on x64.
const POOL_ALIGN: usize = 16;

fn allocate(routine: &'static str, size: usize, tag: u32, zeroed: bool) -> PVOID {
    let ok = state::with(|s| {
        let injected = image::driver_calls(s, routine).is_some();
        let nth = s.nth_fails(crate::Failable::Pool);
        let ok = s.failing_allocations == 0 && !nth && !injected;
        s.failing_allocations = s.failing_allocations.saturating_sub(1);
        if size == 0 {
            s.violation("pool allocation of 0 bytes".into());
        }
        s.events.push(Event::Allocate {
            routine,
            tag,
            size,
            ok,
        });
        ok
    });
    if !ok || size == 0 {
        return std::ptr::null_mut();
    }
    let layout = Layout::from_size_align(size, POOL_ALIGN).expect("pool layout");
    let memory = if zeroed {
        // SAFETY: a non-zero size.
        unsafe { alloc_zeroed(layout) }
    } else {
        // SAFETY: a non-zero size.
        unsafe { alloc(layout) }
    };
    assert!(!memory.is_null(), "host allocation failed");
    if !zeroed {
        // Like real pool: old contents, here a recognisable pattern.
        // SAFETY: `memory` holds `size` bytes.
        unsafe { memory.write_bytes(0xCD, size) };
    }
    state::with(|s| {
        s.allocations
            .insert(memory as usize, Allocation { tag, size });
        s.allocation_count += 1;
    });
    memory.cast()
}

/// `ExAllocatePoolWithTag`: old contents (0xCD), like real pool.
///
/// # Safety
/// As the C function.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn ExAllocatePoolWithTag(
    PoolType: POOL_TYPE,
    NumberOfBytes: usize,
    Tag: u32,
) -> PVOID {
    state::with(|s| {
        let (major, minor, _) = s.os_version;
        let nx_exists = major > 6 || (major == 6 && minor >= 2);
        if PoolType == NonPagedPoolNx && !nx_exists {
            s.violation(format!(
                "NonPagedPoolNx on Windows {major}.{minor}, which has no such pool type"
            ));
        } else if PoolType == NonPagedPool && nx_exists {
            s.violation(format!(
                "executable NonPagedPool on Windows {major}.{minor}, which has NonPagedPoolNx"
            ));
        } else if PoolType != NonPagedPoolNx && PoolType != NonPagedPool {
            s.violation(format!("pool type {PoolType} is not non-paged"));
        }
    });
    allocate("ExAllocatePoolWithTag", NumberOfBytes, Tag, false)
}

/// `ExAllocatePool2`: zeroed. Deliberately not exported under its name: the driver can reach it
/// only through `MmGetSystemRoutineAddress`, as on systems where importing it would fail.
unsafe extern "system" fn model_ex_allocate_pool2(
    Flags: POOL_FLAGS,
    NumberOfBytes: usize,
    Tag: u32,
) -> PVOID {
    if Flags & POOL_FLAG_NON_PAGED == 0 {
        state::with(|s| s.violation(format!("ExAllocatePool2 flags {Flags:#x} lack NON_PAGED")));
    }
    allocate("ExAllocatePool2", NumberOfBytes, Tag, true)
}

/// `ExFreePoolWithTag`: the block must be live and freed with its own tag.
///
/// # Safety
/// As the C function.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn ExFreePoolWithTag(P: PVOID, Tag: u32) {
    let known = state::with(|s| {
        image::driver_calls(s, "ExFreePoolWithTag");
        s.events.push(Event::Free { tag: Tag });
        match s.allocations.remove(&(P as usize)) {
            None => {
                s.violation(format!("free of {P:p}, which is not a live pool block"));
                None
            }
            Some(allocation) => {
                if allocation.tag != Tag {
                    s.violation(format!(
                        "block {P:p} allocated with tag {:#x} freed with {Tag:#x}",
                        allocation.tag
                    ));
                }
                Some(allocation)
            }
        }
    });
    if let Some(allocation) = known {
        let layout = Layout::from_size_align(allocation.size, POOL_ALIGN).expect("pool layout");
        // SAFETY: allocated by `allocate` with this layout, and removed from the live set above.
        unsafe { dealloc(P.cast(), layout) };
    }
}

/// `MmGetSystemRoutineAddress`: knows `ExAllocatePool2` when the session says it is available.
///
/// # Safety
/// As the C function.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn MmGetSystemRoutineAddress(
    SystemRoutineName: *const UNICODE_STRING,
) -> *mut c_void {
    // SAFETY: per the contract, a valid counted string.
    let name = unsafe { &*SystemRoutineName };
    // SAFETY: its buffer holds `Length` bytes.
    let name = unsafe { std::slice::from_raw_parts(name.Buffer, usize::from(name.Length) / 2) };
    let name = String::from_utf16_lossy(name);
    let routine: *mut c_void = match name.as_str() {
        "ExAllocatePool2" if state::with(|s| s.pool2_available) => {
            model_ex_allocate_pool2 as *mut c_void
        }
        "KeQueryPerformanceCounter" => model_ke_query_performance_counter as *mut c_void,
        _ => std::ptr::null_mut(),
    };
    let found = !routine.is_null();
    state::with(|s| {
        image::driver_calls(s, "MmGetSystemRoutineAddress");
        s.events.push(Event::MmGetSystemRoutineAddress {
            name: name.clone(),
            found,
        });
    });
    routine
}

/// The model's `KeQueryPerformanceCounter` (found by name, as on Wine, which exports it from
/// hal.dll only): the host's monotonic clock in 100 ns ticks, 10 MHz.
unsafe extern "system" fn model_ke_query_performance_counter(
    PerformanceFrequency: *mut wsk_sys::LARGE_INTEGER,
) -> wsk_sys::LARGE_INTEGER {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    if !PerformanceFrequency.is_null() {
        // SAFETY: per the contract, a writable LARGE_INTEGER when not NULL.
        unsafe { *PerformanceFrequency = 10_000_000 };
    }
    let elapsed = START.get_or_init(std::time::Instant::now).elapsed();
    i64::try_from(elapsed.as_nanos() / 100).unwrap_or(i64::MAX)
}

/// `RtlGetVersion`: the session's modelled Windows version.
///
/// # Safety
/// As the C function.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn RtlGetVersion(
    lpVersionInformation: *mut RTL_OSVERSIONINFOW,
) -> NTSTATUS {
    let (major, minor, build) = state::with(|s| {
        image::driver_calls(s, "RtlGetVersion");
        s.events.push(Event::RtlGetVersion);
        s.os_version
    });
    // SAFETY: per the contract, a writable RTL_OSVERSIONINFOW.
    let info = unsafe { &mut *lpVersionInformation };
    if info.dwOSVersionInfoSize as usize != size_of::<RTL_OSVERSIONINFOW>() {
        state::with(|s| s.violation("RtlGetVersion: dwOSVersionInfoSize is wrong".into()));
        return Status::INVALID_PARAMETER.raw();
    }
    info.dwMajorVersion = major;
    info.dwMinorVersion = minor;
    info.dwBuildNumber = build;
    info.dwPlatformId = 2; // VER_PLATFORM_WIN32_NT
    Status::SUCCESS.raw()
}

/// Receives each formatted `DbgPrintEx` line from `dbgprint.c`.
///
/// # Safety
/// `text` is a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wsk_host_log_sink(component: u32, level: u32, text: *const c_char) {
    // SAFETY: per the contract.
    let text = unsafe { CStr::from_ptr(text) }.to_string_lossy();
    let line = text.trim_end_matches('\n').to_string();
    if std::env::var_os("WSK_HOST_LOG").is_some() {
        eprintln!("[DbgPrintEx {component}:{level}] {line}");
    }
    state::with(|s| {
        image::driver_calls(s, "DbgPrintEx");
        s.log.push(line);
    });
}

/// A zeroed `DRIVER_OBJECT`, as the I/O manager hands to `DriverEntry` (for what this driver
/// reads and writes).
pub(crate) fn zeroed_driver_object() -> DRIVER_OBJECT {
    // SAFETY: DRIVER_OBJECT is plain data (integers, raw pointers, Option<fn>); all zeroes is a
    // valid value of each.
    unsafe { std::mem::zeroed() }
}

/// A provider function called by the driver: recorded; the failure a test injected, if any.
fn provider_call(name: &'static str, client: PWSK_CLIENT) -> Option<Status> {
    state::with(|s| {
        let injected = image::driver_calls(s, name);
        // "After ClientDetachProvider has been called, the client module should not make any more
        // calls to any of the provider module's NPI functions" (NPI_CLIENT_DETACH_PROVIDER_FN).
        // Checked from the callback's return on: a call whose check came before the detach began
        // may still race the callback itself. Freeing what the provider handed out is not new
        // work (the library takes WskFreeAddressInfo with WskGetAddressInfo).
        let provider = provider_of(client);
        let mut bindings = s
            .bindings
            .iter()
            .filter(|b| b.provider == provider)
            .peekable();
        let detached = bindings.peek().is_some()
            && bindings.all(|b| {
                matches!(
                    b.state,
                    BindingState::DetachPending | BindingState::CleaningUp
                )
            });
        if detached && name != "WskFreeAddressInfo" {
            s.violation(format!(
                "{name} called through a binding whose detach began (ClientDetachProvider \
                 returned): no provider NPI call after the detach"
            ));
        }
        s.events.push(Event::ProviderCall {
            name,
            client: client as usize,
        });
        injected
    })
}

/// Completes `irp` with an injected `status` on a provider thread; the call answers pending.
fn fail_later(irp: *mut IRP, status: Status) -> NTSTATUS {
    if !irp::begin(irp) {
        return Status::INVALID_PARAMETER.raw();
    }
    let irp = irp as usize;
    spawn_provider(move || irp::complete(irp as *mut IRP, status, 0));
    Status::PENDING.raw()
}

/// Runs `f` on a provider thread (the session waits for these before its end check).
pub(crate) fn spawn_provider(f: impl FnOnce() + Send + 'static) {
    state::with(|s| s.provider_threads += 1);
    std::thread::spawn(move || {
        f();
        state::with(|s| s.provider_threads -= 1);
    });
}

/// The model provider that handed out `client` (its `WSK_CLIENT` encodes the provider id).
fn provider_of(client: PWSK_CLIENT) -> ProviderId {
    ProviderId(client as usize & 0xFFFF)
}

unsafe extern "system" fn wsk_socket(
    Client: PWSK_CLIENT,
    _AddressFamily: ADDRESS_FAMILY,
    _SocketType: u16,
    _Protocol: u32,
    Flags: u32,
    SocketContext: PVOID,
    Dispatch: *const c_void,
    _OwningProcess: *mut EPROCESS,
    _OwningThread: *mut ETHREAD,
    _SecurityDescriptor: *mut SECURITY_DESCRIPTOR,
    Irp: *mut IRP,
) -> NTSTATUS {
    let injected = provider_call("WskSocket", Client);
    let callbacks = (SocketContext as usize, Dispatch as usize);
    let listen = Flags == wsk_sys::WSK_FLAG_LISTEN_SOCKET;
    let datagram = Flags == wsk_sys::WSK_FLAG_DATAGRAM_SOCKET;
    if datagram
        && state::with(|s| {
            s.provider(provider_of(Client))
                .is_some_and(|p| p.config.datagram_unsupported)
        })
    {
        // Wine: datagram sockets are not implemented (the IRP completed with that).
        if !irp::begin(Irp) {
            return Status::INVALID_PARAMETER.raw();
        }
        let irp_addr = Irp as usize;
        spawn_provider(move || {
            irp::complete(
                irp_addr as *mut IRP,
                Status::from_raw(wsk_sys::STATUS_NOT_IMPLEMENTED),
                0,
            );
        });
        return Status::PENDING.raw();
    }
    let listen = if datagram { None } else { Some(listen) };
    let provider = provider_of(Client);
    let (failure, hangs, stub, made_anyway) = state::with(|s| {
        s.provider(provider)
            .map_or((None, false, false, false), |p| {
                (
                    p.config.socket_failure,
                    p.config.socket_hangs_until_cancelled,
                    p.config.socket_stub,
                    p.config.socket_made_despite_cancel,
                )
            })
    });
    if stub {
        // Like Wine's stubs: an answer, and the IRP never completed.
        return wsk_sys::STATUS_NOT_IMPLEMENTED;
    }
    if !irp::begin(Irp) {
        return Status::INVALID_PARAMETER.raw();
    }
    let irp_addr = Irp as usize;
    if hangs {
        spawn_provider(move || {
            let cancelled = state::wait_for(super::WAIT_LIMIT, |s| {
                s.irps.get(&irp_addr).is_some_and(|i| i.cancelled)
            });
            if !cancelled {
                state::with(|s| s.violation("a hanging WskSocket was never cancelled".into()));
            }
            if made_anyway {
                let socket = new_socket(provider, listen, callbacks);
                irp::complete(irp_addr as *mut IRP, Status::SUCCESS, socket);
            } else {
                irp::complete(
                    irp_addr as *mut IRP,
                    Status::from_raw(wsk_sys::STATUS_CANCELLED),
                    0,
                );
            }
        });
        return Status::PENDING.raw();
    }
    if let Some(status) = injected.or(failure) {
        state::with(|s| s.events.push(Event::WskSocket { status }));
        spawn_provider(move || irp::complete(irp_addr as *mut IRP, status, 0));
        return Status::PENDING.raw();
    }
    let socket = new_socket(provider, listen, callbacks);
    let inline = state::with(|s| {
        s.provider(provider)
            .is_some_and(|p| p.config.requests_complete_inline)
    });
    if inline {
        irp::complete(irp_addr as *mut IRP, Status::SUCCESS, socket);
        return Status::SUCCESS.raw();
    }
    spawn_provider(move || irp::complete(irp_addr as *mut IRP, Status::SUCCESS, socket));
    Status::PENDING.raw()
}

/// A new socket of `provider` — a connection socket with its echo peer (`Some(false)`), a
/// listening one (`Some(true)`) or a datagram one with its echo peer (`None`); its address.
fn new_socket(provider: ProviderId, listen: Option<bool>, callbacks: (usize, usize)) -> usize {
    let dispatch: *const c_void = match listen {
        Some(true) => (&raw const super::socket::LISTEN_DISPATCH).cast(),
        Some(false) => (&raw const super::socket::DISPATCH).cast(),
        None => (&raw const super::socket::DATAGRAM_DISPATCH).cast(),
    };
    let socket = super::socket::Peer::insert(provider, dispatch, |peer| {
        match listen {
            Some(true) => peer.listen = Some(super::socket::Listen::default()),
            Some(false) => {}
            None => peer.datagrams = Some(std::collections::VecDeque::new()),
        }
        // The client's context and dispatch for the socket's event callbacks.
        if callbacks.1 != 0 {
            peer.events = Some(super::events::Callbacks {
                context: callbacks.0,
                dispatch: callbacks.1,
                ..super::events::Callbacks::default()
            });
        }
    });
    state::with(|s| {
        s.events.push(Event::WskSocket {
            status: Status::SUCCESS,
        });
    });
    socket
}

/// `WskSocketConnect`: with `socket_connect`, a connection socket to its echo peer, connected;
/// otherwise it answers `STATUS_NOT_SUPPORTED` without taking the IRP (a provider without it).
unsafe extern "system" fn wsk_socket_connect(
    Client: PWSK_CLIENT,
    _SocketType: u16,
    _Protocol: u32,
    _LocalAddress: *mut SOCKADDR,
    _RemoteAddress: *mut SOCKADDR,
    _Flags: u32,
    _SocketContext: PVOID,
    _Dispatch: *const c_void,
    _OwningProcess: *mut EPROCESS,
    _OwningThread: *mut ETHREAD,
    _SecurityDescriptor: *mut SECURITY_DESCRIPTOR,
    Irp: *mut IRP,
) -> NTSTATUS {
    let injected = provider_call("WskSocketConnect", Client);
    let provider = provider_of(Client);
    let implemented = state::with(|s| {
        s.provider(provider)
            .is_some_and(|p| p.config.socket_connect)
    });
    if !implemented {
        return Status::NOT_SUPPORTED.raw();
    }
    if !irp::begin(Irp) {
        return Status::INVALID_PARAMETER.raw();
    }
    let irp_addr = Irp as usize;
    if let Some(status) = injected {
        spawn_provider(move || irp::complete(irp_addr as *mut IRP, status, 0));
        return Status::PENDING.raw();
    }
    let socket = new_socket(provider, Some(false), (0, 0));
    state::with(|s| {
        s.events.push(Event::WskSocketConnect);
        if let Some(peer) = s.peers.get_mut(&socket) {
            peer.connected = true;
        }
    });
    spawn_provider(move || irp::complete(irp_addr as *mut IRP, Status::SUCCESS, socket));
    Status::PENDING.raw()
}

unsafe extern "system" fn wsk_control_client(
    Client: PWSK_CLIENT,
    _ControlCode: u32,
    _InputSize: usize,
    _InputBuffer: PVOID,
    _OutputSize: usize,
    _OutputBuffer: PVOID,
    _OutputSizeReturned: *mut usize,
    _Irp: *mut IRP,
) -> NTSTATUS {
    provider_call("WskControlClient", Client);
    Status::SUCCESS.raw()
}

/// An address chain the model handed out: the entries and the addresses they point at.
pub(crate) struct AddressChain {
    pub _entries: Vec<ADDRINFOEXW>,
    pub _addresses: Vec<wsk_sys::SOCKADDR_IN>,
}

// SAFETY: plain memory the driver reads; the raw pointers point into the same chain.
unsafe impl Send for AddressChain {}

/// `WskGetAddressInfo`: `localhost` is 127.0.0.1; any other name is not found. The chain is the
/// model's, freed by `WskFreeAddressInfo` (a chain never freed is a leak at the session's end).
unsafe extern "system" fn wsk_get_address_info(
    Client: PWSK_CLIENT,
    NodeName: *mut UNICODE_STRING,
    _ServiceName: *mut UNICODE_STRING,
    _NameSpace: u32,
    _Provider: *mut GUID,
    _Hints: *mut ADDRINFOEXW,
    Result: *mut *mut ADDRINFOEXW,
    _OwningProcess: *mut EPROCESS,
    _OwningThread: *mut ETHREAD,
    Irp: *mut IRP,
) -> NTSTATUS {
    if let Some(status) = provider_call("WskGetAddressInfo", Client) {
        return fail_later(Irp, status);
    }
    // SAFETY: the client passes a valid counted string.
    let name = unsafe { &*NodeName };
    // SAFETY: its buffer holds `Length` bytes.
    let units = unsafe { std::slice::from_raw_parts(name.Buffer, usize::from(name.Length) / 2) };
    let name = String::from_utf16_lossy(units);
    if !irp::begin(Irp) {
        return Status::INVALID_PARAMETER.raw();
    }
    let irp_addr = Irp as usize;
    if name != "localhost" {
        spawn_provider(move || {
            irp::complete(irp_addr as *mut IRP, Status::from_raw(STATUS_NOT_FOUND), 0);
        });
        return Status::PENDING.raw();
    }
    let mut addresses = vec![wsk_sys::SOCKADDR_IN {
        sin_family: wsk_sys::AF_INET,
        sin_port: 0,
        sin_addr: [127, 0, 0, 1],
        sin_zero: [0; 8],
    }];
    let mut entries = vec![ADDRINFOEXW {
        ai_flags: 0,
        ai_family: i32::from(wsk_sys::AF_INET),
        ai_socktype: 1,
        ai_protocol: 6,
        ai_addrlen: size_of::<wsk_sys::SOCKADDR_IN>(),
        ai_canonname: std::ptr::null_mut(),
        ai_addr: addresses.as_mut_ptr().cast(),
        ai_blob: std::ptr::null_mut(),
        ai_bloblen: 0,
        ai_provider: std::ptr::null_mut(),
        ai_next: std::ptr::null_mut(),
    }];
    let head = entries.as_mut_ptr();
    // SAFETY: per the contract, a valid out-pointer, valid until the IRP completes.
    unsafe { Result.write(head) };
    state::with(|s| {
        s.address_chains.insert(
            head as usize,
            AddressChain {
                _entries: entries,
                _addresses: addresses,
            },
        );
    });
    spawn_provider(move || irp::complete(irp_addr as *mut IRP, Status::SUCCESS, 0));
    Status::PENDING.raw()
}

/// `STATUS_NOT_FOUND`.
const STATUS_NOT_FOUND: NTSTATUS = 0xC000_0225_u32.cast_signed();

unsafe extern "system" fn wsk_free_address_info(Client: PWSK_CLIENT, AddrInfo: *mut ADDRINFOEXW) {
    provider_call("WskFreeAddressInfo", Client);
    state::with(|s| {
        if s.address_chains.remove(&(AddrInfo as usize)).is_none() {
            s.violation(format!(
                "WskFreeAddressInfo of {AddrInfo:p}: not a chain the provider made"
            ));
        }
    });
}

unsafe extern "system" fn wsk_get_name_info(
    Client: PWSK_CLIENT,
    _SockAddr: *mut SOCKADDR,
    _SockAddrLength: u32,
    _NodeName: *mut UNICODE_STRING,
    _ServiceName: *mut UNICODE_STRING,
    _Flags: u32,
    _OwningProcess: *mut EPROCESS,
    _OwningThread: *mut ETHREAD,
    _Irp: *mut IRP,
) -> NTSTATUS {
    provider_call("WskGetNameInfo", Client);
    Status::NOT_SUPPORTED.raw()
}

/// The provider's dispatch table (WSK 1.1 layout); `Version` is set per attach.
pub(crate) fn provider_dispatch() -> WSK_PROVIDER_DISPATCH {
    WSK_PROVIDER_DISPATCH {
        Version: 0,
        Reserved: 0,
        WskSocket: Some(wsk_socket),
        WskSocketConnect: Some(wsk_socket_connect),
        WskControlClient: Some(wsk_control_client),
        WskGetAddressInfo: Some(wsk_get_address_info),
        WskFreeAddressInfo: Some(wsk_free_address_info),
        WskGetNameInfo: Some(wsk_get_name_info),
    }
}
