//! The built-in defaults: `crates/rlvr/config/base.yaml`, compiled into the binary.

use serde_yaml::Value;

/// The text of `base.yaml`.
pub const BASE_YAML: &str = include_str!("../../config/base.yaml");

/// The defaults as an (unresolved) YAML tree.
pub fn tree() -> Value {
    serde_yaml::from_str(BASE_YAML).expect("crates/rlvr/config/base.yaml is valid YAML")
}
