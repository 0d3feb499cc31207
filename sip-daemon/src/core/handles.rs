//! The handles the core gives its calls, far legs and transactions. Each
//! is its own type, so a call's handle cannot be passed where a far leg's
//! or a transaction's is expected; all come from one counter, so no two
//! are ever equal as numbers either.

use media_userspace::control::LegId;
use std::fmt;

/// Made from the core's one counter (`Core::new_id`).
pub(crate) trait Counted {
    fn counted(n: u64) -> Self;
}

impl Counted for u64 {
    fn counted(n: u64) -> Self {
        n
    }
}

macro_rules! handle {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub(crate) u64);

        impl Counted for $name {
            fn counted(n: u64) -> Self {
                $name(n)
            }
        }

        impl $name {
            /// The number inside, for logs, snapshots and fuzz inputs.
            pub fn get(self) -> u64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

handle!(
    /// A call: the caller's side of every route (`Core::calls`).
    CallHandle
);
handle!(
    /// The far leg of a forwarded call, also its media leg's id
    /// (`Core::out_legs`).
    OutLegHandle
);
handle!(
    /// A server or client transaction (`TxnTables`), as the timer queue
    /// names it.
    TxnId
);
handle!(
    /// An SMS we send, until its MESSAGE is answered.
    SmsHandle
);
handle!(
    /// A live-control request from the REST API, until its reply leaves
    /// (`Output::ControlReply`); the edge numbers them.
    ControlId
);

/// Who a confirmed dialog belongs to: a call (its caller's dialog) or the
/// far leg of a forwarded call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DialogOwner {
    Call(CallHandle),
    OutLeg(OutLegHandle),
}

macro_rules! leg_handle {
    ($name:ident) => {
        impl $name {
            /// The media leg id this handle's own leg is opened with. A leg
            /// that later moves (an AI transfer, a transfer's new far leg)
            /// is found in the call's or far leg's `media_leg` instead.
            pub fn own_leg(self) -> LegId {
                self.0
            }

            /// The handle whose own leg is `leg` (see `own_leg`).
            pub fn of_leg(leg: LegId) -> Self {
                $name(leg)
            }
        }
    };
}
leg_handle!(CallHandle);
leg_handle!(OutLegHandle);
