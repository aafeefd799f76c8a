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

/// What the last pass must deliver of the second distance.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Need {
    /// `d2` exact wherever it is at most the cut-off.
    All,
    /// The border term of the weight map: `d2` only off the instances
    /// unless `everywhere`, and only its value (its label may be left 0).
    Border {
        /// Whether elements inside instances need `d2` too.
        everywhere: bool,
    },
}

/// Runs of at most this many elements take the direct search over their
/// window for `d2` rather than an envelope.
const DIRECT_RUN: usize = 6;

/// Lower envelope of labelled parabolas `h²·(x - q)² + f`, with reusable
/// buffers; built without divisions (see `edt.rs`).
struct Envelope {
    v: Vec<f64>,
    g: Vec<f64>,
    f: Vec<f64>,
    label: Vec<u32>,
    k: usize,
    /// Position and `g` of the top entry (`k - 1`).
    tv: f64,
    tg: f64,
}

impl Envelope {
    fn new(n: usize) -> Self {
        Envelope {
            v: vec![0.0; n],
            g: vec![0.0; n],
            f: vec![0.0; n],
            label: vec![0; n],
            k: 0,
            tv: 0.0,
            tg: 0.0,
        }
    }

    /// Adds the parabola of site `q` (pushed in increasing `q`, finite `fq`).
    #[inline(always)]
    fn push(&mut self, q: usize, fq: f64, label: u32, h2: f64) {
        let qf = q as f64;
        let gq = fq + h2 * (qf * qf);
        let mut k = self.k;
        // The top entry is also kept in fields: loading it back from the
        // arrays right after storing it (as one wide load of two entries)
        // would stall store forwarding on every push.
        let (mut tv, mut tg) = (self.tv, self.tg);
        // Pop while q's intersection with the top parabola is at or before
        // the top one's start (fractions cross-multiplied, positive
        // denominators).
        while k > 1 {
            let (pv, pg) = (self.v[k - 2], self.g[k - 2]);
            if (gq - tg) * (tv - pv) <= (tg - pg) * (qf - tv) {
                k -= 1;
                (tv, tg) = (pv, pg);
            } else {
                break;
            }
        }
        self.v[k] = qf;
        self.g[k] = gq;
        self.f[k] = fq;
        self.label[k] = label;
        self.k = k + 1;
        (self.tv, self.tg) = (qf, gq);
    }

    /// Calls `each(x, value, label, site)` for every `x` in `a..b`, in
    /// order, with the envelope's value at `x`, its label and position.
    #[inline(always)]
    fn fill(&self, a: usize, b: usize, h2: f64, mut each: impl FnMut(usize, f64, u32, f64)) {
        let (v, g, f, label) = (&self.v, &self.g, &self.f, &self.label);
        let two_h2 = 2.0 * h2;
        let mut start = a;
        for j in 0..self.k {
            let end = if j + 1 < self.k {
                let z = (g[j + 1] - g[j]) / (two_h2 * (v[j + 1] - v[j]));
                if z < start as f64 {
                    continue;
                }
                // z >= 0: truncation is the floor (and no libm call).
                (z as usize).saturating_add(1).min(b)
            } else {
                b
            };
            let (vj, fj, lj) = (v[j], f[j], label[j]);
            for x in start..end {
                let d = x as f64 - vj;
                each(x, h2 * (d * d) + fj, lj, vj);
            }
            start = end;
            if start >= b {
                break;
            }
        }
    }
}

/// Buffers of one line pass, sized for the longest line.
struct Scratch {
    env: Envelope,
    /// Position of the site that gives each element its `d1`.
    site: Vec<f64>,
    /// Largest `d2` each element needs (`-1`: none).
    need: Vec<f64>,
    /// The window's values and labels other than the run's label.
    wv: Vec<f64>,
    wl: Vec<u32>,
}

impl Scratch {
    fn new(n: usize) -> Self {
        Scratch {
            env: Envelope::new(n),
            site: vec![0.0; n],
            need: vec![0.0; n],
            wv: vec![0.0; n],
            wl: vec![0; n],
        }
    }
}

/// The best value of `p` whose label is not `label`.
#[inline(always)]
fn other(p: &Pair, label: u32) -> (f64, u32) {
    if p.l1 != label {
        (p.d1, p.l1)
    } else {
        (p.d2, p.l2)
    }
}

