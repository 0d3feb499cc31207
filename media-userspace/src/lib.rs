//! Media plane: sans-IO RTP cores (latching, echo) and the io_uring
//! workers that run them.

pub mod aistream;
pub use domain::codec;
pub mod control;
pub mod dtmf;
pub mod echo;
pub mod engine;
pub mod g711;
pub mod g722;
pub mod jitter;
pub mod latch;
pub mod mmsg;
pub mod offload;
pub mod pacer;
pub mod ports;
pub mod recorder;
pub mod relay;
pub mod resample;
pub mod rtcp;
pub mod rtp;
pub mod srtp;
pub mod stream_leg;
pub mod tap;
#[cfg(feature = "test-netns")]
pub mod testnet;
pub mod transcode;
pub mod xdp;
pub mod xdp_host;
pub mod xdp_sip;
