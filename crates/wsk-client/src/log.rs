//! Logging through `DbgPrintEx`, in safe code, without `core::fmt` in the image.
//!
//! A line is a C `printf` format (what `DbgPrintEx` takes, so no formatting code is linked) and
//! typed arguments: [`info!`](crate::info), [`warning!`](crate::warning),
//! [`error!`](crate::error), each `(Client, "format", arguments...)`:
//!
//! ```
//! # use wsk_client::{NtError, info};
//! # fn f<C: wsk_client::Client>(n: u32, step: &core::ffi::CStr, status: NtError) {
//! wsk_client::info!(C, "echo ok, %u bytes", n);
//! wsk_client::error!(C, "echo failed: %s 0x%08X", step, status);
//! # }
//! ```
//!
//! The conversions are checked against the arguments' types **at compile time**: each argument
//! is an [`Arg`] of a known [`Kind`] (`u32`/`u16`/`u8`/[`NtError`]/[`NtStatus`]: `%u`, `%x`,
//! `%X`, with flags and width; `i32`: `%d`, `%i`; `u64`: `%llu`, `%llx`, `%llX`; `&CStr` and
//! [`AddressText`]: `%s`), and a format whose conversions do not match — one too many or too
//! few, a `%s` given a number, a Unicode conversion (`%wZ`, `%ws`, `%S`, `%C`, which
//! `DbgPrintEx` may not take above `PASSIVE_LEVEL`), a conversion the list does not know — fails
//! the build of the driver ("the log line's conversions do not match its arguments"). A Rust
//! `&str` is not an [`Arg`]: it has no terminating NUL.
//!
//! Every line is prefixed with the client's [`Client::NAME`] and goes to its
//! [`Client::DEBUG_COMPONENT`]; it may be written at any IRQL. With the feature `no-log`, the
//! library's own lines are compiled out (the drivers' are not).
//!
//! [`AddressText`]: crate::text::AddressText

use core::ffi::CStr;

use crate::Client;
use crate::status::{NtError, NtStatus};
use crate::text::AddressText;

/// The C type a conversion reads, and so the arguments it may be given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `unsigned int` (`%u`, `%x`, `%X`, `%o`).
    U32,
    /// `int` (`%d`, `%i`).
    I32,
    /// A 64-bit integer (`%llu`, `%llx`, `%llX`, `%lld`, `%I64u`, ...).
    U64,
    /// A NUL-terminated byte string (`%s`).
    Str,
}

/// A value a log line may print: its [`Kind`], and the machine word `DbgPrintEx` reads for it.
///
/// Implemented for the types whose C representation the kind names, only.
pub trait Arg {
    /// The conversion's kind this argument matches.
    const KIND: Kind;
    /// The argument as one variadic slot (x64 passes each in 64 bits; a 32-bit conversion reads
    /// the low half). For a string, its address, valid while `self` is borrowed.
    fn word(&self) -> u64;
}

/// The unsigned integers a 32-bit conversion reads (C promotes the narrower ones).
macro_rules! unsigned_arg {
    ($($t:ty),*) => {$(
        impl Arg for $t {
            const KIND: Kind = Kind::U32;
            fn word(&self) -> u64 {
                u64::from(*self)
            }
        }
    )*};
}

unsigned_arg!(u32, u16, u8);

impl Arg for i32 {
    const KIND: Kind = Kind::I32;
    fn word(&self) -> u64 {
        u64::from(self.cast_unsigned())
    }
}

impl Arg for u64 {
    const KIND: Kind = Kind::U64;
    fn word(&self) -> u64 {
        *self
    }
}

/// A failure prints as its `NTSTATUS` bits (`0x%08X`).
impl Arg for NtError {
    const KIND: Kind = Kind::U32;
    fn word(&self) -> u64 {
        u64::from(self.bits())
    }
}

/// A status prints as its bits (`0x%08X`).
impl Arg for NtStatus {
    const KIND: Kind = Kind::U32;
    fn word(&self) -> u64 {
        u64::from(self.raw().cast_unsigned())
    }
}

impl Arg for &CStr {
    const KIND: Kind = Kind::Str;
    fn word(&self) -> u64 {
        self.as_ptr() as u64
    }
}

