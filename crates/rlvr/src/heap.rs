//! The global allocator (mimalloc, with large blocks from glibc's heap where it is the C library:
//! [`tiered`]) with a count of the bytes live and their high-water mark, so that `rlvr bench` can
//! tell memory the program holds from memory the allocator keeps. (The `cap` crate counts the
//! bytes live but keeps no high-water mark that can be reset per phase.)

#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub mod tiered;

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

pub struct Counting<A> {
    inner: A,
    live: AtomicUsize,
    peak: AtomicUsize,
}

impl<A> Counting<A> {
    pub const fn new(inner: A) -> Self {
        Self {
            inner,
            live: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        }
    }

    /// Bytes allocated and not yet freed.
    pub fn live(&self) -> usize {
        self.live.load(Relaxed)
    }

    /// The most bytes live at once since the last [`Counting::reset_peak`].
    pub fn peak(&self) -> usize {
        self.peak.load(Relaxed)
    }

    pub fn reset_peak(&self) {
        self.peak.store(self.live(), Relaxed);
    }

    fn added(&self, n: usize) {
        let now = self.live.fetch_add(n, Relaxed) + n;
        // Every allocation passes here: a plain load first, so that only a new high-water mark
        // pays for a read-modify-write of the shared counter.
        if now > self.peak.load(Relaxed) {
            self.peak.fetch_max(now, Relaxed);
        }
    }
}

// SAFETY: every call is forwarded unchanged to `inner`; the counters only observe sizes.
unsafe impl<A: GlobalAlloc> GlobalAlloc for Counting<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc`, passed on.
        let p = unsafe { self.inner.alloc(layout) };
        if !p.is_null() {
            self.added(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `alloc`.
        let p = unsafe { self.inner.alloc_zeroed(layout) };
        if !p.is_null() {
            self.added(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `inner` with this layout (the caller's contract).
        unsafe { self.inner.dealloc(ptr, layout) };
        self.live.fetch_sub(layout.size(), Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract for `realloc`, passed on.
        let p = unsafe { self.inner.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            self.live.fetch_sub(layout.size(), Relaxed);
            self.added(new_size);
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_live_bytes_and_their_high_water_mark() {
        let c = Counting::new(std::alloc::System);
        let (a, b) = (
            Layout::array::<u64>(100).unwrap(),
            Layout::array::<u8>(50).unwrap(),
        );
        // SAFETY: each block is freed once, with the layout it was allocated with.
        unsafe {
            let p = c.alloc(a);
            let q = c.alloc_zeroed(b);
            assert_eq!((c.live(), c.peak()), (850, 850));
            let p = c.realloc(p, a, 400);
            assert_eq!((c.live(), c.peak()), (450, 850));
            c.reset_peak();
            assert_eq!(c.peak(), 450);
            c.dealloc(p, Layout::array::<u8>(400).unwrap());
            c.dealloc(q, b);
        }
        assert_eq!((c.live(), c.peak()), (0, 450));
    }
}
