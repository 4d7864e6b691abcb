//! The network layer: what a driver attaches to WSK for — [`socket`] (a TCP connection: create,
//! bind, connect, send, receive, disconnect, close; a listening socket and its accepts; options
//! and addresses; asynchronous, and waited forms for a thread of the driver's own), [`buffer`] (non-paged bytes with their MDL), [`resolve`] (address
//! literals, `WskGetAddressInfo`) and [`text`] (an address as text for a log line).

pub mod buffer;
pub mod resolve;
pub mod socket;
pub mod text;
