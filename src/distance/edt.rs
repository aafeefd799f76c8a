//! The exact squared Euclidean distance transform on a flat, row-major buffer.
//!
//! The transform is separable: the squared distance to the nearest site is the
//! minimum over sites of `Σ_a (h_a·(x_a - y_a))²`, so it is computed one axis
//! at a time. Axis 0 starts from the binary mask, where the 1-D transform is a
//! forward and a backward running count; both walk whole rows at once (they
//! vectorise across the contiguous trailing axes). The lines of the other
//! axes never leave one row of axis 0, so each row runs them as soon as the
//! backward count has finished it, while it is still in cache: one row of a
//! 2-D image, one 128² slab of a 128³ volume. Lines are handed over in place
//! on the contiguous last axis, and gathered in blocks into a buffer on the
//! strided middle axes, so that every read of the array touches whole cache
//! lines.
//!
//! Each line takes the minimum `min_y h²·(q - y)² + f(y)` by a windowed
//! search first: blocks of outputs look at `q ± r` for a common growing `r`,
//! a loop without data-dependent branches that vectorises, and that costs
//! about `√(result)/h` steps per output. Lines far from every site (results
//! beyond a few dozen steps) take the lower envelope of parabolas of
//! Felzenszwalb and Huttenlocher (2012) instead, linear in the length
//! whatever the distances, but with about one mispredicted branch per
//! element on random or cell masks.
//!
//! With the `rayon` feature, an array of [`PARALLEL_MIN`] elements or more
//! is cut along axis 0 into chunks of whole rows, whose size depends on the
//! shape alone ([`chunk_rows`]: 64 rows of a 2048² image, 8 slabs of a 128³
//! volume), and the chunks run in parallel, each with scratch buffers of its
//! own: first the forward count, started at `+∞` on the chunk's first row;
//! then, from the count of the row above the chunk and the backward count
//! of the row below it (made serially, one row per chunk), the backward
//! count and the other axes row by row, as above. The counts are exact
//! integers and every line sees the values of the serial path, so the
//! results are the same bits whatever the number of threads. An array with
//! at most [`MIN_ROWS`] rows along axis 0 (a leading axis of length 1, say)
//! stays serial.

/// Lines of a strided axis gathered and transformed together.
const BLOCK: usize = 16;

/// Outputs of the windowed search computed together (one or two vectors).
const LANES: usize = 8;

/// The farthest the windowed search looks before it hands the line to the
/// envelope; also the `+∞` padding on each side of its copy of the line.
const PAD: usize = 32;

/// Reusable buffers of the lower envelope, sized for the longest line.
pub(crate) struct Envelope {
    /// Positions of the parabolas in the envelope.
    v: Vec<f64>,
    /// `f(v) + h²·v²` of each parabola.
    g: Vec<f64>,
    /// `f(v)` of each parabola.
    f: Vec<f64>,
    /// The line between [`PAD`] `+∞` on each side, for the windowed search.
    padded: Vec<f64>,
}

impl Envelope {
    pub(crate) fn new(n: usize) -> Self {
        Envelope {
            v: vec![0.0; n],
            g: vec![0.0; n],
            f: vec![0.0; n],
            padded: vec![f64::INFINITY; n + 2 * PAD],
        }
    }

    /// Replaces `line[q]` by `min_y h²·(q - y)² + line[y]`, in place (by its
    /// square root when `sqrt`).
    ///
    /// `+∞` entries are not sites; a line without sites stays `+∞`. The
    /// windowed search runs first: it costs about `√(result)/h` steps per
    /// element, but without the envelope's data-dependent branches (one
    /// mispredicted branch per element or more on random or cell masks), so
    /// it wins wherever the results are small. A line with a result beyond
    /// [`PAD`] steps takes the envelope, whose cost does not grow with the
    /// distances. Both give the exact minimum of the candidates with unit
    /// spacing; with other spacings the envelope may pick, between two
    /// candidates within an ulp of each other, the larger one.
    pub(crate) fn transform(&mut self, line: &mut [f64], h2: f64, sqrt: bool) {
        crate::kernel::dispatch::run(
            #[inline(always)]
            || {
                self.load(line);
                if line.len() < LANES || !self.window(line, h2) {
                    self.envelope(line, h2);
                }
                // One long loop for the roots rather than one per envelope segment.
                if sqrt {
                    for x in line.iter_mut() {
                        *x = x.sqrt();
                    }
                }
            },
        );
    }

