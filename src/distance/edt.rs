//! The exact squared Euclidean distance transform on a flat, row-major buffer.
//!
//! The transform is separable: the squared distance to the nearest site is the
//! minimum over sites of `Σ_a (h_a·(x_a - y_a))²`, so it is computed one axis
//! at a time. Axis 0 starts from the binary mask, where the 1-D transform is a
//! forward and a backward running count; that pass walks whole rows at once
//! (it vectorises across the contiguous trailing axes). Every other axis runs
//! the lower envelope of parabolas of Felzenszwalb and Huttenlocher (2012) on
//! each line: in place on the contiguous last axis, and on blocks of lines
//! gathered into a buffer for the strided middle axes, so that every read of
//! the array touches whole cache lines.

/// Lines of a strided axis gathered and transformed together.
const BLOCK: usize = 16;

/// Mean search steps per element under which a line takes the direct search.
const LOCAL_STEPS: f64 = 4.0;

/// Reusable buffers of the lower envelope, sized for the longest line.
pub(crate) struct Envelope {
    /// Positions of the parabolas in the envelope.
    v: Vec<f64>,
    /// `f(v) + h²·v²` of each parabola.
    g: Vec<f64>,
    /// `f(v)` of each parabola; the copy of the line for the direct search.
    f: Vec<f64>,
}

impl Envelope {
    pub(crate) fn new(n: usize) -> Self {
        Envelope {
            v: vec![0.0; n],
            g: vec![0.0; n],
            f: vec![0.0; n],
        }
    }

    /// Replaces `line[q]` by `min_y h²·(q - y)² + line[y]`, in place (by its
    /// square root when `sqrt`).
    ///
    /// `+∞` entries are not sites; a line without sites stays `+∞`. Lines
    /// whose entries are small (a dense mask) take a direct search around
    /// each element, which costs about `Σ √(line[q])/h` steps and has far
    /// fewer mispredicted branches than the envelope; others the envelope.
    pub(crate) fn transform(&mut self, line: &mut [f64], h2: f64, sqrt: bool) {
        let budget = LOCAL_STEPS * line.len() as f64 * h2.sqrt();
        // Σ √line[q], in chunks with four partial sums (so that the loop
        // vectorises), stopping as soon as the budget is spent.
        let mut total = 0.0;
        let mut chunks = line.chunks_exact(64);
        let mut local = true;
        for chunk in chunks.by_ref() {
            let mut sums = [0.0; 4];
            for c in chunk.chunks_exact(4) {
                for (s, &f) in sums.iter_mut().zip(c) {
                    *s += f.sqrt();
                }
            }
            total += sums.iter().sum::<f64>();
            if total > budget {
                local = false;
                break;
            }
        }
        if local {
            total += chunks.remainder().iter().map(|f| f.sqrt()).sum::<f64>();
            local = total <= budget;
        }
        if local {
            self.local(line, h2);
        } else {
            self.envelope(line, h2);
        }
        // One long loop for the roots rather than one per envelope segment.
        if sqrt {
            for x in line.iter_mut() {
                *x = x.sqrt();
            }
        }
    }

    /// The direct search: from each `q`, look at `q ± r` for growing `r`
    /// while `h²·r²` is below the best value found.
    fn local(&mut self, line: &mut [f64], h2: f64) {
        let n = line.len();
        let f = &mut self.f[..n];
        f.copy_from_slice(line);
        for (q, out) in line.iter_mut().enumerate() {
            let mut best = f[q];
            let mut r = 1usize;
            loop {
                let rf = r as f64;
                let step = h2 * (rf * rf);
                if step >= best {
                    break;
                }
                if let Some(&left) = q.checked_sub(r).and_then(|i| f.get(i)) {
                    if left + step < best {
                        best = left + step;
                    }
                }
                if let Some(&right) = f.get(q + r) {
                    if right + step < best {
                        best = right + step;
                    }
                }
                r += 1;
            }
            *out = best;
        }
    }

