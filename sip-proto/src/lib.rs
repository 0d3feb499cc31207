//! Sans-IO SIP: message model and parser, transactions, digest auth, SDP.
//! Nothing here touches a socket or reads the clock.

pub mod build;
pub mod digest;
pub mod framer;
pub mod grammar;
pub mod header;
pub mod headers_typed;
pub mod message;
pub mod method;
pub mod parse;
pub mod sdes;
pub mod sdp;
pub mod timers;
pub mod transaction;
pub mod transport;
pub mod uri;

pub use header::{HeaderName, Headers};
pub use message::{Request, Response, SipMessage};
pub use method::Method;
pub use uri::Uri;
