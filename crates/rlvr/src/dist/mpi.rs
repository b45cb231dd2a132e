//! The MPI process group (`mpirun -n N rlvr train …`, the `mpi` feature).
//!
//! MPI's own collectives move the data, started non-blocking and polled against a deadline so
//! that no rank waits forever. Before each one, every rank tells every other that it has arrived
//! (one small message per pair): a rank that never reaches a collective (a deadlock, a stuck
//! device, a stopped process) is then named by the others when the group's timeout runs out. A
//! collective that every rank reached but that does not complete in time means a rank stopped
//! inside it: the others ask every rank to answer within a few seconds and name those that do
//! not. Either way the job ends (`MPI_Abort`). A rank that dies is reported by the launcher,
//! which ends the job (Open MPI: "mpirun noticed that process rank R … exited on signal …").

use super::ProcessGroup;
use anyhow::{bail, Result};
use mpi::collective::SystemOperation;
use mpi::datatype::PartitionMut;
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::*;
use std::cell::Cell;
use std::time::{Duration, Instant};

/// Messages that say "arrived at collective k".
const ARRIVAL_TAG: i32 = 7301;
/// Messages that say "alive, and stuck in collective k".
const ALIVE_TAG: i32 = 7302;
/// How long ranks stuck in the same collective wait for each other's "alive": they reached it
/// within a message's latency of each other, so they time out together.
const ALIVE_GRACE: Duration = Duration::from_secs(10);
/// MPI counts are `int`: larger buffers go in pieces.
const MAX_COUNT: usize = 1 << 28;

pub struct MpiGroup {
    // Finalizes MPI when dropped, after `world`.
    _universe: mpi::environment::Universe,
    world: SimpleCommunicator,
    timeout: Duration,
    /// Collectives so far; every rank's count must agree.
    seq: Cell<u64>,
}

impl MpiGroup {
    /// Initialises MPI (once per process).
    pub fn init(timeout: Duration) -> Result<Self> {
        // `Serialized`: the trainer calls MPI from one thread at a time, though not always from
        // the thread that initialised it.
        let Some((universe, _level)) = mpi::initialize_with_threading(mpi::Threading::Serialized)
        else {
            bail!("MPI was already initialised in this process");
        };
        let world = universe.world();
        // A panic on one rank must end the others too, not leave them waiting for it (and this
        // rank in MPI's finalisation).
        let report = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            report(info);
            // SAFETY: MPI is initialised (the hook is set after it); abort ends every rank.
            unsafe { mpi::ffi::MPI_Abort(mpi::ffi::RSMPI_COMM_WORLD, 4) };
        }));
        Ok(Self {
            _universe: universe,
            world,
            timeout,
            seq: Cell::new(0),
        })
    }

    /// Exchanges `seq` with every other rank under `tag` and returns what each sent; ends the job
    /// with `missing(peers)` as the reason when some have not sent by `deadline`.
    fn exchange(
        &self,
        seq: u64,
        tag: i32,
        deadline: Instant,
        missing: impl FnOnce(&[usize]) -> String,
    ) -> Vec<u64> {
        let (me, size) = (self.rank(), self.size());
        let out = [seq];
        let mut inbox = vec![seq; size];
        mpi::request::scope(|scope| {
            let mut sends = Vec::with_capacity(size);
            let mut recvs = Vec::with_capacity(size);
            for (peer, slot) in inbox.iter_mut().enumerate() {
                if peer == me {
                    continue;
                }
                let p = self.world.process_at_rank(peer as i32);
                sends.push(p.immediate_send_with_tag(scope, &out[..], tag));
                let slot = std::slice::from_mut(slot);
                recvs.push((peer, p.immediate_receive_into_with_tag(scope, slot, tag)));
            }
            let done = poll_until(deadline, true, || {
                recvs = std::mem::take(&mut recvs)
                    .into_iter()
                    .filter_map(|(peer, r)| r.test().err().map(|r| (peer, r)))
                    .collect();
                recvs.is_empty()
            });
            if !done {
                // Requests to absent ranks cannot complete: end the job from inside the scope.
                let peers: Vec<usize> = recvs.iter().map(|(p, _)| *p).collect();
                self.end_job(&missing(&peers));
            }
            for s in sends {
                s.wait();
            }
        });
        inbox
    }

    /// Waits until every rank has reached collective `seq`, or ends the job naming those that
    /// did not within the timeout.
    fn arrive(&self, seq: u64, what: &str) -> Result<()> {
        let me = self.rank();
        let deadline = Instant::now() + self.timeout;
        let seen = self.exchange(seq, ARRIVAL_TAG, deadline, |peers| {
            format!(
                "rank(s) {peers:?} did not reach collective #{seq} ({what}) within {} s: they \
                 have died or hung",
                self.timeout.as_secs()
            )
        });
        for (peer, &k) in seen.iter().enumerate() {
            if k != seq {
                bail!(
                    "rank {me} is at collective #{seq} ({what}) but rank {peer} at #{k}: the ranks \
                     have diverged (they must run the same config and data)"
                );
            }
        }
        Ok(())
    }

    /// Runs the collective `start` makes, waiting at most the timeout for it.
    fn collective<'a, D, F>(&self, what: &str, start: F)
    where
        F: for<'s> FnOnce(
            &'s mpi::request::LocalScope<'a>,
        )
            -> mpi::request::Request<'a, D, &'s mpi::request::LocalScope<'a>>,
        D: 'a + ?Sized,
    {
        let seq = self.seq.get();
        let deadline = Instant::now() + self.timeout;
        mpi::request::scope(|scope| {
            let mut req = Some(start(scope));
            let done = poll_until(deadline, false, || match req.take().map(|r| r.test()) {
                Some(Ok(_)) | None => true,
                Some(Err(r)) => {
                    req = Some(r);
                    false
                }
            });
            if !done {
                self.stuck_in(seq, what);
            }
        });
    }

    /// Every rank reached collective `seq` but it did not complete: names the ranks that no longer
    /// answer, and ends the job.
    fn stuck_in(&self, seq: u64, what: &str) -> ! {
        let secs = self.timeout.as_secs();
        let stuck = format!(
            "collective #{seq} ({what}) did not complete within {secs} s though every rank reached it"
        );
        self.exchange(seq, ALIVE_TAG, Instant::now() + ALIVE_GRACE, |peers| {
            format!("{stuck}; rank(s) {peers:?} stopped answering: they have died or hung")
        });
        self.end_job(&format!(
            "{stuck}; every rank still answers (a network fault?)"
        ))
    }

    fn end_job(&self, why: &str) -> ! {
        eprintln!(
            "error: rank {}: {why}. Ending the job (the last checkpoint stays loadable; resume \
             with the same number of ranks).",
            self.rank()
        );
        self.world.abort(3)
    }

    fn next_seq(&self) -> u64 {
        self.seq.set(self.seq.get() + 1);
        self.seq.get()
    }
}