    /// Copies `line` into `padded`, the input of both searches, so that
    /// they can write their output over `line` as they go.
    #[inline(always)]
    fn load(&mut self, line: &[f64]) {
        let n = line.len();
        let p = &mut self.padded[..n + 2 * PAD];
        p[PAD..PAD + n].copy_from_slice(line);
        // A longer line before may have left its values where this one's
        // right padding is.
        p[PAD + n..].fill(f64::INFINITY);
    }

    /// The windowed search on blocks of [`LANES`] outputs: every output of a
    /// block looks at `q ± r` for the same growing `r`, until `h²·r²` reaches
    /// the largest best value of the block. Without a branch per element,
    /// the loop vectorises and mispredicts once per block rather than once
    /// per element. Reads the line from `padded` (see [`Self::load`]);
    /// returns `false`, with `line` partly overwritten, when a block would
    /// need to look farther than [`PAD`]. `line` has at least [`LANES`]
    /// elements.
    #[inline(always)]
    fn window(&self, line: &mut [f64], h2: f64) -> bool {
        let n = line.len();
        let p = &self.padded[..n + 2 * PAD];
        let src = &p[PAD..PAD + n];
        // Steps of the scalar search past `PAD` left for this line.
        let mut budget = n as f64;
        let mut q0 = 0;
        while q0 < n {
            // The last block overlaps the one before rather than run past the end.
            let q = q0.min(n - LANES);
            let c = PAD + q;
            let mut acc = [0.0; LANES];
            acc.copy_from_slice(&p[c..c + LANES]);
            let mut r = 1usize;
            loop {
                let rf = r as f64;
                let step = h2 * (rf * rf);
                // Whether any output may still improve, without a branch per
                // lane (a compare and a mask test on vectors).
                if !acc.iter().fold(false, |more, &a| more | (a > step)) {
                    break;
                }
                if r > PAD {
                    // The few outputs still above h²·r² look farther one at a
                    // time, as long as the line's budget of steps (bounded
                    // from the best values so far) allows; else the
                    // envelope, whose cost does not grow with the distances.
                    let need: f64 = acc
                        .iter()
                        .map(|&a| ((a / h2).sqrt() + 1.0 - rf).max(0.0))
                        .sum();
                    // A block that needs more than `PAD` further steps per
                    // output on average is far from every site: so is,
                    // likely, the rest of the line.
                    if need > budget || need > (LANES * PAD) as f64 {
                        return false;
                    }
                    budget -= need;
                    for (a, qa) in acc.iter_mut().zip(q..) {
                        for s in r.. {
                            let sf = s as f64;
                            let step = h2 * (sf * sf);
                            if step >= *a || (s > qa && qa + s >= n) {
                                break;
                            }
                            if let Some(&x) = qa.checked_sub(s).and_then(|i| src.get(i)) {
                                let x = x + step;
                                *a = if x < *a { x } else { *a };
                            }
                            if let Some(&y) = src.get(qa + s) {
                                let y = y + step;
                                *a = if y < *a { y } else { *a };
                            }
                        }
                    }
                    break;
                }
                let (left, right) = (&p[c - r..c - r + LANES], &p[c + r..c + r + LANES]);
                for ((a, &x), &y) in acc.iter_mut().zip(left).zip(right) {
                    let x = x + step;
                    let y = y + step;
                    let b = if x < *a { x } else { *a };
                    *a = if y < b { y } else { b };
                }
                r += 1;
            }
            line[q..q + LANES].copy_from_slice(&acc);
            q0 += LANES;
        }
        true
    }

