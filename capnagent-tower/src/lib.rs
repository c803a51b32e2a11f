//! capnagent-tower (in progress).
