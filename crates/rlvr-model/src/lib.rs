//! The policy model of rlvr.