    /// The lower envelope of parabolas (Felzenszwalb & Huttenlocher),
    /// without divisions while it is built: a parabola is popped when its
    /// successor's intersection with it does not come after its own start,
    /// compared by cross-multiplying the two fractions (positive
    /// denominators). With unit spacing every quantity is an integer below
    /// 2⁵³, so the comparisons are exact. The envelope is then written one
    /// parabola's interval at a time, a loop without branches.
    ///
    /// Reads the line from `padded` (see [`Self::load`]) and writes `line`.
    #[inline(always)]
    fn envelope(&mut self, line: &mut [f64], h2: f64) {
        let n = line.len();
        let (v, g, f) = (&mut self.v[..n], &mut self.g[..n], &mut self.f[..n]);
        let src = &self.padded[PAD..PAD + n];
        let two_h2 = 2.0 * h2;
        let mut k = 0usize;
        let (mut tv, mut tg) = (0.0, 0.0);
        for (q, &fq) in src.iter().enumerate() {
            if fq == f64::INFINITY {
                continue;
            }
            // A parabola that its two neighbours cover on the whole line
            // (second difference of f at q at least 2h²) never matters.
            if q > 0 && q + 1 < n && 2.0 * fq - src[q - 1] - src[q + 1] >= two_h2 {
                continue;
            }
            let qf = q as f64;
            let gq = fq + h2 * (qf * qf);
            // Pop while the intersection of q's parabola with the top one,
            // (gq - g[k-1]) / (2h²·(q - v[k-1])), is at or before the top
            // one's start (g[k-1] - g[k-2]) / (2h²·(v[k-1] - v[k-2])). The
            // top is kept in locals: reading it back from the arrays right
            // after storing it would stall store forwarding.
            while k > 1 {
                let (pv, pg) = (v[k - 2], g[k - 2]);
                if (gq - tg) * (tv - pv) <= (tg - pg) * (qf - tv) {
                    k -= 1;
                    (tv, tg) = (pv, pg);
                } else {
                    break;
                }
            }
            (tv, tg) = (qf, gq);
            v[k] = qf;
            g[k] = gq;
            f[k] = fq;
            k += 1;
        }
        if k == 0 {
            line.fill(f64::INFINITY); // no site
            return;
        }
        let mut start = 0usize;
        for j in 0..k {
            // Parabola j is the lowest from `start` up to the first q after
            // its intersection with parabola j + 1.
            let end = if j + 1 < k {
                let z = (g[j + 1] - g[j]) / (two_h2 * (v[j + 1] - v[j]));
                if z < 0.0 {
                    0
                } else {
                    // z >= 0: truncation is the floor (and no libm call).
                    (z as usize).saturating_add(1).min(n)
                }
            } else {
                n
            };
            if end <= start {
                continue;
            }
            let (vj, fj) = (v[j], f[j]);
            for (i, out) in line[start..end].iter_mut().enumerate() {
                let d = (start + i) as f64 - vj;
                *out = h2 * (d * d) + fj;
            }
            start = end;
        }
    }
}

/// The forward half of the 1-D transform along axis 0 of the binary `mask`,
/// into `data`: `0` on the mask, else the count of steps since the last site
/// above (`+∞` before the first). Whole rows at a time, so that the loops
/// run along the contiguous trailing axes and vectorise.
fn forward_counts(mask: &[bool], data: &mut [f64], n0: usize, inner: usize) {
    let mut prev: Option<&[f64]> = None;
    for (m, cur) in mask
        .chunks_exact(inner)
        .zip(data.chunks_exact_mut(inner))
        .take(n0)
    {
        match prev {
            // `0` on the mask, else the count so far: a bit mask rather than
            // a branch, so that the loop vectorises.
            None => {
                for (c, &m) in cur.iter_mut().zip(m) {
                    *c = f64::from_bits(f64::INFINITY.to_bits() & u64::from(m).wrapping_sub(1));
                }
            }
            Some(p) => {
                for ((c, &m), &p) in cur.iter_mut().zip(m).zip(p) {
                    *c = f64::from_bits((p + 1.0).to_bits() & u64::from(m).wrapping_sub(1));
                }
            }
        }
        prev = Some(cur);
    }
}