/// One pass along a line: `line` holds the pairs over the previous axes,
/// `out` receives them over this axis too. `cut` is the squared cut-off,
/// `w` the cut-off in steps along this axis, `need` what `d2` must hold.
///
/// `d1` comes from one envelope over the best pair of every site. Then, on
/// each run of consecutive elements sharing the nearest label `ℓ`, `d2` is
/// the lowest of the parabolas of labels other than `ℓ`. Their sites lie
/// within a window around the run: no farther than the cut-off, and no
/// farther than a known upper bound of `d2` on the run (the sites nearest
/// to the neighbouring runs, and each element's own other-label pair). Runs
/// of nearby instances thus look at few sites, whatever the cut-off.
fn line_pass(
    line: &[Pair],
    out: &mut [Pair],
    h: f64,
    cut: f64,
    w: usize,
    need: Need,
    s: &mut Scratch,
) {
    let n = line.len();
    let h2 = h * h;
    let env = &mut s.env;
    env.k = 0;
    // Parabolas that are the lowest at most at their own site are left out
    // of the envelope (inside instances, every site but a run's two ends)
    // and put back at their site afterwards.
    let mut skipped = false;
    if let [first, .., last] = line {
        if first.d1 < f64::INFINITY {
            env.push(0, first.d1, first.l1, h2);
        }
        for (q, w) in line.windows(3).enumerate() {
            let (l, p, r) = (w[0].d1, w[1].d1, w[2].d1);
            if p == f64::INFINITY {
                continue;
            }
            // A parabola that its two neighbours cover on the whole line
            // never is the lowest; one at least as high as both neighbours
            // is above them everywhere but at its own site.
            if 2.0 * p - l - r >= 2.0 * h2 {
                continue;
            }
            if l <= p && r <= p {
                skipped = true;
                continue;
            }
            env.push(q + 1, p, w[1].l1, h2);
        }
        if last.d1 < f64::INFINITY {
            env.push(n - 1, last.d1, last.l1, h2);
        }
    } else if let [only] = line
        && only.d1 < f64::INFINITY
    {
        env.push(0, only.d1, only.l1, h2);
    }
    if env.k == 0 {
        out.fill(Pair::NONE);
        return;
    }
    let site = &mut s.site[..n];
    env.fill(0, n, h2, |x, d, l, v| {
        out[x] = Pair {
            d1: d,
            d2: f64::INFINITY,
            l1: l,
            l2: 0,
        };
        site[x] = v;
    });
    if skipped {
        for (x, ((o, p), y)) in out.iter_mut().zip(line).zip(site.iter_mut()).enumerate() {
            if p.d1 < o.d1 {
                (o.d1, o.l1) = (p.d1, p.l1);
                *y = x as f64;
            }
        }
    }
    let limit = &mut s.need[..n];
    // The weight map reads the values only: on its pass the direct search
    // leaves `l2` at 0.
    let labels_wanted = need == Need::All;
    match need {
        Need::All => {
            for (c, o) in limit.iter_mut().zip(out.iter()) {
                *c = if o.d1 <= cut { cut } else { -1.0 };
            }
        }
        Need::Border { everywhere } => {
            // On the last pass d1 is final: 0 exactly inside the instances.
            for (c, o) in limit.iter_mut().zip(out.iter()) {
                *c = if o.d1 <= cut && (everywhere || o.d1 > 0.0) {
                    cut
                } else {
                    -1.0
                };
            }
        }
    }
    // `seg_start..seg_end`: the maximal segment of equal nearest label
    // around the current run.
    let (mut seg_start, mut seg_end) = (0usize, 0usize);
    let mut a = 0;
    while a < n {
        if limit[a] < 0.0 {
            a += 1;
            continue;
        }
        let label = out[a].l1;
        let mut b = a + 1;
        while b < n && out[b].l1 == label && limit[b] >= 0.0 {
            b += 1;
        }
        if a >= seg_end {
            seg_start = a;
            while seg_start > 0 && out[seg_start - 1].l1 == label {
                seg_start -= 1;
            }
            seg_end = b;
            while seg_end < n && out[seg_end].l1 == label {
                seg_end += 1;
            }
        }
        // The sites of the nearest elements outside the segment (whose
        // label differs) bound d2 on the run.
        let side = |e: Option<usize>| -> Option<(f64, f64)> {
            let e = e?;
            let o = out.get(e)?;
            if o.l1 == label || o.l1 == 0 {
                return None;
            }
            let y = site[e];
            Some((y, line[y as usize].d1))
        };
        // A missing side is a site at +∞ (no branch in the loop below).
        let none = (0.0, f64::INFINITY);
        let (ly, lf) = side(seg_start.checked_sub(1)).unwrap_or(none);
        let (ry, rf) = side(Some(seg_end)).unwrap_or(none);
        let mut bound = 0.0f64;
        for ((x, p), &c) in (a..b).zip(&line[a..b]).zip(&limit[a..b]) {
            let xf = x as f64;
            let (dl, dr) = (xf - ly, xf - ry);
            let u = other(p, label)
                .0
                .min(c)
                .min(h2 * (dl * dl) + lf)
                .min(h2 * (dr * dr) + rf);
            bound = bound.max(u);
        }
        let r = if bound < f64::INFINITY {
            ((bound.sqrt() / h) as usize).saturating_add(1).min(w)
        } else {
            w
        };
        let lo = a.saturating_sub(r);
        let hi = b.saturating_add(r).min(n);
        if b - a <= DIRECT_RUN && !labels_wanted {
            let wv = &mut s.wv[..hi - lo];
            for (v, p) in wv.iter_mut().zip(&line[lo..hi]) {
                *v = other(p, label).0;
            }
            for x in a..b {
                // Without the labels the search is a plain minimum, which
                // compiles to `minsd` with no branch. `d` steps down
                // through integers: exact.
                let mut best = f64::INFINITY;
                let mut d = (x - lo) as f64;
                for &v in wv.iter() {
                    let c = h2 * (d * d) + v;
                    best = if c < best { c } else { best };
                    d -= 1.0;
                }
                if best <= limit[x] {
                    out[x].d2 = best;
                }
            }
        } else if b - a <= DIRECT_RUN {
            let (wv, wl) = (&mut s.wv[..hi - lo], &mut s.wl[..hi - lo]);
            for ((v, l), p) in wv.iter_mut().zip(wl.iter_mut()).zip(&line[lo..hi]) {
                (*v, *l) = other(p, label);
            }
            for x in a..b {
                let xf = x as f64;
                let mut best = f64::INFINITY;
                let mut best_label = 0;
                for (y, (&v, &l)) in wv.iter().zip(wl.iter()).enumerate() {
                    let d = xf - (lo + y) as f64;
                    let c = h2 * (d * d) + v;
                    if c < best {
                        best = c;
                        best_label = l;
                    }
                }
                if best <= limit[x] {
                    out[x].d2 = best;
                    out[x].l2 = best_label;
                }
            }
        } else {
            env.k = 0;
            // A site whose value alone exceeds the bound never gives a d2
            // the run keeps.
            for (y, p) in line[lo..hi].iter().enumerate() {
                let (d, l) = other(p, label);
                if d <= bound && d < f64::INFINITY {
                    env.push(lo + y, d, l, h2);
                }
            }
            if env.k > 0 {
                env.fill(a, b, h2, |x, d, l, _| {
                    if d <= limit[x] {
                        out[x].d2 = d;
                        out[x].l2 = l;
                    }
                });
            }
        }
        a = b;
    }
}

/// Moves a running scan state along axis 0 one row on over `label` (0: no
/// site): the steps to the nearest site so far and to the nearest with
/// another label, with their labels (`+∞` steps: none). A site of another
/// label than the nearest so far pushes that one to second place. Selects,
/// not branches: labels change unpredictably.
#[inline(always)]
fn step(s: &mut Pair, label: u32) {
    let site = label != 0;
    let new = site & (s.l1 != label);
    let up1 = s.d1 + 1.0;
    let up2 = s.d2 + 1.0;
    s.d2 = if new { up1 } else { up2 };
    s.l2 = if new { s.l1 } else { s.l2 };
    s.d1 = if site { 0.0 } else { up1 };
    s.l1 = if site { label } else { s.l1 };
}

/// The pass along axis 0, straight from the row-major `labels`, into `data`
/// (as [`two_nearest_pairs`] describes it).
///
/// A forward and a backward scan over whole rows (so that memory is read
/// and written in order) count, per column, the steps to the nearest site
/// before (after) each row and to the nearest with another label; the
/// forward counts wait in `data`. The best two distinct labels of both
/// sides are the element's pairs: the better first pair (the forward one on
/// ties), then the better of its own second and the other side's best pair
/// with another label. Counts are whole numbers in `f64` (exact, and `+∞`
/// stays `+∞`), merged with selects.
fn first_axis(labels: &[u32], data: &mut [Pair], n0: usize, inner: usize, h2: f64) {
    let mut state = vec![Pair::NONE; inner];
    for (row, out) in labels
        .chunks_exact(inner)
        .zip(data.chunks_exact_mut(inner))
        .take(n0)
    {
        for ((&label, o), s) in row.iter().zip(out.iter_mut()).zip(state.iter_mut()) {
            step(s, label);
            *o = *s;
        }
    }
    state.fill(Pair::NONE);
    for (row, out) in labels
        .chunks_exact(inner)
        .zip(data.chunks_exact_mut(inner))
        .take(n0)
        .rev()
    {
        for ((&label, o), s) in row.iter().zip(out.iter_mut()).zip(state.iter_mut()) {
            step(s, label);
            *o = merge(*o, *s, h2);
        }
    }
}

/// The pairs of an element along axis 0 from the forward and backward scan
/// states (in steps) that meet there: the better first pair (the forward
/// one on ties), then the better of its own second and the other side's
/// best pair with another label, squared and times `h2`.
#[inline(always)]
fn merge(fore: Pair, back: Pair, h2: f64) -> Pair {
    let first = fore.d1 <= back.d1;
    let (win, lose) = if first { (fore, back) } else { (back, fore) };
    let distinct = lose.l1 != win.l1;
    let od = if distinct { lose.d1 } else { lose.d2 };
    let ol = if distinct { lose.l1 } else { lose.l2 };
    let own = win.d2 <= od;
    let d2 = if own { win.d2 } else { od };
    Pair {
        d1: h2 * (win.d1 * win.d1),
        d2: h2 * (d2 * d2),
        l1: win.l1,
        l2: if own { win.l2 } else { ol },
    }
}

