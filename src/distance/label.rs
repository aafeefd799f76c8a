//! Connected-component labelling by one raster scan with union-find.
//!
//! The scan visits the elements in row-major order and looks only at the
//! neighbours already visited (those whose flat offset is negative). A
//! foreground element with no labelled backward neighbour opens a provisional
//! label; otherwise it joins the smallest root among its neighbours, and the
//! other roots are merged into it. Roots are always the smallest provisional
//! label of their set, so each set's root is the label opened at the
//! component's first element in row-major order; numbering the roots in
//! increasing order therefore numbers components as SciPy does.

use super::Connectivity;

/// A backward neighbour: its flat offset and the borders it must avoid.
struct Offset {
    /// How far back it lies in the row-major buffer.
    back: usize,
    /// Axes (bit per axis) on which the neighbour steps down: the element
    /// must not sit at index 0 there.
    down: u64,
    /// Axes on which it steps up: the element must not sit at the last index.
    up: u64,
}

/// The backward neighbours of `shape` (every axis of length >= 2).
fn backward_offsets(shape: &[usize], connectivity: Connectivity) -> Vec<Offset> {
    let d = shape.len();
    let mut strides = vec![1usize; d];
    for a in (0..d.saturating_sub(1)).rev() {
        strides[a] = strides[a + 1] * shape[a + 1];
    }
    let mut offsets = Vec::new();
    match connectivity {
        Connectivity::Face => {
            for (a, &stride) in strides.iter().enumerate() {
                offsets.push(Offset {
                    back: stride,
                    down: 1 << a,
                    up: 0,
                });
            }
        }
        Connectivity::Full => {
            // Every step in {-1, 0, 1}^d whose first non-zero entry is -1.
            let mut step = vec![-1i8; d];
            loop {
                if let Some(first) = step.iter().position(|&s| s != 0) {
                    if step[first] == -1 {
                        let (mut back, mut down, mut up) = (0isize, 0u64, 0u64);
                        for (a, (&s, &stride)) in step.iter().zip(&strides).enumerate() {
                            back -= s as isize * stride as isize;
                            match s {
                                -1 => down |= 1 << a,
                                1 => up |= 1 << a,
                                _ => {}
                            }
                        }
                        offsets.push(Offset {
                            back: back.unsigned_abs(),
                            down,
                            up,
                        });
                    }
                }
                // Next step in lexicographic order.
                let mut a = d;
                loop {
                    if a == 0 {
                        return offsets;
                    }
                    a -= 1;
                    if step[a] < 1 {
                        step[a] += 1;
                        break;
                    }
                    step[a] = -1;
                }
            }
        }
    }
    offsets
}

/// Finds the root of `x`, halving the path on the way.
#[inline]
fn find(parent: &mut [u32], mut x: u32) -> u32 {
    while parent[x as usize] != x {
        let up = parent[parent[x as usize] as usize];
        parent[x as usize] = up;
        x = up;
    }
    x
}

/// Labels `mask` (row-major, of `shape`) into `out` (zeroed, same length);
/// returns the number of components.
pub(crate) fn label_in_place(
    mask: &[bool],
    shape: &[usize],
    connectivity: Connectivity,
    out: &mut [u32],
) -> usize {
    if mask.is_empty() || mask.len() != out.len() {
        return 0;
    }
    // Axes of length 1 have no neighbours; dropping them keeps the number of
    // offsets at 3^d' - 1 for the d' axes that matter (d' <= 63 since the
    // element count fits in an isize).
    let shape: Vec<usize> = shape.iter().copied().filter(|&n| n > 1).collect();
    match (shape.as_slice(), connectivity) {
        (&[rows, cols], _) => label_2d(mask, rows, cols, connectivity, out),
        (&[n0, n1, n2], Connectivity::Full) => label_3d_full(mask, [n0, n1, n2], out),
        _ => label_any(mask, &shape, connectivity, out),
    }
}