/// The backward half for one row `cur` of the forward counts: the count
/// from below is carried in `carry`, and the row becomes `h²·steps²` (or
/// `h·steps` when `sqrt`) with `steps` the nearer of the two.
#[inline(always)]
fn backward_row(cur: &mut [f64], carry: &mut [f64], h: f64, sqrt: bool) {
    let h2 = h * h;
    for (c, k) in cur.iter_mut().zip(carry.iter_mut()) {
        let up = *k + 1.0;
        let steps = if up < *c { up } else { *c };
        *k = steps;
        *c = if sqrt {
            h * steps
        } else {
            h2 * (steps * steps)
        };
    }
}

/// Calls `f` on every line along `axis` of the row-major `data` of `shape`,
/// each line handed over as a contiguous slice whose changes are written back.
///
/// The last axis is walked in place; a strided axis is gathered [`BLOCK`]
/// lines at a time (one row segment per read), transformed and scattered back.
pub(crate) fn for_each_line<T: Copy + Default>(
    data: &mut [T],
    shape: &[usize],
    axis: usize,
    f: impl FnMut(&mut [T]),
) {
    let mut buf = Vec::new();
    lines_with(data, shape, axis, &mut buf, f);
}

/// [`for_each_line`] with the gather buffer supplied by the caller (grown
/// as needed), so that a caller that walks many small arrays allocates once.
fn lines_with<T: Copy + Default>(
    data: &mut [T],
    shape: &[usize],
    axis: usize,
    buf: &mut Vec<T>,
    mut f: impl FnMut(&mut [T]),
) {
    let n = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product();
    if n == 0 || inner == 0 {
        return;
    }
    if inner == 1 {
        for line in data.chunks_exact_mut(n) {
            f(line);
        }
        return;
    }
    if buf.len() < BLOCK * n {
        buf.resize(BLOCK * n, T::default());
    }
    for slab in data.chunks_exact_mut(n * inner) {
        let mut c0 = 0;
        while c0 < inner {
            let width = BLOCK.min(inner - c0);
            for (i, row) in slab.chunks_exact(inner).enumerate() {
                for (b, &x) in row[c0..c0 + width].iter().enumerate() {
                    buf[b * n + i] = x;
                }
            }
            for line in buf.chunks_exact_mut(n).take(width) {
                f(line);
            }
            for (i, row) in slab.chunks_exact_mut(inner).enumerate() {
                for (b, x) in row[c0..c0 + width].iter_mut().enumerate() {
                    *x = buf[b * n + i];
                }
            }
            c0 += width;
        }
    }
}

/// The fewest elements for which [`edt`] runs in parallel (with the `rayon`
/// feature and more than one thread). The fork and join cost a fixed ~30 µs
/// (measured on 2 threads: 55 µs against 28 µs serially on 64²), which is
/// 2–3 % of the ~1.2 ms that the serial transform takes at 2^17 elements;
/// a larger speed-up needs a second idle core, which a shared machine may
/// not have, so smaller arrays stay serial.
#[cfg(feature = "rayon")]
pub(crate) const PARALLEL_MIN: usize = 1 << 17;

/// The elements of one parallel chunk of rows of axis 0, at most (unless
/// [`MIN_ROWS`] asks for more). The rows of a chunk go through the cache one
/// at a time whatever its size, so this only trades the number of chunks
/// (work stealing balances uneven rows better with more) against the two
/// rows of counts that each chunk needs from its neighbours.
#[cfg(feature = "rayon")]
const CHUNK: usize = 1 << 17;

/// The fewest chunks the rows are cut into when there are rows enough.
#[cfg(feature = "rayon")]
const MIN_CHUNKS: usize = 8;

/// The fewest rows of a chunk: the two rows of counts from its neighbours
/// stay at most half the size of the output.
#[cfg(feature = "rayon")]
const MIN_ROWS: usize = 4;

/// The rows of axis 0 per parallel chunk for an array of `n0` rows of
/// `inner` elements: a function of the shape alone, so that the chunks, and
/// therefore the results, do not depend on the thread count. The array is
/// cut when this is less than `n0`.
#[cfg(feature = "rayon")]
fn chunk_rows(n0: usize, inner: usize) -> usize {
    CHUNK
        .div_ceil(inner)
        .min(n0.div_ceil(MIN_CHUNKS))
        .max(MIN_ROWS)
}