/// Per-column scan states along axis 0 (see [`step`]) in whole steps,
/// `u32::MAX` for none, as one array per field so that the scans
/// vectorise.
struct Scan {
    d1: Vec<u32>,
    d2: Vec<u32>,
    l1: Vec<u32>,
    l2: Vec<u32>,
}

impl Scan {
    fn new(n: usize) -> Self {
        Scan {
            d1: vec![u32::MAX; n],
            d2: vec![u32::MAX; n],
            l1: vec![0; n],
            l2: vec![0; n],
        }
    }

    /// [`step`] on every column over the row `labels`, in whole steps.
    #[inline(always)]
    fn step(&mut self, labels: &[u32]) {
        let n = labels.len();
        let (d1, d2) = (&mut self.d1[..n], &mut self.d2[..n]);
        let (l1, l2) = (&mut self.l1[..n], &mut self.l2[..n]);
        for i in 0..n {
            let label = labels[i];
            let site = label != 0;
            let new = site & (l1[i] != label);
            let up1 = d1[i].saturating_add(1);
            let up2 = d2[i].saturating_add(1);
            d2[i] = if new { up1 } else { up2 };
            l2[i] = if new { l1[i] } else { l2[i] };
            d1[i] = if site { 0 } else { up1 };
            l1[i] = if site { label } else { l1[i] };
        }
    }
}

/// `h2·s²` for `s` whole steps, `+∞` for none (as the `f64` counts of
/// [`first_axis`] give it).
#[inline(always)]
fn squared(s: u32, h2: f64) -> f64 {
    let f = s as f64;
    if s == u32::MAX {
        f64::INFINITY
    } else {
        h2 * (f * f)
    }
}

/// [`two_nearest_pairs`] for the weight map of a 2-D `labels` of shape
/// `[n0, n1]`, one row at a time: `each(r, pairs)` receives the final pairs
/// of row `r`, last row first, while they are still in cache; nothing
/// holds the pairs of the whole array.
///
/// Only values up to the cut-off `R` are kept, on every pass: a value at
/// most `R` only ever comes from values at most `R` (distances only grow
/// along a pass), and the argument of the module doc holds among those
/// alone (the two labels that hide a label `L` at `y` are at least as close
/// to `y` as `L`, so within `R` too). So every `d2 <= R` that `need` asks
/// for is exact, with the `d1` beside it; elsewhere `d2` is `+∞`, and a
/// `d1` above `R` may be `+∞` too. `spacing` has two finite positive steps,
/// `max_distance` is `>= 0` or `+∞`; `n0 < u32::MAX`, so that no count of
/// steps along axis 0 reaches the `u32::MAX` that stands for none.
pub(crate) fn two_nearest_rows(
    labels: &[u32],
    [n0, n1]: [usize; 2],
    [h0, h]: [f64; 2],
    max_distance: f64,
    everywhere: bool,
    mut each: impl FnMut(usize, &[Pair]),
) {
    if n0 == 0 || n1 == 0 || labels.len() < n0 * n1 {
        return;
    }
    // As in `two_nearest_pairs`.
    let reach = max_distance * (1.0 + 1e-9);
    let cut = reach * reach;
    let h02 = h0 * h0;
    let steps = (reach / h).floor();
    let w = if steps < n1 as f64 {
        steps as usize
    } else {
        n1
    };
    // The forward states of each row, its four fields one after the other.
    let mut fore = crate::alloc::zeros_vec(4 * n0 * n1);
    let mut scan = Scan::new(n1);
    crate::kernel::dispatch::run(
        #[inline(always)]
        || {
            for (row, f) in labels.chunks_exact(n1).zip(fore.chunks_exact_mut(4 * n1)) {
                scan.step(row);
                let (a, rest) = f.split_at_mut(n1);
                let (b, rest) = rest.split_at_mut(n1);
                let (c, d) = rest.split_at_mut(n1);
                a.copy_from_slice(&scan.d1);
                b.copy_from_slice(&scan.d2);
                c.copy_from_slice(&scan.l1);
                d.copy_from_slice(&scan.l2);
            }
        },
    );
    let mut back = Scan::new(n1);
    let mut input = vec![Pair::NONE; n1];
    let mut scratch = Scratch::new(n1);
    let need = Need::Border { everywhere };
    let mut out = vec![Pair::NONE; n1];
    for (r, (row, f)) in labels
        .chunks_exact(n1)
        .zip(fore.chunks_exact(4 * n1))
        .enumerate()
        .take(n0)
        .rev()
    {
        let (fd1, rest) = f.split_at(n1);
        let (fd2, rest) = rest.split_at(n1);
        let (fl1, fl2) = rest.split_at(n1);
        crate::kernel::dispatch::run(
            #[inline(always)]
            || {
                back.step(row);
                // The merge of `merge`, on the fields, then `below`.
                for i in 0..n1 {
                    let (bd1, bd2, bl1, bl2) = (back.d1[i], back.d2[i], back.l1[i], back.l2[i]);
                    let first = fd1[i] <= bd1;
                    let (wd1, wd2) = if first { (fd1[i], fd2[i]) } else { (bd1, bd2) };
                    let (wl1, wl2) = if first { (fl1[i], fl2[i]) } else { (bl1, bl2) };
                    let (sd1, sd2) = if first { (bd1, bd2) } else { (fd1[i], fd2[i]) };
                    let (sl1, sl2) = if first { (bl1, bl2) } else { (fl1[i], fl2[i]) };
                    let distinct = sl1 != wl1;
                    let od = if distinct { sd1 } else { sd2 };
                    let ol = if distinct { sl1 } else { sl2 };
                    let own = wd2 <= od;
                    let (e1, e2) = (squared(wd1, h02), squared(if own { wd2 } else { od }, h02));
                    let (far1, far2) = (e1 > cut, e2 > cut);
                    let e2 = if far2 | far1 { f64::INFINITY } else { e2 };
                    let e1 = if far1 { f64::INFINITY } else { e1 };
                    let k1 = if far1 { 0 } else { wl1 };
                    let k2 = if far2 | far1 {
                        0
                    } else if own {
                        wl2
                    } else {
                        ol
                    };
                    input[i] = Pair {
                        d1: e1,
                        d2: e2,
                        l1: k1,
                        l2: k2,
                    };
                }
            },
        );
        line_pass(&input, &mut out, h, cut, w, need, &mut scratch);
        each(r, &out);
    }
}

/// Lanes of the unit-grid row pass: elements whose windows are searched
/// together, a whole number of 256-bit vectors of `u32`.
const LANES: usize = 16;

/// Elements of a band of rows whose backward scan states the unit-grid
/// sweep keeps at once (at least `2(w + 1)` rows): about 128 KiB.
const BAND_ELEMENTS: usize = 1 << 14;

/// The widest cut-off, in steps, that the unit-grid sweep takes: its
/// windows cost up to `2R + 1` columns per element where the envelopes of
/// [`two_nearest_rows`] cost a few operations whatever `R`; the two break
/// even at about 130 steps (σ ≈ 25 in the weight map), measured on sparse
/// masks.
const UNIT_MAX_STEPS: u32 = 128;

