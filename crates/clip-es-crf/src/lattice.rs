//! Permutohedral lattice Gaussian filtering (Adams, Baek and Davis, "Fast High-Dimensional
//! Filtering Using the Permutohedral Lattice", Eurographics 2010), in the variant of
//! Kraehenbuehl's densecrf (`permutohedral.cpp`, the SSE build that pydensecrf compiles on x86-64).
//!
//! The filter approximates `out_i = sum_j exp(-|f_i - f_j|^2 / 2) in_j` (unnormalised, the point
//! itself included) in three steps: *splat* each point's values onto the d+1 vertices of the
//! enclosing simplex with barycentric weights, *blur* the lattice with the kernel [1/2, 1, 1/2]
//! along each of its d+1 axes, and *slice* back with the same weights.
//!
//! Every floating-point operation is done in single precision, in the order densecrf does it, so
//! that results agree bit for bit with pydensecrf built for SSE2 (the default x86-64 build):
//! - the elevation, rounding (to nearest, ties to even: `cvtps2dq`), rank and barycentric
//!   computations follow the SSE `init`, lane by lane;
//! - densecrf processes points in blocks of four and pads the last block with zero feature
//!   vectors, whose simplex vertices are inserted into the lattice too (they receive no values
//!   but do relay values during the blur); this is reproduced;
//! - slicing for one or two values per point uses `((w * v) * alpha)` (densecrf's `seqCompute`),
//!   for more values `(w * alpha) * v` (its `sseCompute`).
//!
//! The vertex numbering differs from densecrf's (another hash table), which does not change any
//! value: every vertex accumulates its splats in point order and blurs independently.

use crate::CrfError;

/// Sentinel for an empty hash slot.
const EMPTY: u32 = u32::MAX;

/// Open-addressing hash table from lattice keys (the first `d` integer coordinates of a vertex;
/// the last one is implied since they sum to zero) to dense vertex numbers.
struct VertexTable {
    dim: usize,
    /// Keys of the vertices, `dim` per vertex, in insertion order.
    keys: Vec<i16>,
    /// Slots holding vertex numbers or `EMPTY`; its length is a power of two.
    slots: Vec<u32>,
    shift: u32,
}

impl VertexTable {
    fn with_capacity(dim: usize, expected: usize) -> Self {
        let cap = (expected.max(8) * 2).next_power_of_two();
        VertexTable {
            dim,
            keys: Vec::with_capacity(expected * dim),
            slots: vec![EMPTY; cap],
            shift: 64 - cap.trailing_zeros(),
        }
    }

    fn len(&self) -> usize {
        self.keys.len() / self.dim.max(1)
    }

    fn key(&self, vertex: usize) -> &[i16] {
        &self.keys[vertex * self.dim..(vertex + 1) * self.dim]
    }

    #[inline]
    fn slot_of(&self, key: &[i16]) -> usize {
        // Multiplicative (Fibonacci) hashing; the top bits index the table.
        let mut h: u64 = 0;
        for &k in key {
            h = (h ^ (k as u16 as u64)).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(5);
        }
        (h.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.shift) as usize
    }

    #[inline]
    fn find(&self, key: &[i16]) -> Option<u32> {
        let mask = self.slots.len() - 1;
        let mut s = self.slot_of(key);
        loop {
            let e = self.slots[s];
            if e == EMPTY {
                return None;
            }
            if self.key(e as usize) == key {
                return Some(e);
            }
            s = (s + 1) & mask;
        }
    }

    #[inline]
    fn find_or_insert(&mut self, key: &[i16]) -> u32 {
        if 2 * (self.len() + 1) > self.slots.len() {
            self.grow();
        }
        let mask = self.slots.len() - 1;
        let mut s = self.slot_of(key);
        loop {
            let e = self.slots[s];
            if e == EMPTY {
                let v = self.len() as u32;
                self.keys.extend_from_slice(key);
                self.slots[s] = v;
                return v;
            }
            if self.key(e as usize) == key {
                return e;
            }
            s = (s + 1) & mask;
        }
    }

    fn grow(&mut self) {
        let cap = self.slots.len() * 2;
        self.slots = vec![EMPTY; cap];
        self.shift = 64 - cap.trailing_zeros();
        let mask = cap - 1;
        for v in 0..self.len() {
            let mut s = self.slot_of(self.key(v));
            while self.slots[s] != EMPTY {
                s = (s + 1) & mask;
            }
            self.slots[s] = v as u32;
        }
    }
}