/// What the passes along axes 1.. of one call need, shared by every row.
struct Passes<'a> {
    /// The shape without axis 0.
    rest: &'a [usize],
    /// One step per axis, axis 0 included.
    spacing: &'a [f64],
    /// The last axis with a pass of its own (`shape[a] > 1`), which takes
    /// the square root when `sqrt`; axis 0 takes it when there is none.
    last: Option<usize>,
    sqrt: bool,
}

/// Finishes `rows`, whole rows of axis 0 that hold the forward counts: from
/// the last row up, the backward count (carried in `carry` from the row
/// below) and at once the passes along the other axes, while the row is
/// still in cache.
///
/// `above`, in a chunk of the parallel path, is the forward count of the
/// row just above `rows`: the counts of `rows` were started at `+∞` on
/// their first row, and are corrected to `min(count, above + i + 1)` on
/// row `i` before its backward count (the exact integer of the serial
/// path).
fn finish_rows(
    rows: &mut [f64],
    inner: usize,
    carry: &mut [f64],
    above: Option<&[f64]>,
    passes: &Passes<'_>,
    env: &mut Envelope,
    buf: &mut Vec<f64>,
) {
    let root0 = passes.sqrt && passes.last.is_none();
    for (i, row) in rows.chunks_exact_mut(inner).enumerate().rev() {
        if let Some(above) = above {
            let steps = (i + 1) as f64;
            for (c, &a) in row.iter_mut().zip(above) {
                let from_above = a + steps;
                *c = if from_above < *c { from_above } else { *c };
            }
        }
        // With AVX2 or AVX-512 where the CPU has them: the same
        // operations, two or four times as many per instruction.
        crate::kernel::dispatch::run(
            #[inline(always)]
            || backward_row(row, carry, passes.spacing[0], root0),
        );
        for axis in 1..=passes.rest.len() {
            if passes.rest[axis - 1] > 1 {
                let h2 = passes.spacing[axis] * passes.spacing[axis];
                let root = passes.sqrt && passes.last == Some(axis);
                lines_with(row, passes.rest, axis - 1, buf, |line| {
                    env.transform(line, h2, root)
                });
            }
        }
    }
}

/// The EDT of the row-major `mask` of `shape` into `data` (same length):
/// squared distances, or distances when `sqrt`. `spacing` has one finite
/// positive step per axis.
///
/// The forward count along axis 0 runs over the whole array first; then,
/// row by row of axis 0 from the last, the backward count finishes the row
/// and the other axes run on it at once, while it is still in cache (the
/// lines of axes 1.. never leave one row of axis 0). With the `rayon`
/// feature, from [`PARALLEL_MIN`] elements, the rows are cut into chunks
/// that do the same in parallel (see [`edt_chunked`]).
pub(crate) fn edt(mask: &[bool], data: &mut [f64], shape: &[usize], spacing: &[f64], sqrt: bool) {
    if data.is_empty() || mask.len() != data.len() {
        return;
    }
    let Some((&n0, rest)) = shape.split_first() else {
        // 0-d: one element.
        data[0] = if mask[0] { 0.0 } else { f64::INFINITY };
        return;
    };
    let inner: usize = rest.iter().product();
    let passes = Passes {
        rest,
        spacing,
        last: (1..shape.len()).rev().find(|&a| shape[a] > 1),
        sqrt,
    };
    // One thread takes the serial path, which gives the same bits without
    // the chunks' extra pass and rows.
    #[cfg(feature = "rayon")]
    if data.len() >= PARALLEL_MIN && data.len() == n0 * inner && rayon::current_num_threads() > 1 {
        let rows = chunk_rows(n0, inner);
        if rows < n0 {
            edt_chunked(mask, data, inner, &passes, rows);
            return;
        }
    }
    forward_counts(mask, data, n0, inner);
    let longest = rest.iter().copied().max().unwrap_or(0);
    let mut env = Envelope::new(longest);
    let mut buf = Vec::new();
    let mut carry = vec![f64::INFINITY; inner];
    let n = (n0 * inner).min(data.len());
    finish_rows(
        &mut data[..n],
        inner,
        &mut carry,
        None,
        &passes,
        &mut env,
        &mut buf,
    );
}

