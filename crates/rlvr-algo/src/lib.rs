//! The algorithm core of rlvr.
