//! Golden-vector conformance harness (placeholder, filled in below).