impl Arg for &AddressText {
    const KIND: Kind = Kind::Str;
    fn word(&self) -> u64 {
        self.as_cstr().as_ptr() as u64
    }
}

/// The most arguments one line takes.
pub const MAX_ARGS: usize = 6;

/// A line's arguments: a tuple of up to [`MAX_ARGS`] [`Arg`]s.
pub trait Args {
    /// The arguments' kinds, in order.
    const KINDS: &'static [Kind];
    /// The arguments as variadic slots (unused slots 0).
    fn words(&self) -> [u64; MAX_ARGS];
}

macro_rules! args_tuple {
    ($($name:ident $index:tt),*) => {
        impl<$($name: Arg),*> Args for ($($name,)*) {
            const KINDS: &'static [Kind] = &[$($name::KIND),*];
            #[allow(unused_mut)]
            fn words(&self) -> [u64; MAX_ARGS] {
                let mut words = [0; MAX_ARGS];
                $(
                    if let Some(word) = words.get_mut($index) {
                        *word = self.$index.word();
                    }
                )*
                words
            }
        }
    };
}

args_tuple!();
args_tuple!(A 0);
args_tuple!(A 0, B 1);
args_tuple!(A 0, B 1, C 2);
args_tuple!(A 0, B 1, C 2, D 3);
args_tuple!(A 0, B 1, C 2, D 3, E 4);
args_tuple!(A 0, B 1, C 2, D 3, E 4, F 5);

/// One line's format, as a type (so that it is checked against the arguments' types at compile
/// time). Written by the logging macros, not by hand.
pub trait Format {
    /// The format as written.
    const TEXT: &'static str;
    /// What `DbgPrintEx` gets: `"%s: " TEXT "\n\0"` (the prefix takes the client's name).
    const LINE: &'static CStr;
}

/// Whether `format`'s conversions read exactly `kinds`, in order (see the module for the list),
/// and it has no NUL.
#[must_use]
#[allow(clippy::indexing_slicing)] // every index is checked against the length first (const fn)
pub const fn conversions_match(format: &str, kinds: &[Kind]) -> bool {
    let bytes = format.as_bytes();
    let mut i = 0;
    let mut arg = 0;
    while i < bytes.len() {
        if bytes[i] == 0 {
            return false;
        }
        if bytes[i] != b'%' {
            i += 1;
            continue;
        }
        i += 1;
        if i < bytes.len() && bytes[i] == b'%' {
            i += 1;
            continue;
        }
        // Flags, width, precision: no `*` (an argument of its own).
        while i < bytes.len() && matches!(bytes[i], b'-' | b'+' | b' ' | b'#' | b'0'..=b'9' | b'.')
        {
            i += 1;
        }
        // Length: `ll`, `I64` (64-bit), `l` (32-bit on Windows), none.
        let mut wide = false;
        if i + 1 < bytes.len() && bytes[i] == b'l' && bytes[i + 1] == b'l' {
            wide = true;
            i += 2;
        } else if i + 2 < bytes.len()
            && bytes[i] == b'I'
            && bytes[i + 1] == b'6'
            && bytes[i + 2] == b'4'
        {
            wide = true;
            i += 3;
        } else if i < bytes.len() && bytes[i] == b'l' {
            i += 1;
        }
        if i >= bytes.len() {
            return false;
        }
        let kind = match (wide, bytes[i]) {
            (false, b'u' | b'x' | b'X' | b'o') => Kind::U32,
            (false, b'd' | b'i') => Kind::I32,
            (true, b'u' | b'x' | b'X' | b'd' | b'i') => Kind::U64,
            (false, b's') => Kind::Str,
            // `%wZ`, `%ws`, `%S`, `%C`, `%c`, `%p`, `%n`, `*`, floating point: not taken.
            _ => return false,
        };
        if arg >= kinds.len() || !kind_eq(kinds[arg], kind) {
            return false;
        }
        arg += 1;
        i += 1;
    }
    arg == kinds.len()
}

const fn kind_eq(a: Kind, b: Kind) -> bool {
    a as u8 == b as u8
}