/// Per column of the rows of `mask` (`inner` wide), the steps from the
/// first row down to the first site (`+∞` without one): a backward count.
#[cfg(feature = "rayon")]
fn first_sites(mask: &[bool], inner: usize) -> Vec<f64> {
    let mut first = vec![f64::INFINITY; inner];
    for m in mask.chunks_exact(inner).rev() {
        for (f, &m) in first.iter_mut().zip(m) {
            *f = f64::from_bits((*f + 1.0).to_bits() & u64::from(m).wrapping_sub(1));
        }
    }
    first
}

/// [`edt`] on chunks of `rows` rows of axis 0 (`data` holds whole rows of
/// `inner` elements), in parallel, with the serial path's results bit for
/// bit.
///
/// 1. Each chunk runs the forward count from `+∞` on its first row, and
///    counts, per column, the steps from its first row to its first site.
/// 2. Serially, chunk by chunk: the forward count of the row above each
///    chunk, `min(local, above + rows)` down from the top, and the backward
///    count of the row below it, `min(first, rows + below)` up from the
///    bottom (one row of each per chunk).
/// 3. Each chunk runs [`finish_rows`] from those two rows, with scratch
///    buffers of its own.
///
/// The counts are small integers, exact in `f64`, and the minimum of the
/// two directions is the same whichever way it is reached; the passes along
/// the other axes see the same rows as in the serial path.
#[cfg(feature = "rayon")]
fn edt_chunked(mask: &[bool], data: &mut [f64], inner: usize, passes: &Passes<'_>, rows: usize) {
    use rayon::prelude::*;
    let size = rows * inner;
    let first: Vec<Vec<f64>> = data
        .par_chunks_mut(size)
        .zip(mask.par_chunks(size))
        .map(|(d, m)| {
            forward_counts(m, d, d.len() / inner, inner);
            first_sites(m, inner)
        })
        .collect();
    // The forward count of the row above each chunk: the last row of the
    // chunk before (every chunk but the last has `rows` rows).
    let mut above: Vec<Vec<f64>> = Vec::with_capacity(first.len());
    above.push(vec![f64::INFINITY; inner]);
    for chunk in data.chunks_exact(size).take(first.len() - 1) {
        let prev = &above[above.len() - 1];
        let next = chunk[size - inner..]
            .iter()
            .zip(prev)
            .map(|(&local, &p)| {
                let from_above = p + rows as f64;
                if from_above < local {
                    from_above
                } else {
                    local
                }
            })
            .collect();
        above.push(next);
    }
    // The backward count of the row below each chunk.
    let rows_of = |c: usize| (data.len() / inner - c * rows).min(rows) as f64;
    let mut below = first;
    let mut next = vec![f64::INFINITY; inner];
    for c in (0..below.len()).rev() {
        let steps = rows_of(c);
        for (f, &n) in below[c].iter_mut().zip(&next) {
            let from_below = n + steps;
            *f = if from_below < *f { from_below } else { *f };
        }
        // `below[c]` becomes the count of the row below chunk `c`, `next`
        // that of its first row.
        std::mem::swap(&mut below[c], &mut next);
    }
    let longest = passes.rest.iter().copied().max().unwrap_or(0);
    data.par_chunks_mut(size)
        .zip(above.par_iter())
        .zip(below.par_iter_mut())
        .for_each_init(
            || (Envelope::new(longest), Vec::new()),
            |(env, buf), ((chunk, above), carry)| {
                finish_rows(chunk, inner, carry, Some(above), passes, env, buf);
            },
        );
}

#[cfg(test)]
mod tests {
    use super::{Envelope, LANES, PAD};
    use proptest::prelude::*;

    /// `min_y h²·(q - y)² + line[y]` for every `q`, by definition.
    fn brute(line: &[f64], h2: f64) -> Vec<f64> {
        (0..line.len())
            .map(|q| {
                (0..line.len())
                    .map(|y| {
                        let d = q as f64 - y as f64;
                        line[y] + h2 * (d * d)
                    })
                    .fold(f64::INFINITY, |m, x| if x < m { x } else { m })
            })
            .collect()
    }

