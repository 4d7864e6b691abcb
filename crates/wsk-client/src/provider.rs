//! Binding references: the safe way to use the attached WSK provider. A [`BindingRef`] keeps
//! its binding from completing a detach (and the client's unload from going on) until it is
//! dropped, so the `WSK_CLIENT` and the provider's dispatch it hands out stay valid meanwhile. It
//! is `'static` and `Send`: move it into a socket object or an IRP's completion context, and drop
//! it where the operation ends.
//!
//! Where to drop the last references: in a context the unload waits for. The library's own
//! contexts qualify — a work item ([`crate::work`]), `DriverEntry`/`DriverUnload`, the
//! [`crate::Client::on_detach`] callback — and so does a thread of the driver's own that its unload
//! joins before the [`crate::Registration`] is dropped. A thread nobody waits for may still be
//! running image code after it released the last reference: the unload then returns and the image
//! is unmapped under it. The same holds for asking for a reference ([`BindingRef::acquire`],
//! [`BindingRef::try_clone`]): a refused request is counted for an instant, like a reference
//! taken and dropped at once, and may be the last release a detach or the unload waits for.
//!
//! IRQL: everything here runs at any IRQL <= `DISPATCH_LEVEL`; the WSK functions a reference hands
//! out have their own limits.

use core::ptr::NonNull;

use crate::binding::{self, AcquireError, InFlight};
use crate::client::Client;
use crate::status::{NtError, NtStatus};
use crate::sys::{
    PFN_WSK_CONTROL_CLIENT, PFN_WSK_FREE_ADDRESS_INFO, PFN_WSK_GET_ADDRESS_INFO,
    PFN_WSK_GET_NAME_INFO, PFN_WSK_SOCKET, PFN_WSK_SOCKET_CONNECT, PWSK_CLIENT,
    WSK_PROVIDER_DISPATCH,
};
use crate::version::WskVersion;

/// Why the provider could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProviderError {
    /// No WSK provider is attached.
    NotAttached,
    /// The provider is detaching (or still attaching): no new call may start.
    Detaching,
    /// The provider attached without a `WSK_CLIENT` or dispatch table.
    BadProvider,
    /// The client is not registered.
    NotRegistered,
    /// The client's unload has begun: no new reference.
    Unloading,
}

impl From<ProviderError> for NtError {
    fn from(error: ProviderError) -> Self {
        match error {
            ProviderError::NotAttached | ProviderError::Detaching => Self::DEVICE_NOT_READY,
            ProviderError::BadProvider => Self::UNSUCCESSFUL,
            ProviderError::NotRegistered | ProviderError::Unloading => Self::INVALID_DEVICE_STATE,
        }
    }
}

impl From<ProviderError> for NtStatus {
    fn from(error: ProviderError) -> Self {
        NtError::from(error).status()
    }
}

impl From<AcquireError> for ProviderError {
    fn from(error: AcquireError) -> Self {
        match error {
            AcquireError::NotAttached => Self::NotAttached,
            AcquireError::Detaching => Self::Detaching,
            AcquireError::Unloading => Self::Unloading,
        }
    }
}

/// A counted reference on client `C`'s attached binding: the provider's `WSK_CLIENT` and
/// dispatch, valid until it is dropped. See the module documentation for where to drop it.
pub struct BindingRef<C: Client> {
    // One count, on the binding's slot: its last release completes a detach, then wakes the
    // unload.
    call: InFlight<C>,
    // INVARIANT: the provider's dispatch, valid while `call` is held; only the members of
    // `version` may be read.
    dispatch: NonNull<WSK_PROVIDER_DISPATCH>,
}

// SAFETY: the reference is a count on static state plus pointers into the provider's binding,
// which the count keeps valid whatever thread holds it; releasing it is legal on any thread at
// IRQL <= DISPATCH_LEVEL.
unsafe impl<C: Client> Send for BindingRef<C> {}
// SAFETY: `&BindingRef` only reads immutable binding data.
unsafe impl<C: Client> Sync for BindingRef<C> {}