/// A permutohedral lattice built over `n` points with `d`-dimensional features.
#[derive(Clone, Debug)]
pub struct Permutohedral {
    dim: usize,
    n_points: usize,
    n_vertices: usize,
    /// For point `i` and simplex corner `r`: `offsets[i*(d+1)+r]` is the vertex number plus one
    /// (row 0 of the value buffers is an always-zero row standing for "no vertex").
    offsets: Vec<u32>,
    /// Barycentric weight of each point on each corner of its simplex.
    weights: Vec<f32>,
    /// For axis `j` and vertex `v`: `neighbors[j*m+v]` = (vertex-1 neighbour, vertex+1
    /// neighbour), each plus one, 0 where the neighbour is not in the lattice.
    neighbors: Vec<[u32; 2]>,
}

/// Per-point lattice embedding computed exactly as densecrf's SSE lanes do.
struct Embedder {
    d: usize,
    scale: Vec<f32>,
    inv_dp1: f32,
    dp1: f32,
    canonical: Vec<i16>,
    elevated: Vec<f32>,
    rem0: Vec<f32>,
    rank: Vec<f32>,
    bary: Vec<f32>,
    key: Vec<i16>,
}

impl Embedder {
    fn new(d: usize) -> Self {
        // densecrf: `float inv_std_dev = sqrt(2.0 / 3.0)*(d_+1);` (double, stored as float),
        // `scale_factor[i] = 1.0 / sqrt((i+2)*(i+1)) * inv_std_dev` (double, stored as float).
        let inv_std_dev = ((2.0f64 / 3.0).sqrt() * (d as f64 + 1.0)) as f32;
        let scale = (0..d)
            .map(|i| (1.0 / (((i + 2) * (i + 1)) as f64).sqrt() * inv_std_dev as f64) as f32)
            .collect();
        let mut canonical = vec![0i16; (d + 1) * (d + 1)];
        for i in 0..=d {
            for j in 0..=d - i {
                canonical[i * (d + 1) + j] = i as i16;
            }
            for j in d - i + 1..=d {
                canonical[i * (d + 1) + j] = i as i16 - (d as i16 + 1);
            }
        }
        Embedder {
            d,
            scale,
            inv_dp1: 1.0f32 / (d as f32 + 1.0),
            dp1: d as f32 + 1.0,
            canonical,
            elevated: vec![0.0; d + 1],
            rem0: vec![0.0; d + 1],
            rank: vec![0.0; d + 1],
            bary: vec![0.0; d + 2],
            key: vec![0; d],
        }
    }

    /// Computes the simplex enclosing `f` and its barycentric coordinates; afterwards
    /// `key_of(r)` gives the key of corner `r` and `bary[r]` its weight.
    fn embed(&mut self, f: &[f32]) {
        let d = self.d;
        // Elevate onto the hyperplane x_0 + ... + x_d = 0 (y = E f, Adams et al. p. 5).
        let mut sm = 0.0f32;
        for j in (1..=d).rev() {
            let cf = f[j - 1] * self.scale[j - 1];
            self.elevated[j] = sm - (j as f32) * cf;
            sm += cf;
        }
        self.elevated[0] = sm;
        // Closest remainder-0 point by rounding each coordinate to a multiple of d+1.
        let mut sum = 0.0f32;
        for i in 0..=d {
            let v = (self.inv_dp1 * self.elevated[i]).round_ties_even();
            self.rem0[i] = v * self.dp1;
            sum += v;
        }
        // Rank of each coordinate's residual in decreasing order.
        self.rank.fill(0.0);
        for i in 0..d {
            let di = self.elevated[i] - self.rem0[i];
            for j in i + 1..=d {
                let dj = self.elevated[j] - self.rem0[j];
                if di < dj {
                    self.rank[i] += 1.0;
                } else {
                    self.rank[j] += 1.0;
                }
            }
        }
        // Bring the point back onto the plane when the rounded coordinates do not sum to 0.
        for i in 0..=d {
            self.rank[i] += sum;
            if self.rank[i] < 0.0 {
                self.rank[i] += self.dp1;
                self.rem0[i] += self.dp1;
            } else if self.rank[i] >= self.dp1 {
                self.rank[i] -= self.dp1;
                self.rem0[i] -= self.dp1;
            }
        }
        // Barycentric coordinates (Adams et al. p. 10).
        self.bary.fill(0.0);
        for i in 0..=d {
            let v = (self.elevated[i] - self.rem0[i]) * self.inv_dp1;
            let p = d - self.rank[i] as usize;
            self.bary[p] += v;
            self.bary[p + 1] -= v;
        }
        self.bary[0] += 1.0 + self.bary[d + 1];
    }

    fn key_of(&mut self, remainder: usize) -> &[i16] {
        let d = self.d;
        for i in 0..d {
            let c = self.canonical[remainder * (d + 1) + self.rank[i] as usize];
            // densecrf stores keys as `short`: float -> int (truncation) -> 16 bits.
            self.key[i] = (self.rem0[i] + c as f32) as i32 as i16;
        }
        &self.key
    }
}

