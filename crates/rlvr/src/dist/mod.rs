//! Data-parallel training: the process group a run trains in, and the few collectives the
//! trainer needs.
//!
//! One process is [`Solo`] (no MPI anywhere). `mpirun -n N rlvr train …` (built with the `mpi`
//! feature) makes N ranks of [`MpiGroup`]; [`LocalGroup`] runs ranks as threads of one process,
//! which lets tests check the semantics without MPI. What is split, what is reduced and what rank
//! 0 owns is in `docs/data_parallel.md`; in short: each rank generates and scores its share of
//! every generation batch and all ranks then hold the whole batch (so dynamic sampling, the
//! advantages and the loss's token counts are global), each rank computes the forward and
//! backward passes of its share of every mini-batch, gradients are summed over ranks before the
//! identical optimizer step, and rank 0 logs and checkpoints.

mod local;
#[cfg(feature = "mpi")]
mod mpi;

pub use local::LocalGroup;
#[cfg(feature = "mpi")]
pub use mpi::MpiGroup;

use anyhow::{bail, Result};
use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use std::rc::Rc;

/// The ranks a run trains with. Every method is a collective: all ranks call it, in the same
/// order; `what` names it in the error a rank that never arrives causes.
pub trait ProcessGroup {
    fn rank(&self) -> usize;
    fn size(&self) -> usize;
    /// Sums `data` elementwise over the ranks, in place.
    fn all_reduce_sum(&self, data: &mut [f32], what: &str) -> Result<()>;
    /// Every rank's `mine`, in rank order.
    fn all_gather_bytes(&self, mine: &[u8], what: &str) -> Result<Vec<Vec<u8>>>;

    fn is_main(&self) -> bool {
        self.rank() == 0
    }

    /// Ends every rank of the job at once, saying why (`MPI_Abort` under MPI).
    fn abort(&self, why: &str) -> ! {
        eprintln!("error: rank {}: {why}", self.rank());
        std::process::exit(1)
    }
}

/// The whole run in this process.
pub struct Solo;

impl ProcessGroup for Solo {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn all_reduce_sum(&self, _data: &mut [f32], _what: &str) -> Result<()> {
        Ok(())
    }
    fn all_gather_bytes(&self, mine: &[u8], _what: &str) -> Result<Vec<Vec<u8>>> {
        Ok(vec![mine.to_vec()])
    }
}

/// The process group this process was launched in: MPI's world under `mpirun` (with the `mpi`
/// feature), otherwise [`Solo`]. `timeout` bounds how long a rank waits for the others at a
/// collective before it ends the job naming the ranks that did not arrive.
pub fn from_launcher(timeout: std::time::Duration) -> Result<Rc<dyn ProcessGroup>> {
    let launched = launcher_world_size();
    #[cfg(feature = "mpi")]
    if launched.is_some() {
        return Ok(Rc::new(MpiGroup::init(timeout)?));
    }
    let _ = timeout;
    match launched {
        Some(n) if n > 1 => bail!(
            "this process is one of {n} ranks started by an MPI launcher, but this rlvr was built \
             without MPI: build it with `cargo build --release --features mpi` (needs an MPI \
             library such as Debian's libopenmpi-dev, and libclang)"
        ),
        _ => Ok(Rc::new(Solo)),
    }
}

/// The world size an MPI launcher (Open MPI, MPICH, Slurm's PMI) announced in the environment.
fn launcher_world_size() -> Option<usize> {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"]
        .iter()
        .find_map(|k| std::env::var(k).ok()?.parse().ok())
}

/// This process's rank as an MPI launcher announced it, before MPI is initialised.
pub fn launcher_rank() -> Option<usize> {
    ["OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK"]
        .iter()
        .find_map(|k| std::env::var(k).ok()?.parse().ok())
}

/// `trainer.device` for this rank: where a launcher started several ranks, `cuda` / `gpu` (and
/// `auto` on a machine with a GPU) mean the rank's own GPU, numbered by its rank on the node (as
/// torchrun's `LOCAL_RANK`).
pub fn device_for_rank(spec: &str) -> String {
    let local = [
        "OMPI_COMM_WORLD_LOCAL_RANK",
        "MPI_LOCALRANKID",
        "LOCAL_RANK",
    ]
    .iter()
    .find_map(|k| std::env::var(k).ok()?.parse::<usize>().ok())
    .filter(|_| launcher_world_size().is_some_and(|n| n > 1));
    match (local, spec.trim()) {
        (Some(r), "cuda" | "gpu") => format!("cuda:{r}"),
        (Some(r), "auto") if candle_core::utils::cuda_is_available() => format!("cuda:{r}"),
        _ => spec.to_string(),
    }
}

/// Gives each of the ranks on this node its share of the cores (unless `RAYON_NUM_THREADS` says
/// otherwise): a launcher that does not bind ranks to cores would otherwise run every rank on all
/// of them. Call before the first parallel section.
pub fn share_cores_between_local_ranks() {
    let local = ["OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS"]
        .iter()
        .find_map(|k| std::env::var(k).ok()?.parse::<usize>().ok());
    if let Some(local) = local.filter(|&n| n > 1) {
        if std::env::var_os("RAYON_NUM_THREADS").is_none() {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            let share = (cores / local).max(1);
            // Before any thread exists (first thing in `main`).
            std::env::set_var("RAYON_NUM_THREADS", share.to_string());
        }
    }
}