/// Writes one line for client `C` at `level` (a `DPFLTR_*_LEVEL`); what the logging macros
/// expand to. Fails to compile when `F`'s conversions do not match `A`.
///
/// IRQL: any (no Unicode conversion can be in `F`).
#[inline]
pub fn line<C: Client, F: Format, A: Args>(level: u32, args: &A) {
    const {
        assert!(
            conversions_match(F::TEXT, A::KINDS),
            "the log line's conversions do not match its arguments (see wsk_client::log)"
        );
    }
    let [w0, w1, w2, w3, w4, w5] = args.words();
    let (component, format, name) = (C::DEBUG_COMPONENT, F::LINE.as_ptr(), C::NAME.as_ptr());
    // Exactly as many variadic arguments as the line has (the count is a constant: one arm is
    // compiled per line), so a line costs what a hand-written `DbgPrintEx` call does.
    // SAFETY (each arm): the format's conversions were checked against the arguments' kinds
    // above, each passed as a 64-bit slot of its C type's width or wider (a string: the address
    // of a NUL-terminated string borrowed for the call). The first `%s` takes the client's name,
    // a C string literal. No Unicode conversion: any IRQL.
    let _ = match A::KINDS.len() {
        // SAFETY: as above, no argument.
        0 => unsafe { crate::sys::DbgPrintEx(component, level, format, name) },
        // SAFETY: as above, one argument.
        1 => unsafe { crate::sys::DbgPrintEx(component, level, format, name, w0) },
        // SAFETY: as above, two arguments.
        2 => unsafe { crate::sys::DbgPrintEx(component, level, format, name, w0, w1) },
        // SAFETY: as above, three arguments.
        3 => unsafe { crate::sys::DbgPrintEx(component, level, format, name, w0, w1, w2) },
        // SAFETY: as above, four arguments.
        4 => unsafe { crate::sys::DbgPrintEx(component, level, format, name, w0, w1, w2, w3) },
        // SAFETY: as above, five arguments.
        5 => unsafe { crate::sys::DbgPrintEx(component, level, format, name, w0, w1, w2, w3, w4) },
        // SAFETY: as above, six arguments (`Args` has no more).
        _ => unsafe {
            crate::sys::DbgPrintEx(component, level, format, name, w0, w1, w2, w3, w4, w5)
        },
    };
}

/// What [`line`] becomes for the library's own lines with the feature `no-log`: the check, and
/// nothing written (inlined away, and with it the format string).
#[cfg(feature = "no-log")]
#[inline(always)]
pub(crate) fn discard<F: Format, A: Args>(_args: &A) {
    const {
        assert!(
            conversions_match(F::TEXT, A::KINDS),
            "the log line's conversions do not match its arguments (see wsk_client::log)"
        );
    }
}

/// Writes one line for a client at a `DPFLTR_*_LEVEL`:
/// `wsk_client::log!(MyDriver, DPFLTR_TRACE_LEVEL, "polled %u times", n)`. The format is checked
/// against the arguments at compile time (see [`mod@crate::log`]).
#[macro_export]
macro_rules! log {
    ($client:ty, $level:ident, $format:literal $(, $arg:expr)* $(,)?) => {{
        struct Line;
        impl $crate::log::Format for Line {
            const TEXT: &'static str = $format;
            const LINE: &'static ::core::ffi::CStr =
                match ::core::ffi::CStr::from_bytes_with_nul(concat!("%s: ", $format, "\n\0").as_bytes()) {
                    Ok(line) => line,
                    // A NUL in the format: `line` refuses it at compile time.
                    Err(_) => c"",
                };
        }
        $crate::log::line::<$client, Line, _>($crate::sys::$level, &($($arg,)*))
    }};
}

