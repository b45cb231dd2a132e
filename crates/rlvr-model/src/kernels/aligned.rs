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
}