/// The cut-off of [`two_nearest_unit`] on the unit grid, in whole squared
/// steps, and the packing of its search keys.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct UnitCut {
    /// The largest squared distance kept: `⌊R²⌋`.
    cut: u32,
    /// The largest step whose square is at most `cut`: the window's
    /// half-width, and the reach of the column counts.
    w: usize,
    /// Bits below a key's value: they hold the offset in the window.
    shift: u32,
}

impl UnitCut {
    /// The cut-off of the sweep for `max_distance` (with the slack of
    /// [`two_nearest_pairs`]), or `None` beyond [`UNIT_MAX_STEPS`] steps
    /// (and for `+∞` or NaN).
    pub(crate) fn new(max_distance: f64) -> Option<Self> {
        let reach = max_distance * (1.0 + 1e-9);
        let cut = reach * reach;
        let limit = (UNIT_MAX_STEPS + 1) * (UNIT_MAX_STEPS + 1);
        // Also for NaN.
        if cut.is_nan() || cut >= f64::from(limit) {
            return None;
        }
        // A whole squared distance is at most `cut` when it is at most
        // its floor.
        let cut = cut.floor() as u32;
        let mut w = f64::from(cut).sqrt() as u32;
        while (w + 1) * (w + 1) <= cut {
            w += 1;
        }
        while w * w > cut {
            w -= 1;
        }
        let shift = u32::BITS - (2 * w).leading_zeros();
        // A key's value is below 2·(w + 1)²: a capped column value plus a
        // step within the window (w <= 128: 16 bits, and 9 for the step).
        let top = 2 * u64::from(w + 1) * u64::from(w + 1);
        if w > UNIT_MAX_STEPS || top << shift > u64::from(u32::MAX) {
            return None;
        }
        Some(UnitCut {
            cut,
            w: w as usize,
            shift,
        })
    }

    /// The largest squared distance kept: every [`Near`] has `d1 <= d2`
    /// and `d2` at most this.
    pub(crate) fn cut(&self) -> u32 {
        self.cut
    }
}

/// A background element (any element with `everywhere`) whose `d2` is
/// within the cut-off: its column and squared distances.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Near {
    pub(crate) x: usize,
    pub(crate) d1: u32,
    pub(crate) d2: u32,
}

/// Per-column scan states along axis 0 in whole steps capped at
/// `cap` (the nearest site and the nearest with another label, and the
/// label of the first): [`Scan`] without the second label, which no value
/// depends on. Capping commutes with every step (the selects depend on
/// labels only), so the counts are the exact ones capped.
struct UnitScan {
    d1: Vec<u16>,
    d2: Vec<u16>,
    l1: Vec<u32>,
}

impl UnitScan {
    fn new(n: usize, cap: u16) -> Self {
        UnitScan {
            d1: vec![cap; n],
            d2: vec![cap; n],
            l1: vec![0; n],
        }
    }

    /// Back to no site seen.
    fn reset(&mut self, cap: u16) {
        self.d1.fill(cap);
        self.d2.fill(cap);
        self.l1.fill(0);
    }

    #[inline(always)]
    fn step(&mut self, labels: &[u32], cap: u16) {
        let n = labels.len();
        let (d1, d2, l1) = (&mut self.d1[..n], &mut self.d2[..n], &mut self.l1[..n]);
        for i in 0..n {
            (d1[i], d2[i], l1[i]) = unit_step((d1[i], d2[i], l1[i]), labels[i], cap);
        }
    }

    /// [`UnitScan::step`] into row `q` of `self` (rows of `labels.len()`
    /// elements) from row `q + 1`, or from `below`'s first row when
    /// given: the backward scan writes each band row's state in place, with
    /// no copy.
    #[inline(always)]
    fn step_up(&mut self, q: usize, below: Option<&UnitScan>, labels: &[u32], cap: u16) {
        let n = labels.len();
        let at = (q + 1) * n;
        if at > self.l1.len() {
            return;
        }
        let (d1, next1) = self.d1.split_at_mut(at);
        let (d2, next2) = self.d2.split_at_mut(at);
        let (l1, next_l) = self.l1.split_at_mut(at);
        let (e1, e2, m1) = (&mut d1[q * n..], &mut d2[q * n..], &mut l1[q * n..]);
        let (s1, s2, sl) = match below {
            Some(b) => (&b.d1[..], &b.d2[..], &b.l1[..]),
            None => (&next1[..], &next2[..], &next_l[..]),
        };
        let (Some(s1), Some(s2), Some(sl)) = (s1.get(..n), s2.get(..n), sl.get(..n)) else {
            return;
        };
        for i in 0..n {
            (e1[i], e2[i], m1[i]) = unit_step((s1[i], s2[i], sl[i]), labels[i], cap);
        }
    }
}

/// `sites[y]` = the number of `g[..=y]` below `none`: a running count, a
/// vector of [`LANES`] at a time as an inclusive scan in four shifted adds
/// (one add per element in a chain was a twentieth of the U-Net map).
#[inline(always)]
fn count_sites(sites: &mut [u32], g: &[u32], none: u32) {
    let mut count = 0;
    let (whole, rest) = sites.as_chunks_mut::<LANES>();
    let (g_whole, g_rest) = g.as_chunks::<LANES>();
    for (s, g) in whole.iter_mut().zip(g_whole) {
        let mut x = [0u32; LANES];
        for i in 0..LANES {
            x[i] = u32::from(g[i] < none);
        }
        for k in [1, 2, 4, 8] {
            for i in (k..LANES).rev() {
                x[i] += x[i - k];
            }
        }
        for i in 0..LANES {
            s[i] = count + x[i];
        }
        count += x[LANES - 1];
    }
    for (s, &g) in rest.iter_mut().zip(g_rest) {
        count += u32::from(g < none);
        *s = count;
    }
}

/// One step of a column's capped counts `(d1, d2, l1)` onto an element of
/// label `label`.
#[inline(always)]
fn unit_step((d1, d2, l1): (u16, u16, u32), label: u32, cap: u16) -> (u16, u16, u32) {
    let site = label != 0;
    let new = site & (l1 != label);
    let up1 = (d1 + 1).min(cap);
    let up2 = (d2 + 1).min(cap);
    (
        if site { 0 } else { up1 },
        if new { up1 } else { up2 },
        if site { label } else { l1 },
    )
}

/// The column candidates of one row for the row pass, padded on both
/// sides so that every window is in bounds: `key` the best value shifted
/// for the search keys, `g1` and `l1` the best value and its label, `g2`
/// the best value of another label (`g1 <= g2`); `(w + 1)²` (the cap) for
/// none. `free` is all ones where the element wants a term (0 in the
/// padding); `sites[y]` counts the padded columns before `y` with a
/// candidate.
struct UnitRow {
    key: Vec<u32>,
    g1: Vec<u32>,
    g2: Vec<u32>,
    l1: Vec<u32>,
    free: Vec<u32>,
    sites: Vec<u32>,
}

/// A column of the row pass's window: its index `k` in the window, the
/// search key `s² << shift | k` and `s²`, for `s` steps from the centre.
#[derive(Clone, Copy)]
struct Tap {
    k: u32,
    key: u32,
    square: u32,
}

/// The constants of the row pass of [`two_nearest_unit`], and its scratch.
struct UnitPass {
    /// Half-width of the windows, the cut-off, the key shift, the cap.
    w: usize,
    cut: u32,
    shift: u32,
    none: u32,
    /// The window's columns from the centre out (`w`, `w - 1`, `w + 1`,
    /// ...), after the centre padded to a multiple of eight with copies
    /// of the centre, which change no minimum: the searches take them in
    /// groups of eight.
    centre: Tap,
    taps: Vec<Tap>,
    /// Each column's value of a label other than the block's.
    other: Vec<u32>,
}

