//! The network layer: what a driver attaches to WSK for — [`socket`] (a TCP connection: create,
//! bind, connect, send, receive, disconnect, close; asynchronous, and waited forms for a thread of
//! the driver's own), [`buffer`] (non-paged bytes with their MDL) and [`resolve`] (address
//! literals, `WskGetAddressInfo`).

pub mod buffer;
pub mod resolve;
pub mod socket;
