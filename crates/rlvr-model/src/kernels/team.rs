//! A spinning team of the thread pool's workers for decoding's many short parallel loops.
//!
//! A decoding step makes ~150 parallel calls of 10–100 µs each. Between two of them rayon's idle
//! workers go to sleep, and waking them costs a futex round trip per call: 7–10 % of the CPU time
//! of SmolLM2 decoding went to the scheduler, and batch-32 decoding ran ~9 % faster without it.
//! Inside [`with_team`] the pool's other workers instead spin on a shared task counter,
//! so [`for_each`] hands them work in well under a microsecond. Outside a team, [`for_each`] is
//! rayon's `for_each`.

use rayon::prelude::*;
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};

/// Runs `body` with the pool's other workers spinning as helpers of this thread's
/// [`for_each`] calls. Other rayon work started inside `body` runs on this thread alone (the
/// helpers do not steal), so keep `body` to the loops that use [`for_each`].
pub fn with_team<R>(body: impl FnOnce() -> R) -> R {
    let helpers = rayon::current_num_threads().saturating_sub(1);
    if helpers == 0 || rayon::current_thread_index().is_none() || !CURRENT.get().is_null() {
        return body();
    }
    let team = Team::default();
    rayon::in_place_scope(|s| {
        for _ in 0..helpers {
            s.spawn(|_| team.serve());
        }
        // Helpers stop even if `body` panics, or the scope would wait on them forever.
        struct Leave<'a>(&'a Team);
        impl Drop for Leave<'_> {
            fn drop(&mut self) {
                CURRENT.set(std::ptr::null());
                self.0.stop.store(true, Ordering::Release);
            }
        }
        CURRENT.set(&team);
        let _leave = Leave(&team);
        body()
    })
}

/// Calls `f(i)` for every `i` in `0..n`, in parallel: on this thread and its team's helpers
/// inside [`with_team`], else on the rayon pool.
pub fn for_each(n: usize, f: impl Fn(usize) + Sync) {
    let team = CURRENT.get();
    if team.is_null() {
        (0..n).into_par_iter().for_each(&f);
    } else {
        // SAFETY: CURRENT points at the team of the enclosing `with_team` on this thread, which
        // outlives this call.
        unsafe { &*team }.run(n, &f);
    }
}

/// Calls `f(i, chunk)` for every `chunk`-long piece of `data` (the last may be shorter), in
/// parallel as [`for_each`].
pub fn for_each_chunk_mut<T: Send>(
    data: &mut [T],
    chunk: usize,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    assert!(chunk > 0, "for_each_chunk_mut: chunk must be positive");
    let len = data.len();
    let base = SendPtr(data.as_mut_ptr());
    for_each(len.div_ceil(chunk), |i| {
        let start = i * chunk;
        let end = (start + chunk).min(len);
        // SAFETY: each task gets a disjoint in-bounds range of `data`, which is borrowed
        // mutably for the whole loop.
        let piece = unsafe { std::slice::from_raw_parts_mut(base.get().add(start), end - start) };
        f(i, piece)
    });
}

struct SendPtr<T>(*mut T);
impl<T> Clone for SendPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SendPtr<T> {}
// SAFETY: only used to hand disjoint ranges of one slice to the tasks of one loop.
unsafe impl<T: Send> Send for SendPtr<T> {}
unsafe impl<T: Send> Sync for SendPtr<T> {}

impl<T> SendPtr<T> {
    fn get(self) -> *mut T {
        self.0
    }
}

thread_local! {
    /// The team this thread leads, if any.
    static CURRENT: Cell<*const Team> = const { Cell::new(std::ptr::null()) };
}

/// One loop's tasks as helpers see them: a type-erased `&dyn Fn(usize)` and the task count.
#[derive(Default)]
struct Slot {
    ctx: AtomicPtr<()>,
    call: AtomicUsize,
    n: AtomicUsize,
}

/// Shared state of a team. `claim` holds the loop's epoch (high 32 bits) and its next unclaimed
/// task (low 32): a helper claims a task by a compare-and-swap that also proves the loop it
/// read from `slots` is still the current one, so it never calls a finished loop's closure.
/// Loops alternate between two slots, so the slot of a loop still being read is not rewritten
/// by the next one.
#[derive(Default)]
struct Team {
    claim: AtomicU64,
    slots: [Slot; 2],
    done: AtomicUsize,
    stop: AtomicBool,
    panicked: AtomicBool,
}

/// Calls the `F` behind `ctx` with task `i`.
///
/// # Safety
/// `ctx` must point at a live `F`.
unsafe fn trampoline<F: Fn(usize)>(ctx: *const (), i: usize) {
    unsafe { (*(ctx as *const F))(i) }
}

/// Idle polls before a helper starts yielding its core between polls.
const SPIN_POLLS: u32 = 1 << 16;