/// `[lo, hi)` of `n` items for `rank` of `size`: contiguous runs as even as possible, the first
/// `n % size` one longer.
pub fn split_even(n: usize, rank: usize, size: usize) -> (usize, usize) {
    let (base, extra) = (n / size, n % size);
    let lo = rank * base + rank.min(extra);
    (lo, lo + base + usize::from(rank < extra))
}

/// The rows of `groups` (each `(start, end)` rows of one prompt, in order, within `span`) that
/// `rank` computes: its even share of the groups, whole.
pub fn shard_rows(
    groups: &[(usize, usize)],
    span: (usize, usize),
    rank: usize,
    size: usize,
) -> (usize, usize) {
    let inside: Vec<&(usize, usize)> = groups
        .iter()
        .filter(|(s, e)| *s >= span.0 && *e <= span.1)
        .collect();
    let (lo, hi) = split_even(inside.len(), rank, size);
    if lo == hi {
        // An empty share, placed where it would start.
        let at = inside.get(lo).map_or(span.1, |g| g.0);
        return (at, at);
    }
    (inside[lo].0, inside[hi - 1].1)
}

/// `[rows_r, width]` f32 rows of every rank, stacked in rank order.
pub fn all_gather_rows(group: &dyn ProcessGroup, mine: &Tensor, what: &str) -> Result<Tensor> {
    if group.size() == 1 {
        return Ok(mine.clone());
    }
    let (_, width) = mine.dims2()?;
    let flat: Vec<f32> = mine.flatten_all()?.to_vec1()?;
    let parts = group.all_gather_bytes(bytemuck::cast_slice(&flat), what)?;
    let all: Vec<f32> = bytemuck::pod_collect_to_vec(&parts.concat());
    let rows = all.len() / width.max(1);
    Ok(Tensor::from_vec(all, (rows, width), mine.device())?)
}

/// Sums every variable's gradient over the ranks (a rank without one adds zeros), so each rank
/// takes the optimizer step of the whole mini-batch. One rank: `grads` as they are.
pub fn all_reduce_grads(
    group: &dyn ProcessGroup,
    grads: Option<GradStore>,
    vars: &[Var],
    what: &str,
) -> Result<Option<GradStore>> {
    if group.size() == 1 {
        return Ok(grads);
    }
    let mut out = match grads {
        Some(g) => g,
        // A rank with no rows in this mini-batch: an empty store (candle makes them only in
        // `backward`) to fill with the others' sums.
        None => match vars.first() {
            Some(v) => Tensor::zeros((), candle_core::DType::F32, v.device())?.backward()?,
            None => return Ok(None),
        },
    };
    for var in vars {
        let t = var.as_tensor();
        let mut data: Vec<f32> = match out.get(t) {
            Some(g) => g
                .to_dtype(candle_core::DType::F32)?
                .flatten_all()?
                .to_vec1()?,
            None => vec![0.0; t.elem_count()],
        };
        group.all_reduce_sum(&mut data, what)?;
        let summed = Tensor::from_vec(data, t.shape(), t.device())?.to_dtype(t.dtype())?;
        out.insert(t, summed);
    }
    Ok(Some(out))
}

/// Whether any rank has `flag` set (e.g. a Ctrl-C seen by some ranks only: all stop together).
pub fn any(group: &dyn ProcessGroup, flag: bool, what: &str) -> Result<bool> {
    if group.size() == 1 {
        return Ok(flag);
    }
    let mut v = [f32::from(u8::from(flag))];
    group.all_reduce_sum(&mut v, what)?;
    Ok(v[0] > 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn even_splits_cover_every_item_once() {
        for n in 0..12 {
            for size in 1..5 {
                let parts: Vec<_> = (0..size).map(|r| split_even(n, r, size)).collect();
                assert_eq!(parts[0].0, 0);
                assert_eq!(parts[size - 1].1, n);
                for w in parts.windows(2) {
                    assert_eq!(w[0].1, w[1].0);
                }
                let lens: Vec<_> = parts.iter().map(|(a, b)| b - a).collect();
                assert!(lens.iter().max().unwrap() - lens.iter().min().unwrap() <= 1);
            }
        }
    }

    #[test]
    fn row_shards_keep_groups_whole_and_stay_inside_the_span() {
        // Groups of 2, 3, 2, 1 rows; the span is the middle three groups.
        let groups = [(0, 2), (2, 5), (5, 7), (7, 8)];
        let shards: Vec<_> = (0..2).map(|r| shard_rows(&groups, (2, 8), r, 2)).collect();
        assert_eq!(shards, vec![(2, 7), (7, 8)]);
        // More ranks than groups: the last share is empty, at the span's end.
        let shards: Vec<_> = (0..3).map(|r| shard_rows(&groups, (0, 5), r, 3)).collect();
        assert_eq!(shards, vec![(0, 2), (2, 5), (5, 5)]);
    }
}
