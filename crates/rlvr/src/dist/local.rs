//! Ranks as threads of one process: the same collectives as MPI's, on shared memory. Tests use it
//! to check data-parallel training against one process without an MPI installation.

use super::ProcessGroup;
use anyhow::Result;
use std::sync::{Arc, Barrier, Mutex};

/// One rank of a group of threads; make the group with [`LocalGroup::group`] and move one member
/// into each thread.
pub struct LocalGroup {
    rank: usize,
    shared: Arc<Shared>,
}

struct Shared {
    size: usize,
    slots: Mutex<Vec<Vec<u8>>>,
    barrier: Barrier,
}

impl LocalGroup {
    /// The `size` members of a new group, rank 0 first.
    pub fn group(size: usize) -> Vec<LocalGroup> {
        let shared = Arc::new(Shared {
            size,
            slots: Mutex::new(vec![Vec::new(); size]),
            barrier: Barrier::new(size),
        });
        (0..size)
            .map(|rank| LocalGroup {
                rank,
                shared: shared.clone(),
            })
            .collect()
    }
}

impl ProcessGroup for LocalGroup {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.shared.size
    }

    fn all_reduce_sum(&self, data: &mut [f32], what: &str) -> Result<()> {
        let parts = self.all_gather_bytes(bytemuck::cast_slice(data), what)?;
        // The same order on every rank, so every rank holds the same sums.
        data.fill(0.0);
        for p in &parts {
            let p: Vec<f32> = bytemuck::pod_collect_to_vec(p);
            data.iter_mut().zip(p).for_each(|(d, x)| *d += x);
        }
        Ok(())
    }

    fn all_gather_bytes(&self, mine: &[u8], _what: &str) -> Result<Vec<Vec<u8>>> {
        self.shared.slots.lock().expect("a rank thread panicked")[self.rank] = mine.to_vec();
        self.shared.barrier.wait();
        let all = self
            .shared
            .slots
            .lock()
            .expect("a rank thread panicked")
            .clone();
        // Nobody writes the next round's slot before everyone has read this one.
        self.shared.barrier.wait();
        Ok(all)
    }
}
