//! Buffers that start on a 64-byte cache line. AMX loads a tile as 16 rows of 64 bytes: from a
//! `Vec`'s usual 16-byte alignment every row straddles two lines, and tile products ran at less
//! than half their rate (one core, operands in L1: ~590 against ~1,500 GFLOP/s aligned).

use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};

/// One cache line.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Line([u8; 64]);

// SAFETY: a plain 64-byte array with no padding (size 64 = alignment); every bit pattern is valid
// and all zeros is a valid value.
unsafe impl bytemuck::Zeroable for Line {}
// SAFETY: as above.
unsafe impl bytemuck::Pod for Line {}

/// `len` values of `T` on whole cache lines, the first at a 64-byte boundary.
pub struct Aligned<T> {
    lines: Vec<Line>,
    len: usize,
    _values: PhantomData<T>,
}

impl<T: bytemuck::Pod> Aligned<T> {
    /// `len` zeros, written by every thread of the pool (see [`super::zeroed`]).
    pub fn zeroed(len: usize) -> Self {
        let bytes = len * std::mem::size_of::<T>();
        Aligned {
            lines: super::zeroed::<Line>(bytes.div_ceil(64)),
            len,
            _values: PhantomData,
        }
    }
}

impl<T: bytemuck::Pod + Send> Aligned<T> {
    /// `groups` groups of `group` values (a whole number of cache lines each), each zeroed and
    /// then filled by `fill(index, group)` in one task of the pool: the zeros are written into
    /// the cache right before the fill overwrites most of them, instead of in a pass of their own
    /// over the whole buffer.
    pub fn filled_by_group(
        groups: usize,
        group: usize,
        fill: impl Fn(usize, &mut [T]) + Sync + Send,
    ) -> Self {
        use rayon::prelude::*;
        let bytes = group * std::mem::size_of::<T>();
        assert!(
            bytes.is_multiple_of(64),
            "a group of {bytes} bytes is not whole cache lines"
        );
        let group_lines = (bytes / 64).max(1);
        let lines = groups * bytes / 64;
        let mut v: Vec<Line> = Vec::with_capacity(lines);
        v.spare_capacity_mut()[..lines]
            .par_chunks_mut(group_lines)
            .enumerate()
            .for_each(|(g, chunk)| {
                let chunk: &mut [Line] = {
                    for x in chunk.iter_mut() {
                        x.write(Line([0; 64]));
                    }
                    // SAFETY: every element of `chunk` was written just above.
                    unsafe { &mut *(chunk as *mut [std::mem::MaybeUninit<Line>] as *mut [Line]) }
                };
                fill(g, bytemuck::cast_slice_mut(chunk));
            });
        // SAFETY: every chunk, hence each of the first `lines` elements, was written above.
        unsafe { v.set_len(lines) };
        Aligned {
            lines: v,
            len: groups * group,
            _values: PhantomData,
        }
    }
}

impl<T: bytemuck::Pod> Deref for Aligned<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &bytemuck::cast_slice(&self.lines)[..self.len]
    }
}

impl<T: bytemuck::Pod> DerefMut for Aligned<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut bytemuck::cast_slice_mut(&mut self.lines)[..self.len]
    }
}

impl<T: bytemuck::Pod + std::fmt::Debug> std::fmt::Debug for Aligned<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_on_a_line_and_holds_zeros() {
        for len in [0usize, 1, 31, 32, 33, 1000] {
            let mut a = Aligned::<u16>::zeroed(len);
            assert_eq!(a.len(), len);
            assert_eq!(a.as_ptr() as usize % 64, 0);
            assert!(a.iter().all(|&x| x == 0));
            if len > 0 {
                a[len - 1] = 7;
                assert_eq!(a[len - 1], 7);
            }
        }
    }

    /// Each group holds what its fill wrote and zeros where the fill wrote nothing.
    #[test]
    fn groups_hold_their_fill_and_zeros_elsewhere() {
        for groups in [0usize, 1, 5, 300] {
            let a = Aligned::<u16>::filled_by_group(groups, 64, |g, buf| {
                assert_eq!(buf.len(), 64);
                buf[..g % 64].fill(g as u16 + 1);
            });
            assert_eq!((a.len(), a.as_ptr() as usize % 64), (groups * 64, 0));
            for (g, group) in a.chunks(64).enumerate() {
                let n = g % 64;
                assert!(group[..n].iter().all(|&x| x == g as u16 + 1), "group {g}");
                assert!(group[n..].iter().all(|&x| x == 0), "group {g}");
            }
        }
    }
}