impl<C: Client> BindingRef<C> {
    /// A reference on the first attached binding of client `C`.
    ///
    /// # Errors
    /// [`ProviderError`]: not registered, unloading, no binding attached, the only bindings
    /// detaching, or a provider without `WSK_CLIENT`/dispatch.
    pub fn acquire() -> Result<Self, ProviderError> {
        let call = binding::acquire::<C>(&C::state().slots).map_err(|error| {
            if C::state().runtime.is_registered() {
                ProviderError::from(error)
            } else {
                ProviderError::NotRegistered
            }
        })?;
        let context = call.context();
        if context.wsk_client.is_null() {
            return Err(ProviderError::BadProvider);
        }
        let dispatch = NonNull::new(
            context
                .provider_dispatch
                .cast_mut()
                .cast::<WSK_PROVIDER_DISPATCH>(),
        )
        .ok_or(ProviderError::BadProvider)?;
        // INVARIANT: the dispatch NMR returned for this binding, valid while the call is held.
        Ok(Self { call, dispatch })
    }

    /// Another reference on the same binding (for a second operation that ends on its own).
    ///
    /// # Errors
    /// [`ProviderError::Unloading`] or [`ProviderError::Detaching`] once those have begun.
    pub fn try_clone(&self) -> Result<Self, ProviderError> {
        let call = self.call.try_clone()?;
        // INVARIANT: the same binding's dispatch, kept valid by the new count.
        Ok(Self {
            call,
            dispatch: self.dispatch,
        })
    }

    /// Another reference on the same binding, made from this one: never refused, even once a
    /// detach or the unload began (this reference keeps the count above zero meanwhile). For a
    /// socket's close, which must happen then too.
    pub(crate) fn clone_held(&self) -> Self {
        // INVARIANT: the same binding's dispatch, kept valid by the new count.
        Self {
            call: self.call.clone_held(),
            dispatch: self.dispatch,
        }
    }

    /// The `WSK_CLIENT` to pass to the provider's functions.
    #[must_use]
    pub fn client(&self) -> PWSK_CLIENT {
        self.call.context().wsk_client
    }

    /// The negotiated WSK version.
    #[must_use]
    pub fn version(&self) -> WskVersion {
        self.call.context().version
    }

    fn has_v1_1(&self) -> bool {
        self.version() >= WskVersion::V1_1
    }

    /// Whether the provider's functions may still be called: from the moment its detach (or
    /// the client's unload) began, `ClientDetachProvider`'s page says the client "should not make
    /// any more calls to any of the provider module's NPI functions" — so every function below is
    /// `None` from then on, while the reference itself stays valid (sockets opened through it
    /// still close).
    ///
    /// # Errors
    /// [`ProviderError::Detaching`] or [`ProviderError::Unloading`].
    pub fn ensure_open(&self) -> Result<(), ProviderError> {
        if self.call.is_open() {
            Ok(())
        } else if C::state().runtime.is_unloading() {
            Err(ProviderError::Unloading)
        } else {
            Err(ProviderError::Detaching)
        }
    }

    /// A member of the dispatch, while the binding is open.
    fn member<T>(&self, read: impl FnOnce(&WSK_PROVIDER_DISPATCH) -> Option<T>) -> Option<T> {
        // SAFETY: by the type invariant the dispatch is valid while `call` is held.
        let dispatch = unsafe { self.dispatch.as_ref() };
        self.ensure_open().ok().and_then(|()| read(dispatch))
    }

    /// `WskSocket` (WSK 1.0); `None` once the detach began ([`BindingRef::ensure_open`]).
    #[must_use]
    pub fn socket(&self) -> PFN_WSK_SOCKET {
        self.member(|d| d.WskSocket)
    }

    /// `WskSocketConnect` (WSK 1.0); `None` once the detach began.
    #[must_use]
    pub fn socket_connect(&self) -> PFN_WSK_SOCKET_CONNECT {
        self.member(|d| d.WskSocketConnect)
    }