/// [`two_nearest_rows`] on the unit grid, in whole numbers: `each(r, near)`
/// receives, for every row `r` (first row first), the elements that keep
/// the border term, in increasing column: every background element (every
/// element with `everywhere`) whose `d2 <= R²` (exact), with its `d1`.
///
/// Axis 0 as in [`two_nearest_rows`], with counts capped beyond the cut-off
/// (the backward scan a band of rows at a time, then the forward one merged
/// row by row). Along
/// the row, `d1` and its label `ℓ(x)` are the least key `(value, offset)`
/// over the window of the `2w + 1` columns within the cut-off, and `d2` the
/// least value over the window of each column's best pair whose label is not
/// `ℓ(x)`: a direct search, [`LANES`] elements at once with no branch, exact
/// since every `d <= R²` lies within the window (see the module doc for the
/// pairs). The window is searched from its centre out and left as soon as no
/// farther column can lower a value that matters; blocks of elements that
/// need no term (inside instances, or with no site in the window) are
/// skipped.
pub(crate) fn two_nearest_unit(
    labels: &[u32],
    [n0, n1]: [usize; 2],
    cut: UnitCut,
    everywhere: bool,
    mut each: impl FnMut(usize, &[Near]),
) {
    if n0 == 0 || n1 == 0 || labels.len() < n0 * n1 {
        return;
    }
    let UnitCut { cut, w, shift } = cut;
    // w <= 128: the cap and its square fit.
    let cap = (w + 1) as u16;
    let none = u32::from(cap) * u32::from(cap);
    let n = n0 * n1;
    let labels = &labels[..n];
    // The backward states of a band of rows at a time: a count capped at
    // `w + 1` only depends on the `w` rows below, so each band's scan
    // starts `w` rows below it, and the states stay in cache.
    let band = (BAND_ELEMENTS / n1).max(2 * (w + 1)).min(n0);
    let mut back = UnitScan::new(band * n1, cap);
    let mut scan = UnitScan::new(n1, cap);
    // `w` sentinels left of column 0, `w + LANES` right of the last.
    let len = n1 + 2 * w + LANES;
    let mut row = UnitRow {
        key: vec![none << shift; len],
        g1: vec![none; len],
        g2: vec![none; len],
        l1: vec![0; len],
        free: vec![0; len],
        sites: vec![0; len + 1],
    };
    // w <= 128: every column index and key fits in a u32.
    let centre = Tap {
        k: w as u32,
        key: w as u32,
        square: 0,
    };
    let mut taps = Vec::with_capacity(2 * w + 8);
    for s in 1..=w {
        let square = (s * s) as u32;
        for k in [w - s, w + s] {
            let key = (square << shift) | k as u32;
            let k = k as u32;
            taps.push(Tap { k, key, square });
        }
    }
    while !taps.len().is_multiple_of(8) {
        taps.push(centre);
    }
    let mut pass = UnitPass {
        w,
        cut,
        shift,
        none,
        centre,
        taps,
        other: vec![0; 2 * w + LANES],
    };
    let mut fore = UnitScan::new(n1, cap);
    let mut near = Vec::with_capacity(n1);
    for (r, labels_row) in labels.chunks_exact(n1).enumerate() {
        let at = (r % band) * n1;
        if at == 0 {
            let below = (r + band + w).min(n0);
            crate::kernel::dispatch::run(
                #[inline(always)]
                || {
                    scan.reset(cap);
                    let rows = &labels[r * n1..below * n1];
                    let inside = (below - r).min(band);
                    for row in rows[inside * n1..].chunks_exact(n1).rev() {
                        scan.step(row, cap);
                    }
                    for (q, row) in rows[..inside * n1].chunks_exact(n1).enumerate().rev() {
                        let from = (q + 1 == inside).then_some(&scan);
                        back.step_up(q, from, row, cap);
                    }
                },
            );
        }
        let (bd1, bd2, bl1) = (
            &back.d1[at..at + n1],
            &back.d2[at..at + n1],
            &back.l1[at..at + n1],
        );
        near.clear();
        crate::kernel::dispatch::run(
            #[inline(always)]
            || {
                fore.step(labels_row, cap);
                let (fd1, fd2, fl1) = (&fore.d1[..n1], &fore.d2[..n1], &fore.l1[..n1]);
                let key = &mut row.key[w..w + n1];
                let g1 = &mut row.g1[w..w + n1];
                let g2 = &mut row.g2[w..w + n1];
                let l1 = &mut row.l1[w..w + n1];
                let free = &mut row.free[w..w + n1];
                // `merge` on the fields: the nearer side's label (the
                // forward one on ties); for `d2` the nearer side's own
                // second, or the farther side's best when its label
                // differs, else the better of the two seconds.
                for i in 0..n1 {
                    let (f1, f2) = (u32::from(fd1[i]), u32::from(fd2[i]));
                    let (b1, b2) = (u32::from(bd1[i]), u32::from(bd2[i]));
                    let first = f1 <= b1;
                    let e1 = f1.min(b1);
                    let own = if first { f2 } else { b2 };
                    let e2 = if fl1[i] == bl1[i] {
                        f2.min(b2)
                    } else {
                        own.min(f1.max(b1))
                    };
                    g1[i] = e1 * e1;
                    key[i] = (e1 * e1) << shift;
                    g2[i] = e2 * e2;
                    l1[i] = if first { fl1[i] } else { bl1[i] };
                }
                let all = u32::from(everywhere).wrapping_neg();
                for (f, &l) in free.iter_mut().zip(labels_row) {
                    *f = all | u32::from(l == 0).wrapping_neg();
                }
            },
        );
        crate::kernel::dispatch::run(
            #[inline(always)]
            || count_sites(&mut row.sites[1..], &row.g1, none),
        );
        crate::kernel::dispatch::run(
            #[inline(always)]
            || pass.row(&row, n1, &mut near),
        );
        each(r, &near);
    }
}