/// [`label_in_place`] for any shape (axes of length 1 already dropped) and
/// connectivity: the union with every labelled backward neighbour.
fn label_any(mask: &[bool], shape: &[usize], connectivity: Connectivity, out: &mut [u32]) -> usize {
    let offsets = backward_offsets(shape, connectivity);
    let d = shape.len();
    let row_len = shape.last().copied().unwrap_or(1);
    let last_bit = if d > 0 { 1u64 << (d - 1) } else { 0 };

    // parent[0] is the background; provisional labels start at 1. A label
    // count above u32::MAX - 1 needs more than 4 G foreground elements; the
    // counter saturates there rather than wrap (documented limitation).
    let mut parent: Vec<u32> = vec![0];
    let mut index = vec![0usize; d.saturating_sub(1)];
    for row in 0..mask.len() / row_len {
        // Borders of this row on the leading axes.
        let (mut low, mut high) = (0u64, 0u64);
        for (a, &i) in index.iter().enumerate() {
            if i == 0 {
                low |= 1 << a;
            }
            if i + 1 == shape[a] {
                high |= 1 << a;
            }
        }
        let base = row * row_len;
        for j in 0..row_len {
            let flat = base + j;
            if !mask[flat] {
                continue;
            }
            let (mut lo, mut hi) = (low, high);
            if j == 0 {
                lo |= last_bit;
            }
            if j + 1 == row_len {
                hi |= last_bit;
            }
            let mut root = 0u32;
            for off in &offsets {
                if off.down & lo != 0 || off.up & hi != 0 {
                    continue;
                }
                let l = out[flat - off.back];
                if l != 0 {
                    root = join(&mut parent, root, l);
                }
            }
            if root == 0 {
                root = open(&mut parent);
            }
            out[flat] = root;
        }
        // Advance the row index over the leading axes.
        for a in (0..index.len()).rev() {
            index[a] += 1;
            if index[a] < shape[a] {
                break;
            }
            index[a] = 0;
        }
    }
    relabel(&mut parent, out)
}

/// Joins the set of `l` into that of `root` (0: none yet) and returns the
/// root of the union: the smaller of the two, so the root stays the label
/// opened first.
#[inline]
fn join(parent: &mut [u32], root: u32, l: u32) -> u32 {
    let r = find(parent, l);
    if root == 0 || r == root {
        r
    } else {
        let (keep, drop) = if r < root { (r, root) } else { (root, r) };
        parent[drop as usize] = keep;
        keep
    }
}

/// Opens a new provisional label (saturating at `u32::MAX`, see
/// [`label_in_place`]).
#[inline]
fn open(parent: &mut Vec<u32>) -> u32 {
    let root = u32::try_from(parent.len()).unwrap_or(u32::MAX);
    if (root as usize) == parent.len() {
        parent.push(root);
    }
    root
}

