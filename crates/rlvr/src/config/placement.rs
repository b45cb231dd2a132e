//! `trainer.placement`: how SkyRL spreads policy, ref and critic over Ray nodes and GPUs.
//! rlvr runs every role in one process, so these only matter for SkyRL compatibility.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlacementConfig {
    pub colocate_all: bool,
    pub colocate_policy_ref: bool,
    pub policy_num_nodes: usize,
    pub policy_num_gpus_per_node: usize,
    pub critic_num_nodes: usize,
    pub critic_num_gpus_per_node: usize,
    pub ref_num_nodes: usize,
    pub ref_num_gpus_per_node: usize,
}
