//! capnagent core (work in progress).
pub mod json;
pub mod number;
pub mod timestamp;
