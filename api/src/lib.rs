//! REST/WebSocket front end and the store.

pub mod auth;
pub mod cdr;
pub mod control;
pub use domain::e164;
pub mod http;
pub mod store;
pub mod targets;
pub mod twilio;
pub mod twiml;
pub mod v1;
pub mod webhook;