impl Permutohedral {
    /// Builds the lattice for `features`, point-major (`features[i*dim + k]` is coordinate `k`
    /// of point `i`), already divided by the kernel's standard deviations.
    pub fn new(features: &[f32], dim: usize) -> Result<Self, CrfError> {
        if dim == 0 || features.is_empty() || features.len() % dim != 0 {
            return Err(CrfError::Shape(format!(
                "feature buffer of {} values is not a non-empty multiple of dimension {dim}",
                features.len()
            )));
        }
        if dim > 64 {
            return Err(CrfError::Shape(format!("feature dimension {dim} is above 64")));
        }
        if let Some(p) = features.iter().position(|v| !v.is_finite()) {
            return Err(CrfError::NonFinite(format!("feature {} of point {}", p % dim, p / dim)));
        }
        let d = dim;
        let n = features.len() / d;
        if n >= u32::MAX as usize / (d + 1) {
            return Err(CrfError::Shape(format!("{n} points are too many")));
        }
        let mut table = VertexTable::with_capacity(d, n + n / 2);
        let mut offsets = vec![0u32; n * (d + 1)];
        let mut weights = vec![0f32; n * (d + 1)];
        let mut emb = Embedder::new(d);
        for i in 0..n {
            emb.embed(&features[i * d..(i + 1) * d]);
            for r in 0..=d {
                let w = emb.bary[r];
                let v = table.find_or_insert(emb.key_of(r));
                offsets[i * (d + 1) + r] = v + 1;
                weights[i * (d + 1) + r] = w;
            }
        }
        // densecrf embeds points four at a time and pads the last block with zero features,
        // whose vertices then exist in its lattice (and relay values while blurring).
        if n % 4 != 0 {
            let zero = vec![0f32; d];
            emb.embed(&zero);
            for r in 0..=d {
                table.find_or_insert(emb.key_of(r));
            }
        }
        let m = table.len();
        let mut neighbors = vec![[0u32; 2]; (d + 1) * m];
        let mut n1 = vec![0i16; d];
        let mut n2 = vec![0i16; d];
        for j in 0..=d {
            for v in 0..m {
                let key = table.key(v);
                for k in 0..d {
                    n1[k] = key[k].wrapping_sub(1);
                    n2[k] = key[k].wrapping_add(1);
                }
                if j < d {
                    n1[j] = key[j].wrapping_add(d as i16);
                    n2[j] = key[j].wrapping_sub(d as i16);
                }
                neighbors[j * m + v] =
                    [table.find(&n1).map_or(0, |e| e + 1), table.find(&n2).map_or(0, |e| e + 1)];
            }
        }
        Ok(Permutohedral { dim: d, n_points: n, n_vertices: m, offsets, weights, neighbors })
    }

    /// Feature dimension `d`.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of points the lattice was built over.
    pub fn num_points(&self) -> usize {
        self.n_points
    }

    /// Number of lattice vertices.
    pub fn num_vertices(&self) -> usize {
        self.n_vertices
    }

    /// Filters `input` (point-major, `value_size` values per point) into `output` (same shape):
    /// splat, blur along the axes 0..=d, slice. Matches densecrf's `Permutohedral::compute`.
    pub fn filter(&self, input: &[f32], value_size: usize, output: &mut [f32]) -> Result<(), CrfError> {
        self.compute(input, value_size, output, false)
    }

    /// The transposed filter (densecrf's `compute(.., reverse = true)`): the blur runs over the
    /// axes in reverse order, which makes it the exact adjoint of `filter`. (The two differ
    /// slightly where the sparse lattice lacks a vertex on one blur path but not the other.)
    pub fn filter_transposed(&self, input: &[f32], value_size: usize, output: &mut [f32]) -> Result<(), CrfError> {
        self.compute(input, value_size, output, true)
    }

    fn compute(&self, input: &[f32], vs: usize, output: &mut [f32], reverse: bool) -> Result<(), CrfError> {
        let n = self.n_points;
        if vs == 0 || input.len() != n * vs || output.len() != n * vs {
            return Err(CrfError::Shape(format!(
                "filter of {n} points x {vs} values got input {} and output {}",
                input.len(),
                output.len()
            )));
        }
        let mut values = self.splat(input, vs);
        self.blur(&mut values, vs, reverse);
        self.slice(&values, vs, output);
        Ok(())
    }