impl UnitPass {
    /// The row pass of [`two_nearest_unit`] over one row's column
    /// candidates `row` (padded by `w` on the left), of `n1` columns, into
    /// `near`.
    #[inline(always)]
    fn row(&mut self, row: &UnitRow, n1: usize, near: &mut Vec<Near>) {
        // Slices, not the `Vec`s behind `row`: with those, LLVM loaded each
        // `Vec`'s pointer and length per lane of the label lookup, as two
        // more gathers.
        let (key, g1, g2, l1, frees, sites) = (
            &row.key[..],
            &row.g1[..],
            &row.g2[..],
            &row.l1[..],
            &row.free[..],
            &row.sites[..],
        );
        let (w, cut, shift, none) = (self.w, self.cut, self.shift, self.none);
        let mask = (1u32 << shift) - 1;
        let span = 2 * w + LANES;
        for block in (0..n1).step_by(LANES) {
            // The window of element block + i is the padded columns
            // block + i to block + i + 2w, centred on its own.
            let (Some(before), Some(after), Some(free)) = (
                lanes(sites, block),
                lanes(sites, block + 2 * w + 1),
                lanes(frees, block + w),
            ) else {
                continue;
            };
            // All ones on the lanes that want a term and have a site in
            // their window.
            let mut wanted = [0u32; LANES];
            for i in 0..LANES {
                wanted[i] = free[i] & u32::from(before[i] != after[i]).wrapping_neg();
            }
            if wanted == [0; LANES] {
                continue;
            }
            // The padding keeps every window in bounds.
            let window = (
                key.get(block..block + span),
                l1.get(block..block + span),
                g1.get(block..block + span),
                g2.get(block..block + span),
            );
            let (Some(key), Some(l1), Some(g1), Some(g2)) = window else {
                continue;
            };
            if one_label(l1, g1, g2, none, cut) {
                continue;
            }
            let mut best = [u32::MAX; LANES];
            self.search(
                &mut best,
                &wanted,
                shift,
                0,
                #[inline(always)]
                |best, tap| {
                    if let Some(keys) = tap_lanes(key, tap.k) {
                        for i in 0..LANES {
                            best[i] = best[i].min(keys[i] + tap.key);
                        }
                    }
                },
            );
            let mut label = [0u32; LANES];
            for i in 0..LANES {
                let keep = wanted[i] != 0 && (best[i] >> shift) <= cut;
                if keep {
                    let y = i + (best[i] & mask) as usize;
                    label[i] = l1.get(y).copied().unwrap_or(0);
                }
                wanted[i] = u32::from(keep).wrapping_neg();
            }
            if wanted == [0; LANES] {
                continue;
            }
            let mut best2 = [u32::MAX; LANES];
            // Mostly every wanted lane has the same nearest label: then
            // each column's value of another label is taken once for the
            // block. They do when the least and the largest label of the
            // wanted lanes agree: two reductions across the lanes (a
            // search for the first wanted lane and a compare against its
            // label compiled to a scalar loop that read the arrays back
            // from memory, a twentieth of the row pass).
            let (mut low, mut high) = (u32::MAX, 0);
            for i in 0..LANES {
                low = low.min(label[i] | !wanted[i]);
                high = high.max(label[i] & wanted[i]);
            }
            let common = high;
            if low == high {
                let mut other = std::mem::take(&mut self.other);
                let least = other_values(&mut other, [l1, g1, g2], common);
                let any = least < none;
                if any {
                    self.search(
                        &mut best2,
                        &wanted,
                        0,
                        least,
                        #[inline(always)]
                        |best2, tap| {
                            if let Some(v) = tap_lanes(&other, tap.k) {
                                for i in 0..LANES {
                                    best2[i] = best2[i].min(v[i] + tap.square);
                                }
                            }
                        },
                    );
                }
                self.other = other;
                if !any {
                    continue;
                }
            } else {
                self.search(
                    &mut best2,
                    &wanted,
                    0,
                    0,
                    #[inline(always)]
                    |best2, tap| {
                        let k = tap.k;
                        let square = tap.square;
                        if let (Some(l1), Some(g1), Some(g2)) =
                            (tap_lanes(l1, k), tap_lanes(g1, k), tap_lanes(g2, k))
                        {
                            for i in 0..LANES {
                                // The best value of a label other than
                                // `label[i]`: `g1`, or the larger `g2` when
                                // `l1` is that label (a mask and a max, which
                                // vectorise).
                                let same = u32::from(l1[i] == label[i]).wrapping_neg();
                                let v = g1[i].max(g2[i] & same);
                                best2[i] = best2[i].min(v + square);
                            }
                        }
                    },
                );
            }
            for i in 0..LANES {
                if wanted[i] != 0 && best2[i] <= cut {
                    near.push(Near {
                        x: block + i,
                        d1: best[i] >> shift,
                        d2: best2[i],
                    });
                }
            }
        }
    }

    /// Runs `tap` over the window's columns from the centre out, and stops
    /// once no farther column can lower a value that matters: a column `s`
    /// steps away adds `s²` to a value of at least `floor`, so when
    /// `floor + (s + 1)²` exceeds the value (`best >> shift`) of every
    /// wanted lane, or the cut-off, the rest only gives values that are not
    /// kept. Checked every fourth step: the check is a compare and a
    /// reduction across the lanes, and every other step it cost more than
    /// the taps it saved (U-Net map of 512² with 50 cells: 2.94–3.04 →
    /// 2.78–2.81 ms; 800 cells 4.64–4.71 → 4.32–4.48). Every eighth step
    /// was no faster.
    #[inline(always)]
    fn search(
        &self,
        best: &mut [u32; LANES],
        wanted: &[u32; LANES],
        shift: u32,
        floor: u32,
        mut tap: impl FnMut(&mut [u32; LANES], &Tap),
    ) {
        tap(best, &self.centre);
        for (c, eight) in self.taps.as_chunks::<8>().0.iter().enumerate() {
            for t in eight {
                tap(best, t);
            }
            // Columns up to s steps away are done.
            let s = 4 * c + 4;
            let next = ((s + 1) * (s + 1)) as u32 + floor;
            if next > self.cut {
                break;
            }
            let limit = next << shift;
            let mut low = true;
            for i in 0..LANES {
                low &= best[i] & wanted[i] < limit;
            }
            if low {
                break;
            }
        }
    }
}

/// The `LANES` values of `v` from `at`, when in bounds.
#[inline(always)]
fn lanes(v: &[u32], at: usize) -> Option<&[u32; LANES]> {
    v.get(at..at.checked_add(LANES)?)?.try_into().ok()
}

/// [`lanes`] at a tap's column: from a `u32` the end cannot overflow, so
/// the bounds check is one comparison, not `checked_add`'s three
/// instructions and a compare (with the taps in groups of eight, a tenth
/// fewer instructions for the whole 512² map with 50 cells).
#[inline(always)]
fn tap_lanes(v: &[u32], k: u32) -> Option<&[u32; LANES]> {
    let at = k as usize;
    v.get(at..at + LANES)?.try_into().ok()
}

/// Whether no element of a block has a second label within the cut-off,
/// from its windows' columns (`l1`, `g1`, `g2`, `none` where no site):
/// when every column's best is of one label `L` and every column's value
/// of another label exceeds `cut`, an element nearest to `L` has
/// `d2 > cut`, and one nearest to another label has `d1 > cut`.
///
/// A block of background far from all but one instance is skipped before
/// its `d1` search, which would run to the window's edge. On sparse images
/// that pays (512² with 50 cells, best of 14 processes: 2.12 → 1.96 ms);
/// dense ones pay for the check (800 cells 3.64 → 3.80 ms, the text scan
/// 1.21 → 1.27). Leaving the check early, or comparing every column with
/// one label taken from the window's centre, was slower on all three.
#[inline(always)]
fn one_label(l1: &[u32], g1: &[u32], g2: &[u32], none: u32, cut: u32) -> bool {
    let (mut low, mut high, mut second) = (u32::MAX, 0, u32::MAX);
    for ((&l, &a), &b) in l1.iter().zip(g1).zip(g2) {
        let site = u32::from(a < none).wrapping_neg();
        low = low.min(l | !site);
        high = high.max(l & site);
        second = second.min(b);
    }
    low >= high && second > cut
}

/// Each column's best value of a label other than `label` into `other`:
/// `g1`, or the larger `g2` where `l1` is `label`; returns the least.
#[inline(always)]
fn other_values(other: &mut [u32], [l1, g1, g2]: [&[u32]; 3], label: u32) -> u32 {
    let mut low = u32::MAX;
    for (((o, &l), &a), &b) in other.iter_mut().zip(l1).zip(g1).zip(g2) {
        let same = u32::from(l == label).wrapping_neg();
        *o = a.max(b & same);
        low = low.min(*o);
    }
    low
}

