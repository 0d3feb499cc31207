//! Media plane: sans-IO RTP cores and the io_uring workers that run them.

pub mod codec;