/// Writes an information line: `wsk_client::info!(MyDriver, "listening on port %u", port)`.
///
/// What the compile-time check refuses (each example must fail to build; `cargo test` builds
/// them): a number for `%s`,
///
/// ```compile_fail,E0080
/// # use wsk_host_model as _; // the host build's DbgPrintEx
/// # use wsk_client::{Client, ClientState, PoolTag, WskVersion, guid};
/// # use wsk_client::binding::BindingSlot;
/// # struct MyDriver;
/// # impl Client for MyDriver {
/// #     const NAME: &'static core::ffi::CStr = c"my_driver";
/// #     const MODULE_ID: wsk_client::sys::GUID = guid(1);
/// #     const POOL_TAG: PoolTag = PoolTag::new(*b"MyDr");
/// #     const VERSIONS: &'static [WskVersion] = &[WskVersion::V1_0];
/// #     fn state() -> &'static ClientState {
/// #         static STATE: ClientState<[BindingSlot; 1]> = ClientState::new();
/// #         &STATE
/// #     }
/// # }
/// wsk_client::info!(MyDriver, "connected to %s", 80u32);
/// ```
///
/// a `u64` for `%u`,
///
/// ```compile_fail,E0080
/// # use wsk_host_model as _; // the host build's DbgPrintEx
/// # use wsk_client::{Client, ClientState, PoolTag, WskVersion, guid};
/// # use wsk_client::binding::BindingSlot;
/// # struct MyDriver;
/// # impl Client for MyDriver {
/// #     const NAME: &'static core::ffi::CStr = c"my_driver";
/// #     const MODULE_ID: wsk_client::sys::GUID = guid(1);
/// #     const POOL_TAG: PoolTag = PoolTag::new(*b"MyDr");
/// #     const VERSIONS: &'static [WskVersion] = &[WskVersion::V1_0];
/// #     fn state() -> &'static ClientState {
/// #         static STATE: ClientState<[BindingSlot; 1]> = ClientState::new();
/// #         &STATE
/// #     }
/// # }
/// wsk_client::info!(MyDriver, "%u bytes", 1u64 << 40);
/// ```
///
/// one argument too few, and a Unicode conversion:
///
/// ```compile_fail,E0080
/// # use wsk_host_model as _; // the host build's DbgPrintEx
/// # use wsk_client::{Client, ClientState, PoolTag, WskVersion, guid};
/// # use wsk_client::binding::BindingSlot;
/// # struct MyDriver;
/// # impl Client for MyDriver {
/// #     const NAME: &'static core::ffi::CStr = c"my_driver";
/// #     const MODULE_ID: wsk_client::sys::GUID = guid(1);
/// #     const POOL_TAG: PoolTag = PoolTag::new(*b"MyDr");
/// #     const VERSIONS: &'static [WskVersion] = &[WskVersion::V1_0];
/// #     fn state() -> &'static ClientState {
/// #         static STATE: ClientState<[BindingSlot; 1]> = ClientState::new();
/// #         &STATE
/// #     }
/// # }
/// wsk_client::error!(MyDriver, "failed: %s 0x%08X", c"connect");
/// ```
///
/// ```compile_fail,E0080
/// # use wsk_host_model as _; // the host build's DbgPrintEx
/// # use wsk_client::{Client, ClientState, PoolTag, WskVersion, guid};
/// # use wsk_client::binding::BindingSlot;
/// # struct MyDriver;
/// # impl Client for MyDriver {
/// #     const NAME: &'static core::ffi::CStr = c"my_driver";
/// #     const MODULE_ID: wsk_client::sys::GUID = guid(1);
/// #     const POOL_TAG: PoolTag = PoolTag::new(*b"MyDr");
/// #     const VERSIONS: &'static [WskVersion] = &[WskVersion::V1_0];
/// #     fn state() -> &'static ClientState {
/// #         static STATE: ClientState<[BindingSlot; 1]> = ClientState::new();
/// #         &STATE
/// #     }
/// # }
/// wsk_client::warning!(MyDriver, "key %wZ", c"Parameters");
/// ```
///
/// while the same lines with matching arguments build:
///
/// ```
/// # use wsk_host_model as _; // the host build's DbgPrintEx
/// # use wsk_client::{Client, ClientState, PoolTag, WskVersion, guid};
/// # use wsk_client::binding::BindingSlot;
/// # struct MyDriver;
/// # impl Client for MyDriver {
/// #     const NAME: &'static core::ffi::CStr = c"my_driver";
/// #     const MODULE_ID: wsk_client::sys::GUID = guid(1);
/// #     const POOL_TAG: PoolTag = PoolTag::new(*b"MyDr");
/// #     const VERSIONS: &'static [WskVersion] = &[WskVersion::V1_0];
/// #     fn state() -> &'static ClientState {
/// #         static STATE: ClientState<[BindingSlot; 1]> = ClientState::new();
/// #         &STATE
/// #     }
/// # }
/// wsk_client::info!(MyDriver, "connected to %s", c"127.0.0.1:7");
/// wsk_client::info!(MyDriver, "%llu bytes", 1u64 << 40);
/// wsk_client::error!(MyDriver, "failed: %s 0x%08X", c"connect", wsk_client::NtError::UNSUCCESSFUL);
/// ```
#[macro_export]
macro_rules! info {
    ($client:ty, $format:literal $(, $arg:expr)* $(,)?) => {
        $crate::log!($client, DPFLTR_INFO_LEVEL, $format $(, $arg)*)
    };
}