/// The two-best sweep of the row-major `labels` of `shape` (0: background):
/// the two best squared distances of every element, `d2` as `need` asks
/// on the last pass. Second distances above `max_distance` may be `+∞`
/// (then with label 0); every finite value is exact. `spacing` has one
/// finite positive step per axis; `max_distance` is `>= 0` or `+∞`.
pub(crate) fn two_nearest_pairs(
    labels: &[u32],
    shape: &[usize],
    spacing: &[f64],
    max_distance: f64,
    need: Need,
) -> Vec<Pair> {
    let mut data = vec![Pair::NONE; labels.len()];
    if data.is_empty() {
        return data;
    }
    if shape.is_empty() {
        // 0-d: one element, no axis to sweep.
        data[0] = Pair::from_label(labels[0]);
        return data;
    }
    // A hair of slack so that a distance equal to the cut-off is never lost
    // to rounding.
    let reach = max_distance * (1.0 + 1e-9);
    let cut = reach * reach;
    let inner: usize = shape[1..].iter().product();
    first_axis(labels, &mut data, shape[0], inner, spacing[0] * spacing[0]);
    let longest = shape[1..].iter().copied().max().unwrap_or(0);
    let mut scratch = Scratch::new(longest);
    let mut input = vec![Pair::NONE; longest];
    let last = (1..shape.len()).rev().find(|&a| shape[a] > 1);
    for axis in 1..shape.len() {
        let n = shape[axis];
        if n <= 1 {
            continue;
        }
        let h = spacing[axis];
        let steps = (reach / h).floor();
        let w = if steps < n as f64 { steps as usize } else { n };
        let need = if Some(axis) == last { need } else { Need::All };
        let input = &mut input[..n];
        for_each_line(&mut data, shape, axis, |line| {
            input.copy_from_slice(line);
            line_pass(input, line, h, cut, w, need, &mut scratch);
        });
    }
    data
}

#[cfg(test)]
mod tests {
    use super::{
        Near, Need, Pair, Scratch, UnitCut, first_axis, line_pass, two_nearest_rows,
        two_nearest_unit,
    };
    use proptest::prelude::*;

    /// The unit sweep takes cut-offs up to 128 steps; beyond, and for
    /// `+∞` or NaN, the caller takes the `f64` sweep.
    #[test]
    fn unit_cut_off_and_its_keys() {
        // The U-Net default R = 5·√(2·ln 10⁶) ≈ 26.28: R² ≈ 690.8.
        let cut = UnitCut::new(5.0 * (2.0 * 1e6_f64.ln()).sqrt()).expect("fits");
        assert_eq!((cut.cut, cut.w, cut.shift), (690, 26, 6));
        // A distance equal to the cut-off is kept (the slack).
        assert_eq!(UnitCut::new(3.0).map(|c| (c.cut, c.w)), Some((9, 3)));
        assert_eq!(UnitCut::new(0.0).map(|c| (c.cut, c.w)), Some((0, 0)));
        let large = UnitCut::new(128.5).expect("fits");
        assert_eq!((large.w, large.shift), (128, 9));
        assert!((2 * 129u64 * 129) << large.shift <= u64::from(u32::MAX));
        for max in [129.0, 1000.0, 1e9, f64::INFINITY, f64::NAN] {
            assert_eq!(UnitCut::new(max), None, "{max}");
        }
    }

    /// The two best distinct-label values of every `x` from `line`, by brute
    /// force.
    fn brute(line: &[Pair], h2: f64) -> Vec<(f64, f64)> {
        (0..line.len())
            .map(|x| {
                let mut per: Vec<(u32, f64)> = Vec::new();
                for (y, p) in line.iter().enumerate() {
                    let d = (x as f64 - y as f64).powi(2) * h2;
                    for (v, l) in [(p.d1, p.l1), (p.d2, p.l2)] {
                        if l == 0 {
                            continue;
                        }
                        match per.iter_mut().find(|(k, _)| *k == l) {
                            Some(e) => e.1 = e.1.min(v + d),
                            None => per.push((l, v + d)),
                        }
                    }
                }
                per.sort_by(|a, b| a.1.total_cmp(&b.1));
                let at = |i: usize| per.get(i).map_or(f64::INFINITY, |e| e.1);
                (at(0), at(1))
            })
            .collect()
    }

