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
//!
//! Masks of up to three axes take the same scan a run of foreground at a
//! time ([`label_runs`]): a run joins the runs it touches in the rows
//! before it and opens a label when it touches none, which keeps both the
//! smallest-root rule and the numbering; more axes take the scan element
//! by element ([`label_any`]).

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
                if let Some(first) = step.iter().position(|&s| s != 0)
                    && step[first] == -1
                {
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
    // The runs keep their ends as `u32`.
    let fits = shape.last().is_some_and(|&n| n <= u32::MAX as usize);
    match *shape.as_slice() {
        [n] if fits => label_runs(mask, [1, 1, n], connectivity, out),
        [n1, n2] if fits => label_runs(mask, [1, n1, n2], connectivity, out),
        [n0, n1, n2] if fits => label_runs(mask, [n0, n1, n2], connectivity, out),
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

/// A run of foreground in a row: `[start, end)` and its provisional label
/// (rows of at most `u32::MAX` elements: [`label_in_place`]).
type Run = (u32, u32, u32);

/// [`label_in_place`] for masks of up to three axes (`[n0, n1, n2]`, the
/// leading axes 1 for fewer), a run of foreground at a time: each run of a
/// row joins the runs it touches in the rows before it that hold backward
/// neighbours (the row above, and with a plane before it the rows a plane
/// back: the three around this one with full connectivity, the one
/// straight back with face connectivity), and keeps the union's label; at
/// the end each run is filled with its component's number. A run above,
/// `[a, b)`, touches `[s, e)`
/// when they overlap, or with full connectivity also when one ends just
/// before the other starts (diagonal neighbours). Each row's runs are
/// sorted, so the touching runs of each neighbour row are found by walking
/// the lists in step. Per element this is only the scan for the runs' ends
/// ([`next`]) and the fill; the unions are per pair of touching runs.
///
/// Provisional labels open in the order of the runs' starts. The run of a
/// component's first element starts there and touches nothing labelled, so
/// it opens the component's smallest label, and [`number_roots`] numbers
/// the components by their first elements, as the plain scan
/// ([`label_any`]) does.
fn label_runs(
    mask: &[bool],
    [n0, n1, n2]: [usize; 3],
    connectivity: Connectivity,
    out: &mut [u32],
) -> usize {
    let full = connectivity == Connectivity::Full;
    let reach = usize::from(full);
    let mut parent: Vec<u32> = vec![0];
    // Every row's runs, row after row: row `r`'s are
    // `all[starts[r]..starts[r + 1]]`. They serve the rows after, and the
    // relabelling, which then rewrites the runs, not every element. The
    // cost is 12 bytes a run while the call lasts: at most 6 bytes an
    // element (alternate elements set), 3 on a random mask of density 0.5,
    // next to nothing on masks of blobs.
    let mut all: Vec<Run> = Vec::new();
    let mut starts = Vec::with_capacity(n0 * n1 + 1);
    starts.push(0);
    // This row's runs.
    let mut runs: Vec<Run> = Vec::new();
    for z in 0..n0 {
        for y in 0..n1 {
            let r = z * n1 + y;
            let row = &mask[r * n2..(r + 1) * n2];
            let row_runs = |r: usize| &all[starts[r]..starts[r + 1]];
            // The row above, and the rows a plane back that hold
            // neighbours: `y - 1 + dy` for `dy` in 0..3.
            let above = if y > 0 { row_runs(r - 1) } else { &[] };
            let back = |dy: usize| {
                if z == 0 || y + dy == 0 || y + dy > n1 {
                    &[][..]
                } else {
                    row_runs(r - n1 + dy - 1)
                }
            };
            let neighbours: [&[Run]; 4] = if full {
                [above, back(0), back(1), back(2)]
            } else {
                [above, back(1), &[], &[]]
            };
            let mut cursors = [0; 4];
            runs.clear();
            let mut c = 0;
            while c < n2 {
                let s = next(row, c, true);
                if s == n2 {
                    break;
                }
                let e = next(row, s, false);
                c = e;
                let mut root = 0;
                for (list, k) in neighbours.iter().zip(&mut cursors) {
                    root = join_touching(&mut parent, root, list, k, [s, e], reach);
                }
                if root == 0 {
                    root = open(&mut parent);
                }
                runs.push((s as u32, e as u32, root));
            }
            all.extend_from_slice(&runs);
            starts.push(all.len());
        }
    }
    let count = number_roots(&mut parent);
    for (out, window) in out.chunks_exact_mut(n2).zip(starts.windows(2)) {
        for &(s, e, l) in &all[window[0]..window[1]] {
            out[s as usize..e as usize].fill(parent[l as usize]);
        }
    }
    count
}

/// Joins into `root` (0: none yet) the runs of `runs` (one row's, sorted)
/// that touch the run `[s, e)` with diagonal `reach` (1 or 0), starting at
/// the cursor `k`, which moves on to the last of them: the next run of the
/// row, which starts after `e`, can touch none before it. Returns the root.
#[inline]
fn join_touching(
    parent: &mut [u32],
    mut root: u32,
    runs: &[Run],
    k: &mut usize,
    [s, e]: [usize; 2],
    reach: usize,
) -> u32 {
    while runs
        .get(*k)
        .is_some_and(|&(_, b, _)| b as usize + reach <= s)
    {
        *k += 1;
    }
    let mut j = *k;
    while let Some(&(a, _, l)) = runs.get(j) {
        if a as usize >= e + reach {
            break;
        }
        root = join(parent, root, l);
        j += 1;
    }
    *k = j.saturating_sub(1).max(*k);
    root
}

/// Numbers the roots of `parent` `1..=n` in increasing order (the order of
/// the components' first elements) and rewrites `out` with them; returns n.
fn relabel(parent: &mut [u32], out: &mut [u32]) -> usize {
    let count = number_roots(parent);
    for l in out.iter_mut() {
        *l = parent[*l as usize];
    }
    count
}

/// Rewrites `parent` to map every provisional label to its component's
/// number, `1..=n` for the roots in increasing order; returns n.
fn number_roots(parent: &mut [u32]) -> usize {
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
    count as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The runs against the union with every neighbour, on random masks of
    /// every density, both connectivities, and shapes of one to three
    /// axes with short and long rows (runs that touch the rows' ends, rows
    /// of fewer than eight elements and of more).
    #[test]
    fn runs_match_the_plain_scan() {
        let mut rng = crate::test_rng::Xorshift(0x9e37_79b9_7f4a_7c15);
        let mut next = move || rng.uniform();
        let shapes: [&[usize]; 12] = [
            &[7],
            &[37],
            &[2, 2],
            &[3, 7],
            &[7, 3],
            &[9, 19],
            &[17, 5],
            &[2, 2, 2],
            &[3, 4, 5],
            &[4, 3, 17],
            &[5, 5, 5],
            &[6, 2, 9],
        ];
        for shape in shapes {
            let n: usize = shape.iter().product();
            let mut padded = [1; 3];
            padded[3 - shape.len()..].copy_from_slice(shape);
            for connectivity in [Connectivity::Full, Connectivity::Face] {
                for density in [0.1, 0.3, 0.5, 0.7, 0.9] {
                    for _ in 0..30 {
                        let mask: Vec<bool> = (0..n).map(|_| next() < density).collect();
                        let mut runs = vec![0; n];
                        let mut plain = vec![0; n];
                        let count = label_runs(&mask, padded, connectivity, &mut runs);
                        let expected = label_any(&mask, shape, connectivity, &mut plain);
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
}
