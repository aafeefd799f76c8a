//! The squared distances to the two nearest distinct instances, in one
//! separable sweep.
//!
//! Every element carries its two best `(squared distance, label)` pairs with
//! distinct labels, over the axes processed so far. A pass along an axis only
//! needs, on each line, the pairs stored along that line: if label `L` is
//! among the two best at `x` after the pass, with its minimum attained at `y`
//! on the line, then at `y` either `L` was stored, or two other labels were
//! stored at least as close to `y`, and then those two are at least as close
//! to `x` as `L`; so the two best *values* at `x` are always found among the
//! stored pairs (ties may swap labels, never values).
//!
//! Axis 0 starts from the labels: a forward and a backward scan over whole
//! rows track, per column, the nearest site and the nearest site with another
//! label. Every other axis runs two lower envelopes of parabolas per line:
//! one over the best pairs gives `d1` and its label `ℓ(x)`; then, on each run
//! of consecutive `x` sharing `ℓ(x)`, one over the pairs whose label is not
//! `ℓ` (each site's best pair, or its second when the best has label `ℓ`)
//! gives `d2`. With a cut-off `R`, only sites within `R` of the run can give a
//! `d2 <= R`, so that envelope spans the run grown by `R` and the work per line
//! stays linear in its length; a `d2` above `R` is reported as `+∞`.

use super::edt::for_each_line;

/// The two best `(squared distance, label)` pairs of an element, with
/// distinct labels; label 0 (with `+∞`) means none.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Pair {
    pub(crate) d1: f64,
    pub(crate) d2: f64,
    pub(crate) l1: u32,
    pub(crate) l2: u32,
}

impl Default for Pair {
    fn default() -> Self {
        Pair::NONE
    }
}

impl Pair {
    pub(crate) const NONE: Pair = Pair {
        d1: f64::INFINITY,
        d2: f64::INFINITY,
        l1: 0,
        l2: 0,
    };

    /// The starting pair of an element holding `label` (0: background).
    #[inline]
    pub(crate) fn from_label(label: u32) -> Self {
        if label == 0 {
            Pair::NONE
        } else {
            Pair {
                d1: 0.0,
                d2: f64::INFINITY,
                l1: label,
                l2: 0,
            }
        }
    }
}

/// Lower envelope of labelled parabolas `h²·(x - q)² + f`, with reusable
/// buffers.
struct Envelope {
    v: Vec<usize>,
    z: Vec<f64>,
    g: Vec<f64>,
    f: Vec<f64>,
    label: Vec<u32>,
    k: usize,
}

impl Envelope {
    fn new(n: usize) -> Self {
        Envelope {
            v: vec![0; n],
            z: vec![0.0; n],
            g: vec![0.0; n],
            f: vec![0.0; n],
            label: vec![0; n],
            k: 0,
        }
    }

    /// Adds the parabola of site `q` (pushed in increasing `q`, finite `fq`).
    #[inline(always)]
    fn push(&mut self, q: usize, fq: f64, label: u32, two_h2: f64) {
        let qf = q as f64;
        let gq = fq + 0.5 * two_h2 * qf * qf;
        let mut k = self.k;
        // Pop the parabolas hidden by q's: compared without dividing (the
        // denominator is positive).
        while k > 0 && gq - self.g[k - 1] <= self.z[k - 1] * (two_h2 * (qf - self.v[k - 1] as f64))
        {
            k -= 1;
        }
        self.z[k] = if k == 0 {
            f64::NEG_INFINITY
        } else {
            (gq - self.g[k - 1]) / (two_h2 * (qf - self.v[k - 1] as f64))
        };
        self.v[k] = q;
        self.g[k] = gq;
        self.f[k] = fq;
        self.label[k] = label;
        self.k = k + 1;
    }
}

/// One pass along a line: `line` holds the pairs over the previous axes,
/// `out` receives them over this axis too. `cut` is the squared cut-off,
/// `w` the cut-off in steps along this axis.
fn line_pass(line: &[Pair], out: &mut [Pair], h2: f64, cut: f64, w: usize, env: &mut Envelope) {
    let n = line.len();
    let two_h2 = 2.0 * h2;
    env.k = 0;
    for (q, p) in line.iter().enumerate() {
        if p.d1 < f64::INFINITY {
            env.push(q, p.d1, p.l1, two_h2);
        }
    }
    if env.k == 0 {
        out.fill(Pair::NONE);
        return;
    }
    let mut j = 0;
    for (q, o) in out.iter_mut().enumerate() {
        let (d, l) = eval(env, q, &mut j, h2);
        *o = Pair {
            d1: d,
            d2: f64::INFINITY,
            l1: l,
            l2: 0,
        };
    }
    let mut a = 0;
    while a < n {
        let label = out[a].l1;
        if out[a].d1 > cut {
            a += 1;
            continue;
        }
        let mut b = a + 1;
        while b < n && out[b].l1 == label && out[b].d1 <= cut {
            b += 1;
        }
        let lo = a.saturating_sub(w);
        let hi = b.saturating_add(w).min(n);
        env.k = 0;
        for (y, p) in line[lo..hi].iter().enumerate() {
            let (d, l) = if p.l1 != label {
                (p.d1, p.l1)
            } else {
                (p.d2, p.l2)
            };
            if d < f64::INFINITY {
                env.push(lo + y, d, l, two_h2);
            }
        }
        if env.k > 0 {
            let mut j = 0;
            for (x, o) in out[a..b].iter_mut().enumerate() {
                let (d, l) = eval(env, a + x, &mut j, h2);
                if d <= cut {
                    o.d2 = d;
                    o.l2 = l;
                }
            }
        }
        a = b;
    }
}