    /// Splat: every vertex accumulates, in point order, weight times the point's values.
    pub(crate) fn splat(&self, input: &[f32], vs: usize) -> Vec<f32> {
        let d1 = self.dim + 1;
        let mut values = vec![0f32; (self.n_vertices + 1) * vs];
        for (i, point) in input.chunks_exact(vs).enumerate() {
            let offs = &self.offsets[i * d1..(i + 1) * d1];
            let ws = &self.weights[i * d1..(i + 1) * d1];
            for (&o, &w) in offs.iter().zip(ws) {
                let dst = &mut values[o as usize * vs..(o as usize + 1) * vs];
                for (a, &x) in dst.iter_mut().zip(point) {
                    *a += w * x;
                }
            }
        }
        values
    }

    /// Blur: along each lattice axis, `v <- v + (v_prev + v_next) / 2`.
    pub(crate) fn blur(&self, values: &mut Vec<f32>, vs: usize, reverse: bool) {
        let m = self.n_vertices;
        let mut next = vec![0f32; values.len()];
        for step in 0..=self.dim {
            let j = if reverse { self.dim - step } else { step };
            let nb = &self.neighbors[j * m..(j + 1) * m];
            for (v, &[a, b]) in nb.iter().enumerate() {
                let (a, b) = (a as usize * vs, b as usize * vs);
                let o = (v + 1) * vs;
                for k in 0..vs {
                    next[o + k] = values[o + k] + 0.5 * (values[a + k] + values[b + k]);
                }
            }
            std::mem::swap(values, &mut next);
        }
    }

    /// Slice: interpolate the blurred vertex values back at the points, scaled by densecrf's
    /// constant `alpha = 1 / (1 + 2^-d)`.
    pub(crate) fn slice(&self, values: &[f32], vs: usize, output: &mut [f32]) {
        let d1 = self.dim + 1;
        let alpha = 1.0f32 / (1.0 + 2f32.powi(-(self.dim as i32)));
        for (i, out) in output.chunks_exact_mut(vs).enumerate() {
            let offs = &self.offsets[i * d1..(i + 1) * d1];
            let ws = &self.weights[i * d1..(i + 1) * d1];
            out.fill(0.0);
            if vs <= 2 {
                for (&o, &w) in offs.iter().zip(ws) {
                    let src = &values[o as usize * vs..(o as usize + 1) * vs];
                    for (a, &x) in out.iter_mut().zip(src) {
                        *a += w * x * alpha;
                    }
                }
            } else {
                for (&o, &w) in offs.iter().zip(ws) {
                    let wa = w * alpha;
                    let src = &values[o as usize * vs..(o as usize + 1) * vs];
                    for (a, &x) in out.iter_mut().zip(src) {
                        *a += wa * x;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid_features(w: usize, h: usize, s: f32) -> Vec<f32> {
        let mut f = Vec::with_capacity(w * h * 2);
        for y in 0..h {
            for x in 0..w {
                f.push(x as f32 / s);
                f.push(y as f32 / s);
            }
        }
        f
    }

    #[test]
    fn weights_are_barycentric() {
        let f: Vec<f32> = (0..60).map(|i| ((i * 37 % 11) as f32) * 0.37 - 1.0).collect();
        let lat = Permutohedral::new(&f, 3).unwrap();
        for w in lat.weights.chunks(4) {
            let s: f32 = w.iter().sum();
            assert!((s - 1.0).abs() < 1e-5, "{w:?}");
            assert!(w.iter().all(|&x| x > -1e-6), "{w:?}");
        }
    }

    #[test]
    fn rejects_bad_shapes() {
        assert!(Permutohedral::new(&[1.0, 2.0, 3.0], 2).is_err());
        assert!(Permutohedral::new(&[], 2).is_err());
        assert!(Permutohedral::new(&[f32::NAN, 1.0], 2).is_err());
        let lat = Permutohedral::new(&[0.0, 1.0], 2).unwrap();
        let mut out = vec![0.0; 3];
        assert!(lat.filter(&[1.0, 2.0], 3, &mut out).is_err());
    }

    #[test]
    fn transposed_filter_is_the_adjoint() {
        let f = grid_features(9, 7, 1.5);
        let lat = Permutohedral::new(&f, 2).unwrap();
        let a: Vec<f32> = (0..63 * 3).map(|i| ((i * 13 % 17) as f32) / 17.0).collect();
        let b: Vec<f32> = (0..63 * 3).map(|i| ((i * 7 % 23) as f32) / 23.0 - 0.3).collect();
        let mut kb = vec![0.0; b.len()];
        let mut kta = vec![0.0; a.len()];
        lat.filter(&b, 3, &mut kb).unwrap();
        lat.filter_transposed(&a, 3, &mut kta).unwrap();
        let dot = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(p, q)| *p as f64 * *q as f64).sum::<f64>();
        let (l, r) = (dot(&a, &kb), dot(&kta, &b));
        assert!((l - r).abs() < 1e-5 * l.abs(), "{l} {r}");
    }
}