    /// `got` equals `expected`: bit for bit when `exact`, else within 1e-12.
    fn check(what: &str, got: &[f64], expected: &[f64], exact: bool) {
        for (q, (&x, &e)) in got.iter().zip(expected).enumerate() {
            let ok = if exact || e.is_infinite() {
                x.to_bits() == e.to_bits()
            } else {
                (x - e).abs() <= 1e-12 * e.max(1.0)
            };
            assert!(ok, "{what}[{q}]: {x} vs {e}");
        }
    }

    /// A line of `n` values from `codes`: `+∞`, 0, or a spread of sizes
    /// up to far beyond [`PAD`]², so that the windowed search both succeeds
    /// and gives up.
    fn line_of(codes: &[u32], n: usize) -> Vec<f64> {
        codes
            .iter()
            .cycle()
            .take(n)
            .map(|&c| match c % 8 {
                0..=2 => f64::INFINITY,
                3 => 0.0,
                4 => f64::from(c % 5),
                5 => f64::from(c % 50),
                6 => f64::from(c % 2000),
                _ => f64::from(c % 5_000_000),
            })
            .collect()
    }

    proptest! {
        /// The windowed search (when it succeeds), the envelope and the
        /// dispatching `transform` against the definition, on lines of
        /// different lengths through one shared `Envelope` (whose padding a
        /// longer line leaves dirty for a shorter one).
        #[test]
        fn line_kernels_match_brute_force(
            lines in prop::collection::vec(
                (1usize..200, prop::collection::vec(any::<u32>(), 1..64)),
                1..6,
            ),
            h in prop::sample::select(vec![1.0, 0.7, 0.3, 2.7]),
        ) {
            let mut env = Envelope::new(200);
            let h2: f64 = h * h;
            for (n, codes) in &lines {
                let line = line_of(codes, *n);
                let expected = brute(&line, h2);
                // The windowed search takes the minimum of the same sums as
                // the definition: exact at any spacing.
                if *n >= LANES {
                    let mut w = line.clone();
                    env.load(&line);
                    if env.window(&mut w, h2) {
                        check("window", &w, &expected, true);
                    }
                }
                let mut e = line.clone();
                env.load(&line);
                env.envelope(&mut e, h2);
                check("envelope", &e, &expected, h2 == 1.0);
                let mut t = line.clone();
                env.transform(&mut t, h2, false);
                check("transform", &t, &expected, h2 == 1.0);
                let mut r = line.clone();
                env.transform(&mut r, h2, true);
                let roots: Vec<f64> = expected.iter().map(|x| x.sqrt()).collect();
                check("transform sqrt", &r, &roots, h2 == 1.0);
            }
        }
    }

    /// The AVX-512, AVX2 and baseline paths of `kernel::dispatch` give the
    /// same bits (no FMA; minima and sums are exact operations on each
    /// lane).
    #[test]
    fn dispatch_paths_agree() {
        let mut rng = crate::test_rng::Xorshift(0x9e37_79b9_7f4a_7c15);
        let shape = [40, 70, 90];
        let mask: Vec<bool> = (0..shape.iter().product::<usize>())
            .map(|_| rng.next_u64().is_multiple_of(500))
            .collect();
        let (widest, capped) = crate::kernel::dispatch::on_every_path(|| {
            let mut out = vec![0.0; mask.len()];
            super::edt(&mask, &mut out, &shape, &[1.3, 0.7, 1.0], true);
            out
        });
        for (isa, capped) in capped {
            assert!(
                widest
                    .iter()
                    .zip(&capped)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{isa:?}"
            );
        }
    }

    /// A mask of `len` elements with sites of density about `p` (a xorshift
    /// generator: the same mask on every run).
    #[cfg(feature = "rayon")]
    fn sparse_mask(len: usize, p: f64, seed: u64) -> Vec<bool> {
        let mut rng = crate::test_rng::Xorshift(seed);
        (0..len).map(|_| rng.uniform() < p).collect()
    }