/// The envelope's value and label at `q`; `j` is a cursor for increasing `q`
/// (start it at 0).
#[inline]
fn eval(env: &Envelope, q: usize, j: &mut usize, h2: f64) -> (f64, u32) {
    let qf = q as f64;
    while *j + 1 < env.k && env.z[*j + 1] < qf {
        *j += 1;
    }
    let d = qf - env.v[*j] as f64;
    (h2 * (d * d) + env.f[*j], env.label[*j])
}

/// The best two distinct-label pairs among those of `a` and `b`.
#[inline]
fn merge(a: Pair, b: Pair) -> Pair {
    let (d1, l1) = if a.d1 <= b.d1 {
        (a.d1, a.l1)
    } else {
        (b.d1, b.l1)
    };
    let mut second = (f64::INFINITY, 0);
    for (d, l) in [(a.d1, a.l1), (a.d2, a.l2), (b.d1, b.l1), (b.d2, b.l2)] {
        if l != l1 && d < second.0 {
            second = (d, l);
        }
    }
    Pair {
        d1,
        d2: second.0,
        l1,
        l2: second.1,
    }
}

/// Moves the running state of a scan over a site-or-not element one step on:
/// `label` is the element's label (0 when it is no site).
#[inline]
fn step(s: &mut Pair, label: u32) {
    if label != 0 {
        if s.l1 != label {
            s.d2 = s.d1 + 1.0;
            s.l2 = s.l1;
        } else {
            s.d2 += 1.0;
        }
        s.d1 = 0.0;
        s.l1 = label;
    } else {
        s.d1 += 1.0;
        s.d2 += 1.0;
    }
}

/// The pass along axis 0, from the starting pairs ([`Pair::from_label`]).
fn first_axis(data: &mut [Pair], n0: usize, inner: usize, h2: f64) {
    let mut state = vec![Pair::NONE; inner];
    // Forward: counts of steps to the nearest site at or before the row, and
    // to the nearest one with another label.
    for row in data.chunks_exact_mut(inner).take(n0) {
        for (c, s) in row.iter_mut().zip(state.iter_mut()) {
            step(s, c.l1);
            *c = *s;
        }
    }
    state.fill(Pair::NONE);
    for row in data.chunks_exact_mut(inner).take(n0).rev() {
        for (c, s) in row.iter_mut().zip(state.iter_mut()) {
            // A site is where the forward count is 0.
            step(s, if c.d1 == 0.0 { c.l1 } else { 0 });
            let m = merge(*c, *s);
            *c = Pair {
                d1: h2 * (m.d1 * m.d1),
                d2: h2 * (m.d2 * m.d2),
                ..m
            };
        }
    }
}

/// The two-best sweep in place: on entry `data` holds [`Pair::from_label`]
/// of each element (row-major, of `shape`); on exit, the two best squared
/// distances. Second distances above `max_distance` may be `+∞` (then with
/// label 0); every finite value is exact. `spacing` has one finite positive
/// step per axis; `max_distance` is `>= 0` or `+∞`.
pub(crate) fn two_nearest_in_place(
    data: &mut [Pair],
    shape: &[usize],
    spacing: &[f64],
    max_distance: f64,
) {
    if shape.is_empty() || data.is_empty() {
        return;
    }
    // A hair of slack so that a distance equal to the cut-off is never lost
    // to rounding.
    let reach = max_distance * (1.0 + 1e-9);
    let cut = reach * reach;
    let inner: usize = shape[1..].iter().product();
    first_axis(data, shape[0], inner, spacing[0] * spacing[0]);
    let longest = shape[1..].iter().copied().max().unwrap_or(0);
    let mut env = Envelope::new(longest);
    let mut input = vec![Pair::NONE; longest];
    for axis in 1..shape.len() {
        let n = shape[axis];
        if n <= 1 {
            continue;
        }
        let h = spacing[axis];
        let steps = (reach / h).floor();
        let w = if steps < n as f64 { steps as usize } else { n };
        let h2 = h * h;
        let input = &mut input[..n];
        for_each_line(data, shape, axis, |line| {
            input.copy_from_slice(line);
            line_pass(input, line, h2, cut, w, &mut env);
        });
    }
}
