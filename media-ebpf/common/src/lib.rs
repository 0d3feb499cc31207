#![no_std]
//! Placeholder, filled below.
