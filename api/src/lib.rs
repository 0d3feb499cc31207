//! REST/WebSocket front end and the store.

pub mod cdr;
pub mod http;
pub mod store;