    /// Valid input pairs: distinct labels, `d1 <= d2`, `+∞` with label 0.
    fn pairs() -> impl Strategy<Value = Vec<Pair>> {
        let pair = (0u32..4, 0u32..4, 0.0f64..30.0, 0.0f64..30.0, 0u32..3).prop_map(
            |(l1, l2, a, b, kind)| {
                let (d1, d2) = if a <= b { (a, b) } else { (b, a) };
                // Integral values half of the time, as with unit spacing.
                let (d1, d2) = if kind == 0 {
                    (d1, d2)
                } else {
                    (d1.floor(), d2.floor())
                };
                match (l1, l2) {
                    (0, _) => Pair::NONE,
                    (l1, l2) if l2 == 0 || l2 == l1 => Pair {
                        d1,
                        d2: f64::INFINITY,
                        l1,
                        l2: 0,
                    },
                    (l1, l2) => Pair { d1, d2, l1, l2 },
                }
            },
        );
        // Long lines of few labels make long runs (the envelope path),
        // short ones the direct search.
        prop::collection::vec(pair, 1..60)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// The scans along axis 0 against brute force on each column, with
        /// labels that repeat along a column and rows up to 150 wide.
        #[test]
        fn first_axis_matches_brute_force(
            (n0, inner, labels) in (1usize..8, 1usize..150).prop_flat_map(|(n0, inner)| {
                (Just(n0), Just(inner), prop::collection::vec(
                    prop_oneof![3 => Just(0u32), 1 => 1u32..4], n0 * inner))
            }),
            h in 0.3f64..3.0,
        ) {
            let mut data = vec![Pair::NONE; n0 * inner];
            first_axis(&labels, &mut data, n0, inner, h * h);
            for c in 0..inner {
                for r in 0..n0 {
                    let mut per: Vec<(u32, f64)> = Vec::new();
                    for y in 0..n0 {
                        let l = labels[y * inner + c];
                        if l == 0 {
                            continue;
                        }
                        // As the scans round it: h²·steps².
                        let steps = r as f64 - y as f64;
                        let d = (h * h) * (steps * steps);
                        match per.iter_mut().find(|(k, _)| *k == l) {
                            Some(e) => e.1 = e.1.min(d),
                            None => per.push((l, d)),
                        }
                    }
                    per.sort_by(|a, b| a.1.total_cmp(&b.1));
                    let at = |i: usize| per.get(i).map_or(f64::INFINITY, |e| e.1);
                    let p = data[r * inner + c];
                    prop_assert_eq!((p.d1, p.d2), (at(0), at(1)), "row {} column {}", r, c);
                    if p.d2 < f64::INFINITY {
                        prop_assert!(p.l2 != p.l1 && p.l2 != 0);
                    }
                }
            }
        }

        /// The row-at-a-time sweep of the weight map against brute force
        /// over whole 2-D images: every `d2` within the cut-off that the
        /// map needs (and the `d1` beside it) exact, none beyond.
        #[test]
        fn rows_match_brute_force(
            (n0, n1, labels) in (1usize..12, 1usize..40).prop_flat_map(|(n0, n1)| {
                (Just(n0), Just(n1), prop::collection::vec(
                    prop_oneof![4 => Just(0u32), 1 => 1u32..5], n0 * n1))
            }),
            unit in any::<bool>(),
            h in (0.3f64..3.0, 0.3f64..3.0),
            max in prop_oneof![Just(f64::INFINITY), 0.5f64..12.0],
            everywhere in any::<bool>(),
        ) {
            let (h0, h1) = if unit { (1.0, 1.0) } else { h };
            let reach = max * (1.0 + 1e-9);
            let cut = reach * reach;
            let mut got = vec![Pair::NONE; n0 * n1];
            let mut seen = vec![false; n0];
            two_nearest_rows(&labels, [n0, n1], [h0, h1], max, everywhere, |r, p| {
                got[r * n1..(r + 1) * n1].copy_from_slice(p);
                seen[r] = true;
            });
            prop_assert!(seen.iter().all(|&s| s));
            for (x, (o, &own)) in got.iter().zip(&labels).enumerate() {
                let (r, c) = (x / n1, x % n1);
                let mut per: Vec<(u32, f64)> = Vec::new();
                for (y, &l) in labels.iter().enumerate() {
                    if l == 0 {
                        continue;
                    }
                    let (dr, dc) = (r as f64 - (y / n1) as f64, c as f64 - (y % n1) as f64);
                    let d = h0 * h0 * (dr * dr) + h1 * h1 * (dc * dc);
                    match per.iter_mut().find(|(k, _)| *k == l) {
                        Some(e) => e.1 = e.1.min(d),
                        None => per.push((l, d)),
                    }
                }
                per.sort_by(|a, b| a.1.total_cmp(&b.1));
                let at = |i: usize| per.get(i).map_or(f64::INFINITY, |e| e.1);
                let (e1, e2) = (at(0), at(1));
                let close = |a: f64, b: f64| a == b || (a - b).abs() <= 1e-12 * b.max(1.0);
                let wanted = e2 < f64::INFINITY && e2 <= cut && (everywhere || own == 0);
                if o.d2 < f64::INFINITY {
                    prop_assert!(wanted || (e2 - cut).abs() <= 1e-9 * cut, "d2 at {x}: {} unwanted ({e2})", o.d2);
                    prop_assert!(close(o.d2, e2), "d2 at {x}: {} vs {e2}", o.d2);
                    prop_assert!(close(o.d1, e1), "d1 at {x}: {} vs {e1}", o.d1);
                    if unit {
                        prop_assert!(o.d1 == e1 && o.d2 == e2);
                    }
                } else {
                    prop_assert!(!wanted || (e2 - cut).abs() <= 1e-9 * cut, "d2 at {x} missing: {e2}");
                }
            }
        }

        /// The unit-grid sweep against brute force over whole 2-D images,
        /// in whole numbers: exactly the elements that keep a term (`d2`
        /// within the cut-off, off the instances unless `everywhere`),
        /// with their exact `d1` and `d2`. Rows wider than a few blocks of
        /// lanes and cut-offs from below one step to past the image.
        #[test]
        fn unit_rows_match_brute_force(
            (n0, n1, labels) in (1usize..14, 1usize..90).prop_flat_map(|(n0, n1)| {
                (Just(n0), Just(n1), prop::collection::vec(
                    prop_oneof![6 => Just(0u32), 1 => 1u32..6], n0 * n1))
            }),
            max in prop_oneof![0.0f64..3.0, 3.0f64..40.0, 100.0f64..128.9],
            everywhere in any::<bool>(),
        ) {
            let cut = UnitCut::new(max).expect("keys fit");
            let reach = max * (1.0 + 1e-9);
            let limit = reach * reach;
            let mut got = Vec::new();
            let mut rows = Vec::new();
            two_nearest_unit(&labels, [n0, n1], cut, everywhere, |r, near| {
                rows.push(r);
                got.extend(near.iter().map(|p| (r, *p)));
            });
            prop_assert_eq!(rows, (0..n0).collect::<Vec<_>>());
            let mut expected = Vec::new();
            for (x, &own) in labels.iter().enumerate() {
                let (r, c) = (x / n1, x % n1);
                let mut per: Vec<(u32, u64)> = Vec::new();
                for (y, &l) in labels.iter().enumerate() {
                    if l == 0 {
                        continue;
                    }
                    let (dr, dc) = ((y / n1).abs_diff(r) as u64, (y % n1).abs_diff(c) as u64);
                    let d = dr * dr + dc * dc;
                    match per.iter_mut().find(|(k, _)| *k == l) {
                        Some(e) => e.1 = e.1.min(d),
                        None => per.push((l, d)),
                    }
                }
                per.sort_by_key(|e| e.1);
                if per.len() >= 2 && (per[1].1 as f64) <= limit && (everywhere || own == 0) {
                    let (d1, d2) = (per[0].1 as u32, per[1].1 as u32);
                    expected.push((r, Near { x: c, d1, d2 }));
                }
            }
            prop_assert_eq!(got, expected);
        }

        /// Both `d2` paths (direct search on short runs, envelope on long
        /// ones) and the windows bounded by neighbouring runs, against
        /// brute force: unit and random spacing, with and without a cut-off,
        /// and the weight map's last pass.
        #[test]
        fn line_pass_matches_brute_force(
            line in pairs(),
            unit in any::<bool>(),
            h in 0.3f64..3.0,
            max in prop_oneof![Just(f64::INFINITY), 0.5f64..8.0],
            mode in 0u8..3,
        ) {
            let h = if unit { 1.0 } else { h };
            let n = line.len();
            let reach = max * (1.0 + 1e-9);
            let cut = reach * reach;
            let steps = (reach / h).floor();
            let w = if steps < n as f64 { steps as usize } else { n };
            let need = match mode {
                0 => Need::All,
                1 => Need::Border { everywhere: false },
                _ => Need::Border { everywhere: true },
            };
            let mut out = vec![Pair::NONE; n];
            line_pass(&line, &mut out, h, cut, w, need, &mut Scratch::new(n));
            for (x, (o, (e1, e2))) in out.iter().zip(brute(&line, h * h)).enumerate() {
                prop_assert!((o.d1 - e1).abs() <= 1e-12 * e1.max(1.0) || o.d1 == e1, "d1 at {x}: {} vs {e1}", o.d1);
                let wanted = e2 < f64::INFINITY && e2 <= cut && (need != (Need::Border { everywhere: false }) || e1 > 0.0);
                if o.d2 < f64::INFINITY {
                    prop_assert!((o.d2 - e2).abs() <= 1e-12 * e2.max(1.0), "d2 at {x}: {} vs {e2}", o.d2);
                    if need == Need::All {
                        prop_assert!(o.l2 != o.l1 && o.l2 != 0);
                    }
                } else {
                    prop_assert!(!wanted || (e2 - cut).abs() <= 1e-9 * cut, "d2 at {x} missing: {e2}");
                }
                if unit {
                    // Integral inputs with unit spacing: exact.
                    if line.iter().all(|p| p.d1.fract() == 0.0 && (p.d2.fract() == 0.0 || p.d2.is_infinite())) {
                        prop_assert!(o.d1 == e1);
                        prop_assert!(o.d2 == e2 || o.d2 == f64::INFINITY);
                    }
                }
            }
        }
    }
}