/// Calls `done` until it returns true (then true) or `deadline` passes (then false). With `nap`,
/// sleeps between calls (waiting for other ranks, which may take minutes); without, only yields:
/// a started collective moves only while MPI is called (Open MPI's non-blocking collectives
/// progress inside `MPI_Test`), as a blocking collective spins.
fn poll_until(deadline: Instant, nap: bool, mut done: impl FnMut() -> bool) -> bool {
    let mut pause = Duration::from_micros(20);
    loop {
        if done() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        if nap {
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        } else {
            std::thread::yield_now();
        }
    }
}

impl ProcessGroup for MpiGroup {
    fn abort(&self, why: &str) -> ! {
        self.end_job(why)
    }

    fn rank(&self) -> usize {
        self.world.rank() as usize
    }

    fn size(&self) -> usize {
        self.world.size() as usize
    }

    fn all_reduce_sum(&self, data: &mut [f32], what: &str) -> Result<()> {
        self.arrive(self.next_seq(), what)?;
        let mut sum = vec![0f32; data.len().min(MAX_COUNT)];
        for piece in data.chunks_mut(MAX_COUNT) {
            let sum = &mut sum[..piece.len()];
            self.collective(what, |scope| {
                self.world
                    .immediate_all_reduce_into(scope, &*piece, sum, SystemOperation::sum())
            });
            piece.copy_from_slice(sum);
        }
        Ok(())
    }

    fn all_gather_bytes(&self, mine: &[u8], what: &str) -> Result<Vec<Vec<u8>>> {
        self.arrive(self.next_seq(), what)?;
        if mine.len() > i32::MAX as usize {
            bail!(
                "{what}: {} bytes is more than one MPI message holds",
                mine.len()
            );
        }
        let mut counts = vec![0i32; self.size()];
        let len = [mine.len() as i32];
        self.collective(what, |scope| {
            self.world
                .immediate_all_gather_into(scope, &len[..], &mut counts[..])
        });
        let displs: Vec<i32> = counts
            .iter()
            .scan(0i64, |at, &c| {
                let d = *at;
                *at += i64::from(c);
                Some(d as i32)
            })
            .collect();
        let total: usize = counts.iter().map(|&c| c as usize).sum();
        if total > i32::MAX as usize {
            bail!("{what}: {total} bytes in all is more than one MPI gather holds");
        }
        let mut all = vec![0u8; total];
        {
            let mut parts = PartitionMut::new(&mut all[..], &counts[..], &displs[..]);
            self.collective(what, |scope| {
                self.world
                    .immediate_all_gather_varcount_into(scope, mine, &mut parts)
            });
        }
        Ok(counts
            .iter()
            .zip(&displs)
            .map(|(&c, &d)| all[d as usize..(d + c) as usize].to_vec())
            .collect())
    }
}