    /// The parallel chunks give the serial path's bits: on 2-D and 3-D
    /// masks with spacing, squared and not, dense, sparse (columns without
    /// a site in many chunks in a row) and empty, with chunks of one row and
    /// with the chunking `edt` picks (whose last chunk is short on three of
    /// the four shapes), on pools of 1 and 2 threads.
    #[cfg(feature = "rayon")]
    #[test]
    fn parallel_chunks_match_serial_for_any_thread_count() {
        let cases: [(&[usize], &[f64]); 4] = [
            (&[301, 440], &[1.0, 0.7]),
            (&[37, 61, 70], &[2.0, 0.7, 1.3]),
            (&[50, 1, 3000], &[0.5, 1.0, 1.0]),
            (&[2000, 70], &[1.1, 1.0]),
        ];
        let pools = [1, 2].map(|threads| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
        });
        let bits = |d: &[f64]| d.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for (shape, spacing) in cases {
            let len: usize = shape.iter().product();
            assert!(len >= super::PARALLEL_MIN);
            let (n0, rest) = shape.split_first().unwrap();
            let inner: usize = rest.iter().product();
            for (p, seed) in [(0.3, 1), (0.002, 2), (0.00005, 3), (0.0, 4)] {
                let mask = sparse_mask(len, p, seed);
                for sqrt in [false, true] {
                    let passes = super::Passes {
                        rest,
                        spacing,
                        last: (1..shape.len()).rev().find(|&a| shape[a] > 1),
                        sqrt,
                    };
                    let mut serial = vec![0.0; len];
                    super::forward_counts(&mask, &mut serial, *n0, inner);
                    let mut env = Envelope::new(rest.iter().copied().max().unwrap_or(0));
                    let mut carry = vec![f64::INFINITY; inner];
                    super::finish_rows(
                        &mut serial,
                        inner,
                        &mut carry,
                        None,
                        &passes,
                        &mut env,
                        &mut Vec::new(),
                    );
                    let serial = bits(&serial);
                    for pool in &pools {
                        for rows in [1, super::chunk_rows(*n0, inner)] {
                            let mut chunked = vec![0.0; len];
                            pool.install(|| {
                                super::edt_chunked(&mask, &mut chunked, inner, &passes, rows)
                            });
                            assert_eq!(bits(&chunked), serial, "{shape:?} p={p} rows={rows}");
                        }
                        let mut public = vec![0.0; len];
                        pool.install(|| super::edt(&mask, &mut public, shape, spacing, sqrt));
                        assert_eq!(bits(&public), serial, "{shape:?} p={p} edt");
                    }
                }
            }
        }
    }

    /// Outputs whose nearest site is a little farther than [`PAD`] are
    /// finished one at a time by the windowed search itself.
    #[test]
    fn window_looks_past_pad() {
        let n = 16 * PAD;
        let far = (PAD + PAD / 2) as f64;
        let mut line = vec![far * far; n];
        // One gap a little wider than 2·PAD between sites, then sites
        // every PAD/2.
        line[0] = 0.0;
        for y in (2 * PAD + 6..n).step_by(PAD / 2) {
            line[y] = 0.0;
        }
        let mut env = Envelope::new(n);
        for h2 in [1.0, 0.49] {
            let mut w = line.clone();
            env.load(&line);
            assert!(env.window(&mut w, h2));
            check("window", &w, &brute(&line, h2), true);
            assert!(w[PAD + 2] > (PAD * PAD) as f64 * h2);
        }
    }

    /// The windowed search gives up when a block needs to look
    /// farther than [`PAD`], and then the envelope's result stands.
    #[test]
    fn window_gives_up_on_far_sites() {
        let n = 3 * PAD;
        let mut line = vec![f64::INFINITY; n];
        line[0] = 0.0;
        let mut env = Envelope::new(n);
        let mut w = line.clone();
        env.load(&line);
        assert!(!env.window(&mut w, 1.0));
        let mut t = line.clone();
        env.transform(&mut t, 1.0, false);
        check("transform", &t, &brute(&line, 1.0), true);
    }
}