    /// `WskControlClient` (WSK 1.0); `None` once the detach began.
    #[must_use]
    pub fn control_client(&self) -> PFN_WSK_CONTROL_CLIENT {
        self.member(|d| d.WskControlClient)
    }

    /// `WskGetAddressInfo`: `None` below WSK 1.1, whose dispatch does not have the member, and
    /// once the detach began.
    #[must_use]
    pub fn get_address_info(&self) -> PFN_WSK_GET_ADDRESS_INFO {
        // The 1.1 member is read only at 1.1 or above.
        self.member(|d| self.has_v1_1().then_some(d.WskGetAddressInfo).flatten())
    }

    /// `WskFreeAddressInfo`: `None` below WSK 1.1 and once the detach began (take it with
    /// `WskGetAddressInfo`, to free what that returned whatever happens meanwhile).
    #[must_use]
    pub fn free_address_info(&self) -> PFN_WSK_FREE_ADDRESS_INFO {
        self.member(|d| self.has_v1_1().then_some(d.WskFreeAddressInfo).flatten())
    }

    /// `WskGetNameInfo`: `None` below WSK 1.1 and once the detach began.
    #[must_use]
    pub fn get_name_info(&self) -> PFN_WSK_GET_NAME_INFO {
        self.member(|d| self.has_v1_1().then_some(d.WskGetNameInfo).flatten())
    }
}

/// Runs `f` with a [`BindingRef`] on client `C`'s attached WSK provider: a detach that arrives
/// meanwhile returns `STATUS_PENDING` and completes when `f` returns (the reference is dropped
/// here, in the caller's context: see the module documentation).
///
/// IRQL <= `DISPATCH_LEVEL` for this function; the WSK functions `f` calls have their own limits
/// (most are `PASSIVE_LEVEL`). `f` must not wait for the driver to unload.
///
/// # Errors
/// [`ProviderError`] when no provider accepts calls; `NtStatus::from` maps it for a C caller.
///
/// # Example
/// ```
/// # // The host model plays NMR and a WSK 1.0-1.1 provider (host builds only).
/// # use wsk_client::{Client, ClientState, PoolTag, Registration, guid};
/// # use wsk_client::binding::BindingSlot;
/// # struct MyDriver;
/// # static STATE: ClientState<[BindingSlot; 1]> = ClientState::new();
/// # impl Client for MyDriver {
/// #     const NAME: &'static core::ffi::CStr = c"my_driver";
/// #     const MODULE_ID: wsk_client::sys::GUID = guid(0x0123_4567_89AB_CDEF_0123_4567_89AB_CDEF);
/// #     const POOL_TAG: PoolTag = PoolTag::new(*b"MyDr");
/// #     const VERSIONS: &'static [WskVersion] = &[WskVersion::V1_1, WskVersion::V1_0];
/// #     fn state() -> &'static ClientState { &STATE }
/// # }
/// # let mut session = wsk_host_model::session();
/// # let _ = session.register_provider(wsk_host_model::ProviderConfig::default_wsk());
/// # let _ = wsk_client::pool::select::<MyDriver>();
/// # let registration = Registration::<MyDriver>::register(session.driver_object()).unwrap();
/// use wsk_client::provider::with_provider;
/// use wsk_client::WskVersion;
///
/// let version = with_provider::<MyDriver, _>(|provider| {
///     // Call the provider here: `provider.control_client()`, `provider.socket()`, ... with
///     // `provider.client()`; a detach that arrives meanwhile waits for this closure.
///     provider.version()
/// })?;
/// assert_eq!(version, WskVersion::V1_1);
/// # drop(registration);
/// # Ok::<(), wsk_client::provider::ProviderError>(())
/// ```
pub fn with_provider<C: Client, R>(
    f: impl FnOnce(&BindingRef<C>) -> R,
) -> Result<R, ProviderError> {
    let reference = BindingRef::<C>::acquire()?;
    Ok(f(&reference))
}
