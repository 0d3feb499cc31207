//! The state of calls and far legs, as plain data: what every phase of a
//! call reads and changes. The behaviour lives in `impl Core` blocks by
//! call phase (`call/`, `forward/`, `hold`, `originate`, …), which import
//! these types from here; this module imports none of them.

mod call;
mod far;
mod pending;

pub use call::{AiStream, Call, CallState, OkRetransmit, SessionTimer, StatusHook};
pub use far::{OutLeg, OutState, OutTarget, RelaySide};
pub(in crate::core) use pending::OutboundRoute;
pub use pending::{Admission, BridgeSide, Origination, PendingReinvite, PendingRoute, TwimlRun};
