//! Software prefetch for the loops that compute the most per byte they
//! read: the staged loops of the logistic losses and the softmax walk
//! (and for the sigmoid region losses' second pass, which streams the
//! gradient in place and did not reach the memory's speed either).
//!
//! On the Intel Xeon of BENCHMARKS.md ("The round of 2 Dec 2026, 12:55
//! UTC") the hardware prefetchers did not keep ahead of those loops: at
//! 2^24 `f32`, out of cache, BCE's `loss` took 1.21–1.23 ns per element
//! against 0.64 in cache (its read floor: 0.43), and Dice's 1.12–1.15
//! against 0.62. Asking for the lines a little ahead brought them to
//! 0.69–0.70 and 0.67–0.69, and took 5–25 % off the `loss_grad`s. In
//! cache the requests cost up to 5 %. On the AMD hosts of earlier rounds
//! the hardware kept up (Zen 3: Dice's `loss` 1.5 ns per element in
//! cache, 1.6 at 2^24), and software prefetches tried there gained
//! nothing beyond the spread.

use super::STAGE;

/// How far ahead of the elements being computed they are fetched: 256
/// `f32`, two pieces of [`STAGE`]. On that Xeon, 1, 2 and 4 KiB did as
/// well for the staged loops at 2^24 `f32`; the softmax walk, which reads
/// a line of each class plane of each operand per chunk, did best at 1
/// and 2 KiB, and on the Zen 5 host a prefetch 4 KiB ahead in that walk
/// made it slower (BENCHMARKS.md).
const AHEAD: usize = 1024;

/// Bytes per cache line (of every x86-64 CPU this crate dispatches for).
const LINE: usize = 64;

/// Asks the CPU to bring the piece of [`STAGE`] elements of `s` that
/// starts [`AHEAD`] bytes after element `at` into its L1 cache, one request
/// per cache line. A hint: no effect on any result, and none at all off
/// x86-64.
///
/// A whole piece (all but the last few calls of a loop) takes one
/// prefetch per line with a trip count known at compile time, unrolled:
/// as a loop over `chunks`, each line cost eight instructions, half an
/// instruction per element per operand (Dice's `loss_grad`, which
/// prefetches five operands over its two passes: 14.4 → 17.0 instructions
/// per element on the AVX2 path, 5 % slower in cache).
#[inline(always)]
pub(crate) fn prefetch_ahead<A>(s: &[A], at: usize) {
    let step = LINE.div_ceil(size_of::<A>().max(1));
    let piece = ahead(s, at, STAGE);
    if piece.len() == STAGE {
        for k in 0..STAGE.div_ceil(step) {
            // `k·step < STAGE`: inside the piece.
            prefetch_line(piece.as_ptr().wrapping_add(k * step));
        }
    } else {
        for line in piece.chunks(step) {
            prefetch_line(line.as_ptr());
        }
    }
}

/// As [`prefetch_ahead`] for the one cache line that holds the element
/// [`AHEAD`] bytes after element `at`.
#[inline(always)]
pub(crate) fn prefetch_line_ahead<A>(s: &[A], at: usize) {
    if let Some(first) = ahead(s, at, 1).first() {
        prefetch_line(first);
    }
}

/// The elements of `s` from [`AHEAD`] bytes after element `at` on: up to
/// `len`, fewer or none at the end of `s`.
#[inline(always)]
fn ahead<A>(s: &[A], at: usize, len: usize) -> &[A] {
    let start = at.saturating_add(AHEAD / size_of::<A>().max(1));
    let rest = s.get(start..).unwrap_or_default();
    &rest[..rest.len().min(len)]
}

/// The prefetch of the line holding `p` into every cache level.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(unsafe_code)]
fn prefetch_line<A>(p: *const A) {
    use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
    // SAFETY: `_mm_prefetch` requires SSE, which every x86-64 CPU has (it
    // is in the target's baseline). A prefetch neither reads nor writes
    // anything the program can observe and does not fault on any address;
    // `p` points into a live slice besides.
    unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn prefetch_line<A>(_: *const A) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_fetched_lies_ahead_and_in_bounds() {
        let v: Vec<f32> = (0..1000).map(|i| i as f32).collect();
        let skip = AHEAD / 4;
        assert_eq!(ahead(&v, 0, STAGE), &v[skip..skip + STAGE]);
        assert_eq!(ahead(&v, 100, 1), &v[skip + 100..skip + 101]);
        // At the end: shorter, then empty, never out of bounds.
        let end = v.len() - skip - 5;
        assert_eq!(ahead(&v, end, STAGE), &v[v.len() - 5..]);
        assert!(ahead(&v, v.len() - skip, STAGE).is_empty());
        assert!(ahead(&v, usize::MAX, 1).is_empty());
        assert!(ahead::<f64>(&[], 0, STAGE).is_empty());
        // In bytes: half as many elements ahead for `f64`.
        let w = vec![0.0f64; 1000];
        assert_eq!(ahead(&w, 0, 1).as_ptr(), w[AHEAD / 8..].as_ptr());
        // Prefetching any of these does not panic either.
        for at in [0, end, v.len(), usize::MAX] {
            prefetch_ahead(&v, at);
            prefetch_line_ahead(&v, at);
        }
    }
}