    /// The lower envelope of parabolas (Felzenszwalb & Huttenlocher),
    /// without divisions while it is built: a parabola is popped when its
    /// successor's intersection with it does not come after its own start,
    /// compared by cross-multiplying the two fractions (positive
    /// denominators). With unit spacing every quantity is an integer below
    /// 2⁵³, so the comparisons are exact. The envelope is then written one
    /// parabola's interval at a time, a loop without branches.
    fn envelope(&mut self, line: &mut [f64], h2: f64) {
        let n = line.len();
        let (v, g, f) = (&mut self.v[..n], &mut self.g[..n], &mut self.f[..n]);
        let two_h2 = 2.0 * h2;
        let mut k = 0usize;
        let (mut tv, mut tg) = (0.0, 0.0);
        for (q, &fq) in line.iter().enumerate() {
            if fq == f64::INFINITY {
                continue;
            }
            // A parabola that its two neighbours cover on the whole line
            // (second difference of f at q at least 2h²) never matters.
            if q > 0 && q + 1 < n && 2.0 * fq - line[q - 1] - line[q + 1] >= two_h2 {
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
            return; // no site: the line is already +∞
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

/// The EDT of the row-major `mask` of `shape` into `data` (same length):
/// squared distances, or distances when `sqrt`. `spacing` has one finite
/// positive step per axis.
///
/// The forward count along axis 0 runs over the whole array first; then,
/// row by row of axis 0 from the last, the backward count finishes the row
/// and the other axes run on it at once, while it is still in cache (the
/// lines of axes 1.. never leave one row of axis 0).
pub(crate) fn edt(mask: &[bool], data: &mut [f64], shape: &[usize], spacing: &[f64], sqrt: bool) {
    if data.is_empty() || mask.len() != data.len() {
        return;
    }
    let Some((&n0, rest)) = shape.split_first() else {
        // 0-d: one element.
        data[0] = if mask[0] { 0.0 } else { f64::INFINITY };
        return;
    };
    // The last axis with a pass of its own takes the square root.
    let last = (1..shape.len()).rev().find(|&a| shape[a] > 1);
    let inner: usize = rest.iter().product();
    forward_counts(mask, data, n0, inner);
    let longest = rest.iter().copied().max().unwrap_or(0);
    let mut env = Envelope::new(longest);
    let mut buf = Vec::new();
    let mut carry = vec![f64::INFINITY; inner];
    let root0 = sqrt && last.is_none();
    for row in data.chunks_exact_mut(inner).take(n0).rev() {
        backward_row(row, &mut carry, spacing[0], root0);
        for axis in 1..shape.len() {
            if shape[axis] > 1 {
                let h2 = spacing[axis] * spacing[axis];
                let root = sqrt && last == Some(axis);
                lines_with(row, rest, axis - 1, &mut buf, |line| {
                    env.transform(line, h2, root)
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Envelope;

    /// Both line kernels against the definition, on lines the heuristic
    /// would send either way.
    #[test]
    fn local_search_and_envelope_agree() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for case in 0..400 {
            let n = 1 + (next() % 40) as usize;
            let h = [1.0, 0.3, 2.7][case % 3];
            let spread = [2, 30, 1000][(case / 3) % 3];
            let line: Vec<f64> = (0..n).map(|_| (next() % spread) as f64).collect();
            let expected: Vec<f64> = (0..n)
                .map(|q| {
                    (0..n)
                        .map(|y| {
                            let d = h * (q as f64 - y as f64);
                            d * d + line[y]
                        })
                        .fold(f64::INFINITY, f64::min)
                })
                .collect();
            let mut env = Envelope::new(n);
            let (mut a, mut b) = (line.clone(), line.clone());
            env.local(&mut a, h * h);
            env.envelope(&mut b, h * h);
            for ((&x, &y), &e) in a.iter().zip(&b).zip(&expected) {
                assert!((x - e).abs() <= 1e-12 * e.max(1.0), "local {x} vs {e}");
                assert!((y - e).abs() <= 1e-12 * e.max(1.0), "envelope {y} vs {e}");
            }
        }
    }
}