impl Team {
    /// The leader's side of [`for_each`].
    fn run<F: Fn(usize) + Sync>(&self, n: usize, f: &F) {
        if n == 0 {
            return;
        }
        assert!(n < 1 << 32, "team: {n} tasks in one loop");
        let epoch = (self.claim.load(Ordering::Relaxed) >> 32).wrapping_add(1) & 0xFFFF_FFFF;
        let call = trampoline::<F> as unsafe fn(*const (), usize) as usize;
        let ctx = f as *const F as *mut ();
        let slot = &self.slots[(epoch & 1) as usize];
        slot.ctx.store(ctx, Ordering::Relaxed);
        slot.call.store(call, Ordering::Relaxed);
        slot.n.store(n, Ordering::Relaxed);
        self.done.store(0, Ordering::Relaxed);
        self.claim.store(epoch << 32, Ordering::Release);
        self.work(epoch, ctx, call, n);
        // Every task is claimed; wait for the helpers' last ones before `f` goes out of scope.
        while self.done.load(Ordering::Acquire) < n {
            std::hint::spin_loop();
        }
        if self.panicked.swap(false, Ordering::Relaxed) {
            panic!("team: a task panicked on a helper thread");
        }
    }

    /// Claims and runs tasks of loop `epoch` until none are left or a newer loop started.
    fn work(&self, epoch: u64, ctx: *mut (), call: usize, n: usize) {
        loop {
            let c = self.claim.load(Ordering::Acquire);
            let i = (c & 0xFFFF_FFFF) as usize;
            if c >> 32 != epoch || i >= n {
                return;
            }
            if self
                .claim
                .compare_exchange_weak(c, c + 1, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            // SAFETY: `call` and `ctx` were published for `epoch` (the CAS proved it is
            // current, so they were not overwritten), and the leader keeps the closure alive
            // until `done` counts this task.
            let call: unsafe fn(*const (), usize) = unsafe { std::mem::transmute(call) };
            if catch_unwind(AssertUnwindSafe(|| unsafe { call(ctx, i) })).is_err() {
                self.panicked.store(true, Ordering::Relaxed);
            }
            self.done.fetch_add(1, Ordering::Release);
        }
    }

    /// A helper's loop: spin until a new loop is published, help with it, repeat until stopped.
    fn serve(&self) {
        // The leader itself can pick up a not-yet-started helper job while it waits inside rayon.
        if !CURRENT.get().is_null() {
            return;
        }
        let mut seen = u64::MAX;
        let mut idle = 0u32;
        while !self.stop.load(Ordering::Acquire) {
            let c = self.claim.load(Ordering::Acquire);
            let epoch = c >> 32;
            if epoch == seen || c == 0 {
                idle = idle.saturating_add(1);
                if idle < SPIN_POLLS {
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
                continue;
            }
            idle = 0;
            let slot = &self.slots[(epoch & 1) as usize];
            let ctx = slot.ctx.load(Ordering::Relaxed);
            let call = slot.call.load(Ordering::Relaxed);
            let n = slot.n.load(Ordering::Relaxed);
            self.work(epoch, ctx, call, n);
            seen = epoch;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("pool")
    }

    #[test]
    fn every_task_runs_once_in_many_loops() {
        for threads in [1, 2, 4] {
            pool(threads).install(|| {
                with_team(|| {
                    for n in [0usize, 1, 2, 3, 7, 64, 1000] {
                        for _ in 0..50 {
                            let hits: Vec<AtomicU32> = (0..n).map(|_| AtomicU32::new(0)).collect();
                            for_each(n, |i| {
                                hits[i].fetch_add(1, Ordering::Relaxed);
                            });
                            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
                        }
                    }
                })
            });
        }
    }

    #[test]
    fn helpers_take_part() {
        pool(2).install(|| {
            with_team(|| {
                let leader = std::thread::current().id();
                let elsewhere = AtomicU32::new(0);
                // Tasks long enough that the spinning helper claims some; on a loaded machine
                // the helper may need a while to be scheduled at all.
                let start = std::time::Instant::now();
                while elsewhere.load(Ordering::Relaxed) == 0
                    && start.elapsed() < std::time::Duration::from_secs(20)
                {
                    for_each(16, |_| {
                        let t = std::time::Instant::now();
                        while t.elapsed() < std::time::Duration::from_micros(200) {}
                        if std::thread::current().id() != leader {
                            elsewhere.fetch_add(1, Ordering::Relaxed);
                        }
                    });
                }
                assert!(
                    elsewhere.load(Ordering::Relaxed) > 0,
                    "no task ran on a helper"
                );
            })
        });
    }

    #[test]
    fn chunks_cover_the_slice_disjointly() {
        pool(2).install(|| {
            with_team(|| {
                let mut v = vec![0usize; 1003];
                for_each_chunk_mut(&mut v, 10, |i, c| {
                    for (j, x) in c.iter_mut().enumerate() {
                        *x += i * 10 + j + 1;
                    }
                });
                assert!(v.iter().enumerate().all(|(i, &x)| x == i + 1));
            })
        });
        // And outside a team, on rayon.
        let mut v = vec![0usize; 35];
        for_each_chunk_mut(&mut v, 8, |i, c| c.fill(i));
        assert_eq!(v[34], 4);
    }

    #[test]
    fn rayon_inside_a_team_still_completes() {
        pool(2).install(|| {
            let s: u64 = with_team(|| (0..10_000u64).into_par_iter().sum());
            assert_eq!(s, 10_000 * 9_999 / 2);
        });
    }

    #[test]
    fn a_panicking_task_panics_the_loop_and_the_team_ends() {
        let r = pool(2).install(|| {
            catch_unwind(AssertUnwindSafe(|| {
                with_team(|| {
                    for_each(64, |i| {
                        if i == 40 {
                            panic!("task 40");
                        }
                    })
                })
            }))
        });
        assert!(r.is_err());
        // The pool is usable afterwards.
        pool(2).install(|| with_team(|| for_each(4, |_| {})));
    }
}