/// The index of the first element of `row` from `from` on that is `value`,
/// else `row.len()`: eight elements at a time, as the bytes of a `u64`.
#[inline]
fn next(row: &[bool], from: usize, value: bool) -> usize {
    // Each byte of a word is 0 or 1; after the xor, nonzero where the
    // element is `value`.
    let flip = if value { 0 } else { 0x0101_0101_0101_0101_u64 };
    let rest = row.get(from..).unwrap_or_default();
    let mut words = rest.chunks_exact(8);
    let mut at = from;
    for word in &mut words {
        let bytes: [u8; 8] = std::array::from_fn(|i| u8::from(word[i]));
        let hits = u64::from_le_bytes(bytes) ^ flip;
        if hits != 0 {
            return at + (hits.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    let tail = words.remainder();
    tail.iter()
        .position(|&m| m == value)
        .map_or(row.len(), |i| at + i)
}

/// [`label_in_place`] for 2-D masks, a run of foreground at a time: each
/// run of a row joins the runs of the row above that it touches (those
/// that overlap it, or with full connectivity also those that end just
/// before it or start just after it), and its elements take the label of
/// the union with one fill. Both rows' runs are sorted, so the touching
/// runs above are found by walking the two lists in step. Per element this
/// is only the scan for the runs' ends and the fill; the unions are per
/// pair of touching runs, not per element. Provisional labels open in the
/// order of the runs' starts, so the smallest label of a component is the
/// one opened at its first element, and [`relabel`] numbers the
/// components by their first elements, as the plain scan does.
fn label_2d(
    mask: &[bool],
    rows: usize,
    cols: usize,
    connectivity: Connectivity,
    out: &mut [u32],
) -> usize {
    // A run above, [a, b), touches the run [s, e) when a < e + reach and
    // s < b + reach.
    let reach = usize::from(connectivity == Connectivity::Full);
    let mut parent: Vec<u32> = vec![0];
    // The runs of the row above and of this row: (start, end, label).
    let (mut above, mut here): (Vec<(usize, usize, u32)>, Vec<_>) = (Vec::new(), Vec::new());
    for (row, out) in mask
        .chunks_exact(cols)
        .zip(out.chunks_exact_mut(cols))
        .take(rows)
    {
        here.clear();
        // The first run above that may touch this row's next run.
        let mut k = 0;
        let mut c = 0;
        while c < cols {
            let s = next(row, c, true);
            if s == cols {
                break;
            }
            let e = next(row, s, false);
            c = e;
            while k < above.len() && above[k].1 + reach <= s {
                k += 1;
            }
            let mut root = 0;
            let mut j = k;
            while let Some(&(a, _, l)) = above.get(j) {
                if a >= e + reach {
                    break;
                }
                root = join(&mut parent, root, l);
                j += 1;
            }
            // The last run above that touched this one may touch the next.
            k = j.saturating_sub(1).max(k);
            if root == 0 {
                root = open(&mut parent);
            }
            out[s..e].fill(root);
            here.push((s, e, root));
        }
        std::mem::swap(&mut above, &mut here);
    }
    relabel(&mut parent, out)
}

/// [`label_in_place`] for 3-D masks under full (26-) connectivity, by a
/// decision tree in the manner of Wu, Otoo and Suzuki's for 2-D (2005),
/// which this crate's 2-D path used before it labelled runs. An element's 13
/// backward neighbours are all neighbours of the one a plane back, `P`:
/// when `P` is foreground they are already in its set, and the element
/// takes its label with no union. Otherwise the one a row back, `N`,
/// neighbours all of them but the row a plane back and a row ahead, whose
/// middle element neighbours its two ends: so after `N`, one union, or
/// two. With neither, the remaining 11 neighbours are joined one by one.
/// (Every foreground element is in the set of each of its foreground
/// backward neighbours once it is labelled, which is what makes the
/// shortcuts exact.) On a random mask of density 0.5, `P` or `N` is
/// foreground for three elements in four.
fn label_3d_full(mask: &[bool], [n0, n1, n2]: [usize; 3], out: &mut [u32]) -> usize {
    // The 13 backward neighbours (dz, dy, dx) but `P` = (-1, 0, 0) and
    // `N` = (0, -1, 0).
    const OTHERS_3D: [(isize, isize, isize); 11] = [
        (-1, -1, -1),
        (-1, -1, 0),
        (-1, -1, 1),
        (-1, 0, -1),
        (-1, 0, 1),
        (-1, 1, -1),
        (-1, 1, 0),
        (-1, 1, 1),
        (0, -1, -1),
        (0, -1, 1),
        (0, 0, -1),
    ];
    let plane = n1 * n2;
    let mut parent: Vec<u32> = vec![0];
    for z in 0..n0 {
        for y in 0..n1 {
            let base = (z * n1 + y) * n2;
            for x in 0..n2 {
                let flat = base + x;
                if !mask[flat] {
                    continue;
                }
                let p = if z > 0 { out[flat - plane] } else { 0 };
                if p != 0 {
                    out[flat] = p;
                    continue;
                }
                let n = if y > 0 { out[flat - n2] } else { 0 };
                let mut root = 0;
                if n != 0 {
                    root = find(&mut parent, n);
                    if z > 0 && y + 1 < n1 {
                        // The row a plane back and a row ahead.
                        let ahead = flat - plane + n2;
                        let middle = out[ahead];
                        if middle != 0 {
                            root = join(&mut parent, root, middle);
                        } else {
                            if x > 0 && out[ahead - 1] != 0 {
                                root = join(&mut parent, root, out[ahead - 1]);
                            }
                            if x + 1 < n2 && out[ahead + 1] != 0 {
                                root = join(&mut parent, root, out[ahead + 1]);
                            }
                        }
                    }
                } else {
                    for (dz, dy, dx) in OTHERS_3D {
                        let inside = (dz == 0 || z > 0)
                            && (dy >= 0 || y > 0)
                            && (dy <= 0 || y + 1 < n1)
                            && (dx >= 0 || x > 0)
                            && (dx <= 0 || x + 1 < n2);
                        if !inside {
                            continue;
                        }
                        // Positive for a backward neighbour; a plane fits
                        // in an isize, as the whole buffer does.
                        let back = -(dz * plane as isize + dy * n2 as isize + dx);
                        let l = out[flat - back.unsigned_abs()];
                        if l != 0 {
                            root = join(&mut parent, root, l);
                        }
                    }
                }
                if root == 0 {
                    root = open(&mut parent);
                }
                out[flat] = root;
            }
        }
    }
    relabel(&mut parent, out)
}

/// Numbers the roots of `parent` `1..=n` in increasing order (the order of
/// the components' first elements) and rewrites `out` with them; returns n.
fn relabel(parent: &mut [u32], out: &mut [u32]) -> usize {
    let mut count = 0u32;
    for p in 1..parent.len() {
        let up = parent[p];
        parent[p] = if up as usize == p {
            count += 1;
            count
        } else {
            // Parents are smaller than their children, so parent[up] was
            // already rewritten to the final label of the common root.
            parent[up as usize]
        };
    }
    for l in out.iter_mut() {
        *l = parent[*l as usize];
    }
    count as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 2-D runs against the union with every neighbour, on random
    /// masks of every density, both connectivities, and shapes with short
    /// and long rows (runs that touch the row's ends included).
    #[test]
    fn runs_2d_match_the_plain_scan() {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        for shape in [[2, 2], [3, 7], [7, 3], [9, 9], [2, 31], [17, 5]] {
            let n: usize = shape.iter().product();
            for connectivity in [Connectivity::Full, Connectivity::Face] {
                for density in [0.1, 0.3, 0.5, 0.7, 0.9] {
                    for _ in 0..40 {
                        let mask: Vec<bool> = (0..n).map(|_| next() < density).collect();
                        let mut runs = vec![0; n];
                        let mut plain = vec![0; n];
                        let count = label_2d(&mask, shape[0], shape[1], connectivity, &mut runs);
                        let expected = label_any(&mask, &shape, connectivity, &mut plain);
                        assert_eq!(
                            (count, &runs),
                            (expected, &plain),
                            "{shape:?}, {connectivity:?}, {mask:?}"
                        );
                    }
                }
            }
        }
    }

    /// The 3-D decision tree against the union with every neighbour, on
    /// random masks of every density and shapes with short and long axes.
    #[test]
    fn decision_tree_3d_matches_the_plain_scan() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        for shape in [
            [2, 2, 2],
            [3, 4, 5],
            [4, 3, 6],
            [5, 5, 5],
            [2, 7, 3],
            [6, 2, 9],
        ] {
            let n: usize = shape.iter().product();
            for density in [0.1, 0.3, 0.5, 0.7, 0.9] {
                for _ in 0..40 {
                    let mask: Vec<bool> = (0..n).map(|_| next() < density).collect();
                    let mut tree = vec![0; n];
                    let mut plain = vec![0; n];
                    let count = label_3d_full(&mask, shape, &mut tree);
                    let expected = label_any(&mask, &shape, Connectivity::Full, &mut plain);
                    assert_eq!((count, &tree), (expected, &plain), "{shape:?}, {mask:?}");
                }
            }
        }
    }
}