/// Writes a warning line: `wsk_client::warning!(MyDriver, "%s missing", name)`.
#[macro_export]
macro_rules! warning {
    ($client:ty, $format:literal $(, $arg:expr)* $(,)?) => {
        $crate::log!($client, DPFLTR_WARNING_LEVEL, $format $(, $arg)*)
    };
}

/// Writes an error line: `wsk_client::error!(MyDriver, "connect failed: 0x%08X", status)`.
#[macro_export]
macro_rules! error {
    ($client:ty, $format:literal $(, $arg:expr)* $(,)?) => {
        $crate::log!($client, DPFLTR_ERROR_LEVEL, $format $(, $arg)*)
    };
}

/// The library's own lines: [`log!`](macro@crate::log) unless the feature `no-log` compiles them out.
#[cfg(not(feature = "no-log"))]
macro_rules! library_log {
    ($client:ty, $level:ident, $format:literal $(, $arg:expr)* $(,)?) => {
        $crate::log!($client, $level, $format $(, $arg)*)
    };
}

/// Feature `no-log`: the library's lines are compiled out — no format string, no `DbgPrintEx`
/// call — but still checked, so that every call site compiles, and lints, the same.
#[cfg(feature = "no-log")]
macro_rules! library_log {
    ($client:ty, $level:ident, $format:literal $(, $arg:expr)* $(,)?) => {{
        struct Line;
        impl $crate::log::Format for Line {
            const TEXT: &'static str = $format;
            const LINE: &'static ::core::ffi::CStr = c"";
        }
        let _ = $crate::sys::$level;
        $crate::log::discard::<Line, _>(&($($arg,)*))
    }};
}

pub(crate) use library_log as log;

#[cfg(test)]
mod tests {
    use super::{Kind, conversions_match};

    #[test]
    fn conversions_are_matched_to_kinds_in_order() {
        assert!(conversions_match("plain", &[]));
        assert!(conversions_match("100%% done", &[]));
        assert!(conversions_match(
            "%u bytes in %llu ms",
            &[Kind::U32, Kind::U64]
        ));
        assert!(conversions_match("%s 0x%08X", &[Kind::Str, Kind::U32]));
        assert!(conversions_match(
            "%d, %llX, %I64u",
            &[Kind::I32, Kind::U64, Kind::U64]
        ));
        assert!(!conversions_match("%u", &[]), "one argument too few");
        assert!(!conversions_match("plain", &[Kind::U32]), "one too many");
        assert!(!conversions_match("%s", &[Kind::U32]), "a number for %s");
        assert!(!conversions_match("%u", &[Kind::Str]), "a string for %u");
        assert!(!conversions_match("%u", &[Kind::U64]), "64 bits for 32");
        assert!(
            !conversions_match("%wZ", &[Kind::Str]),
            "a Unicode conversion"
        );
        assert!(
            !conversions_match("%ws", &[Kind::Str]),
            "a Unicode conversion"
        );
        assert!(
            !conversions_match("%S", &[Kind::Str]),
            "a Unicode conversion"
        );
        assert!(!conversions_match("%p", &[Kind::U64]), "not in the list");
        assert!(
            !conversions_match("%*u", &[Kind::U32, Kind::U32]),
            "a width argument"
        );
        assert!(!conversions_match("trailing %", &[]), "a cut conversion");
        assert!(!conversions_match("a\0b", &[]), "a NUL");
    }
}
