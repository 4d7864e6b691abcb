//! The kernel layer: what the library builds on ntoskrnl, below WSK and NMR — [`pool`] (tagged,
//! counted allocations), [`irp`] (requests: an IRP, its completion routine, the waited and the
//! asynchronous forms), [`work`] (work items the unload waits for), [`task`] (the executor of
//! futures on work items), [`timer`] and [`time`] (one `KTIMER` + `KDPC` per client; the kernel's
//! 100 ns units), [`registry`] (the driver's `Parameters` values) and the crate's `KSPIN_LOCK`
//! guard.

pub mod irp;
pub mod pool;
pub mod registry;
pub(crate) mod spin_lock;
pub mod task;
pub mod time;
pub mod timer;
pub mod work;
