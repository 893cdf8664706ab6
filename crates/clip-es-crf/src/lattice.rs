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
//! The vertices are numbered in lexicographic order of their keys rather than densecrf's
//! insertion order, which does not change any value: every vertex accumulates its splats in point
//! order and blurs independently.
//!
//! Where the time goes, and what differs from densecrf for speed (never for the numbers): keys
//! are packed 16-bit lanes compared as integers; points are embedded a few positions ahead of
//! their hash lookups, whose slots are prefetched; the blur neighbours come from one merge pass
//! per axis over the sorted keys instead of 2(d+1) hash lookups per vertex, and the sorted
//! numbering makes the blur read its neighbours in increasing memory order; splat and slice
//! prefetch the vertex rows of points a few steps ahead; the value count is a compile-time
//! constant for up to 8 values; buffers are reused across iterations, and the kernel's scaling,
//! compatibility and message subtraction are fused into the splat and slice passes.

// Index loops over the value lanes mirror densecrf's and keep the float operation order plain.
#![allow(clippy::needless_range_loop)]

use crate::CrfError;

/// A lattice key (the first `d` integer coordinates of a vertex; the last one is implied since
/// they sum to zero) packed as 16-bit lanes into `W` words, lane 0 in the most significant bits
/// and each lane offset by 2^15, so that comparing packed keys as integers (arrays compare word
/// by word) orders them lexicographically by their signed coordinates.
type PackedKey<const W: usize> = [u64; W];

#[inline]
fn pack<const W: usize>(key: &[i16]) -> PackedKey<W> {
    let mut p = [0u64; W];
    for (i, &k) in key.iter().enumerate() {
        p[i / 4] |= ((k as u16 ^ 0x8000) as u64) << (16 * (3 - i % 4));
    }
    p
}

#[inline]
fn unpack<const W: usize>(p: &PackedKey<W>, key: &mut [i16]) {
    for (i, k) in key.iter_mut().enumerate() {
        *k = ((p[i / 4] >> (16 * (3 - i % 4))) as u16 ^ 0x8000) as i16;
    }
}

/// How many points ahead the splat and slice prefetch vertex rows.
const PREFETCH_POINTS: usize = 6;

/// Hints the processor to fetch the cache line at `p` (no effect on the program's semantics).
#[inline(always)]
fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is only a hint; it never faults, even on an invalid address, and
    // neither reads nor writes memory as far as the program can observe.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p as *const i8)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[derive(Clone, Copy)]
struct Slot<const W: usize> {
    key: PackedKey<W>,
    /// Vertex number plus one; 0 marks an empty slot.
    vertex: u32,
}

/// Open-addressing (linear probing) hash table from packed keys to dense vertex numbers, keys
/// stored in the slots so that a lookup touches one cache line, which `prefetch` can request
/// ahead of time.
struct VertexTable<const W: usize> {
    /// Keys in insertion order.
    keys: Vec<PackedKey<W>>,
    slots: Vec<Slot<W>>,
}

impl<const W: usize> VertexTable<W> {
    fn with_capacity(expected: usize) -> Self {
        let cap = (expected.max(8) * 2).next_power_of_two();
        VertexTable {
            keys: Vec::with_capacity(expected),
            slots: vec![
                Slot {
                    key: [0; W],
                    vertex: 0
                };
                cap
            ],
        }
    }

    fn len(&self) -> usize {
        self.keys.len()
    }

    #[inline]
    fn slot_of(&self, key: &PackedKey<W>) -> usize {
        // Multiplicative (Fibonacci) hashing; the top bits index the table.
        let mut h: u64 = 0;
        for &k in key {
            h = (h ^ k).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            h ^= h >> 29;
        }
        (h.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - self.slots.len().trailing_zeros())) as usize
    }

    #[inline]
    fn prefetch(&self, key: &PackedKey<W>) {
        prefetch(self.slots.as_ptr().wrapping_add(self.slot_of(key)));
    }

    #[inline]
    fn find_or_insert(&mut self, key: &PackedKey<W>) -> u32 {
        if 2 * (self.len() + 1) > self.slots.len() {
            self.grow();
        }
        let mask = self.slots.len() - 1;
        let mut s = self.slot_of(key);
        loop {
            let slot = &mut self.slots[s];
            if slot.vertex == 0 {
                self.keys.push(*key);
                *slot = Slot {
                    key: *key,
                    vertex: self.keys.len() as u32,
                };
                return slot.vertex - 1;
            }
            if slot.key == *key {
                return slot.vertex - 1;
            }
            s = (s + 1) & mask;
        }
    }

    fn grow(&mut self) {
        let cap = self.slots.len() * 2;
        self.slots = vec![
            Slot {
                key: [0; W],
                vertex: 0
            };
            cap
        ];
        let mask = cap - 1;
        for (v, key) in self.keys.iter().enumerate() {
            let mut s = self.slot_of(key);
            while self.slots[s].vertex != 0 {
                s = (s + 1) & mask;
            }
            self.slots[s] = Slot {
                key: *key,
                vertex: v as u32 + 1,
            };
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

/// The blur neighbours of every vertex of a lattice whose keys are `sorted` (strictly
/// increasing): for axis `j < d` the keys `key - 1 + (d+1) e_j` and `key + 1 - (d+1) e_j`, for
/// axis `d` `key - 1` and `key + 1` (the implied last coordinate moves by -d / +d), as densecrf
/// computes them in 16-bit arithmetic. Returns, per axis and vertex, the two neighbour numbers
/// plus one (0: absent).
fn neighbors_by_merge<const W: usize>(sorted: &[PackedKey<W>], d: usize) -> Vec<[u32; 2]> {
    let m = sorted.len();
    let mut neighbors = vec![[0u32; 2]; (d + 1) * m];
    let mut key = vec![0i16; d];
    let mut shifted = vec![0i16; d];
    // Shifting preserves the order unless a coordinate wraps around in 16 bits (keys within
    // d + 1 of the limits); densecrf's lattice would then be nonsense anyway, but stay exact.
    let mut lo = i16::MAX;
    let mut hi = i16::MIN;
    for p in sorted {
        unpack(p, &mut key);
        for &k in &key {
            lo = lo.min(k);
            hi = hi.max(k);
        }
    }
    let margin = d as i32 + 1;
    let wraps = (lo as i32) - margin < i16::MIN as i32 || (hi as i32) + margin > i16::MAX as i32;
    let wide: Option<Vec<u128>> = (W <= 2).then(|| {
        sorted
            .iter()
            .map(|p| (p[0] as u128) << 64 | if W == 2 { p[W - 1] as u128 } else { 0 })
            .collect()
    });
    // The two neighbours along an axis are key - delta and key + delta: B = A + delta exactly
    // when A = B - delta, so one merge pass per axis finds both relations.
    for j in 0..=d {
        let delta: Vec<i16> = (0..d)
            .map(|k| if k == j { -(d as i16) } else { 1 })
            .collect();
        let out = &mut neighbors[j * m..(j + 1) * m];
        if wraps {
            for (v, p) in sorted.iter().enumerate() {
                unpack(p, &mut key);
                for (side, sign) in [(0usize, -1i16), (1, 1)] {
                    for k in 0..d {
                        shifted[k] = key[k].wrapping_add(sign.wrapping_mul(delta[k]));
                    }
                    if let Ok(pos) = sorted.binary_search(&pack::<W>(&shifted)) {
                        out[v][side] = pos as u32 + 1;
                    }
                }
            }
        } else {
            // No lane leaves [0, 2^16) when shifted, so adding the lanes' deltas as one
            // integer per word shifts every lane exactly (no carry or borrow between lanes).
            let mut word_delta = [0u64; W];
            for (k, &dk) in delta.iter().enumerate() {
                word_delta[k / 4] =
                    word_delta[k / 4].wrapping_add(((dk as i64) << (16 * (3 - k % 4))) as u64);
            }
            if let Some(wide) = &wide {
                // Up to 8 lanes: compare and shift whole u128s (fewer branches).
                let mut delta128: i128 = 0;
                for (k, &dk) in delta.iter().enumerate() {
                    delta128 += (dk as i128) << (16 * (7 - k));
                }
                merge_pass(wide, |p| p.wrapping_add(delta128 as u128), out);
            } else {
                merge_pass(
                    sorted,
                    |p| {
                        let mut target = *p;
                        for (t, &wd) in target.iter_mut().zip(&word_delta) {
                            *t = t.wrapping_add(wd);
                        }
                        target
                    },
                    out,
                );
            }
        }
    }
    neighbors
}

/// One merge pass: for each key (in increasing order) its shifted key `shift(key)` is looked
/// up by advancing a cursor; a match A -> B records B as A's +1 neighbour and A as B's -1
/// neighbour.
#[inline(always)]
fn merge_pass<K: Ord + Copy>(sorted: &[K], shift: impl Fn(&K) -> K, out: &mut [[u32; 2]]) {
    let m = sorted.len();
    let mut pos = 0usize;
    for (v, p) in sorted.iter().enumerate() {
        let target = shift(p);
        while pos < m && sorted[pos] < target {
            pos += 1;
        }
        if pos < m && sorted[pos] == target {
            out[v][1] = pos as u32 + 1;
            out[pos][0] = v as u32 + 1;
        }
    }
}

/// Rounds to the nearest integer, ties to even (SSE2 `cvtps2dq` under the default rounding
/// mode). Adding and subtracting 1.5 * 2^23 does that in two instructions for |x| < 2^22;
/// `f32::round_ties_even` is a library call without SSE4.1.
#[inline(always)]
fn round_ties_even(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    if x.abs() < 4_194_304.0 {
        (x + MAGIC) - MAGIC
    } else {
        x.round_ties_even()
    }
}

/// Per-point lattice embedding computed exactly as densecrf's SSE lanes do.
/// (Fixed-size arrays, and the dimension known at compile time for the usual 2 and 5, let the
/// per-point loops unroll.)
struct Embedder<D: Width> {
    dim: D,
    scale: [f32; MAX_DIM],
    inv_dp1: f32,
    dp1: f32,
    canonical: Vec<i16>,
    elevated: [f32; MAX_DIM + 1],
    rem0: [f32; MAX_DIM + 1],
    residual: [f32; MAX_DIM + 1],
    rank: [i32; MAX_DIM + 1],
    bary: [f32; MAX_DIM + 2],
    key: [i16; MAX_DIM],
}

/// Largest feature dimension supported.
const MAX_DIM: usize = 64;

impl<D: Width> Embedder<D> {
    fn new(dim: D) -> Self {
        let d = dim.get();
        // densecrf: `float inv_std_dev = sqrt(2.0 / 3.0)*(d_+1);` (double, stored as float),
        // `scale_factor[i] = 1.0 / sqrt((i+2)*(i+1)) * inv_std_dev` (double, stored as float).
        let inv_std_dev = ((2.0f64 / 3.0).sqrt() * (d as f64 + 1.0)) as f32;
        let mut scale = [0f32; MAX_DIM];
        for (i, sc) in scale.iter_mut().enumerate().take(d) {
            *sc = (1.0 / (((i + 2) * (i + 1)) as f64).sqrt() * inv_std_dev as f64) as f32;
        }
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
            dim,
            scale,
            inv_dp1: 1.0f32 / (d as f32 + 1.0),
            dp1: d as f32 + 1.0,
            canonical,
            elevated: [0.0; MAX_DIM + 1],
            rem0: [0.0; MAX_DIM + 1],
            residual: [0.0; MAX_DIM + 1],
            rank: [0; MAX_DIM + 1],
            bary: [0.0; MAX_DIM + 2],
            key: [0; MAX_DIM],
        }
    }

    /// Computes the simplex enclosing `f` and its barycentric coordinates; afterwards
    /// `key_of(r)` gives the key of corner `r` and `bary[r]` its weight.
    fn embed(&mut self, f: &[f32]) {
        let d = self.dim.get();
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
            let v = round_ties_even(self.inv_dp1 * self.elevated[i]);
            self.rem0[i] = v * self.dp1;
            sum += v;
        }
        // Rank of each coordinate's residual in decreasing order. (densecrf keeps ranks and
        // the sum in float lanes; they are small integers, exact either way.)
        let dp1 = d as i32 + 1;
        for i in 0..=d {
            self.residual[i] = self.elevated[i] - self.rem0[i];
        }
        self.rank[..=d].fill(0);
        for i in 0..d {
            let di = self.residual[i];
            for j in i + 1..=d {
                let c = (di < self.residual[j]) as i32;
                self.rank[i] += c;
                self.rank[j] += 1 - c;
            }
        }
        // Bring the point back onto the plane when the rounded coordinates do not sum to 0.
        let sum = sum as i32;
        for i in 0..=d {
            self.rank[i] += sum;
            if self.rank[i] < 0 {
                self.rank[i] += dp1;
                self.rem0[i] += self.dp1;
            } else if self.rank[i] >= dp1 {
                self.rank[i] -= dp1;
                self.rem0[i] -= self.dp1;
            }
        }
        // Barycentric coordinates (Adams et al. p. 10).
        self.bary[..d + 2].fill(0.0);
        for i in 0..=d {
            let v = (self.elevated[i] - self.rem0[i]) * self.inv_dp1;
            let p = d - self.rank[i] as usize;
            self.bary[p] += v;
            self.bary[p + 1] -= v;
        }
        self.bary[0] += 1.0 + self.bary[d + 1];
    }

    /// The packed keys of all d+1 corners. Corner r+1 is corner r plus one in every
    /// coordinate except the one of rank d - r, which moves by -d (the coordinate that leaves
    /// the canonical simplex's upper part); done lane-wise on the packed words when no
    /// coordinate is near the 16-bit limits (so no lane over- or underflows), else per corner.
    fn packed_keys<const W: usize>(&mut self, out: &mut [PackedKey<W>]) {
        let d = self.dim.get();
        let safe = self.rem0[..d].iter().all(|&v| v.abs() < 30000.0) && d < 1000;
        if !safe {
            for (r, o) in out.iter_mut().enumerate() {
                *o = pack(self.key_of(r));
            }
            return;
        }
        for i in 0..d {
            self.key[i] = self.rem0[i] as i32 as i16;
        }
        let base: PackedKey<W> = pack(&self.key[..d]);
        // by_rank[k] = the coordinate of rank k.
        let mut by_rank = [usize::MAX; 65];
        for (i, &r) in self.rank[..=d].iter().enumerate() {
            by_rank[r as usize] = i;
        }
        out[0] = base;
        if W <= 2 {
            // Up to 8 lanes: one u128 held in registers (lane i at bits 16 * (7 - i)).
            let mut key: u128 = (base[0] as u128) << 64 | if W == 2 { base[1] as u128 } else { 0 };
            let mut ones: u128 = 0;
            for i in 0..d {
                ones += 1 << (16 * (7 - i));
            }
            for r in 0..d {
                key = key.wrapping_add(ones);
                let i = by_rank[d - r];
                if i < d {
                    key = key.wrapping_sub(((d as u128) + 1) << (16 * (7 - i)));
                }
                let o = &mut out[r + 1];
                o[0] = (key >> 64) as u64;
                if W == 2 {
                    o[W - 1] = key as u64;
                }
            }
            return;
        }
        let mut key = base;
        let mut ones = [0u64; W];
        for i in 0..d {
            ones[i / 4] += 1 << (16 * (3 - i % 4));
        }
        for r in 0..d {
            for (w, &o) in key.iter_mut().zip(&ones) {
                *w = w.wrapping_add(o);
            }
            let i = by_rank[d - r];
            if i < d {
                let shift = 16 * (3 - i % 4);
                key[i / 4] = key[i / 4].wrapping_sub(((d as u64) + 1) << shift);
            }
            out[r + 1] = key;
        }
    }

    fn key_of(&mut self, remainder: usize) -> &[i16] {
        let d = self.dim.get();
        for i in 0..d {
            let c = self.canonical[remainder * (d + 1) + self.rank[i] as usize];
            // densecrf stores keys as `short`: float -> int (truncation) -> 16 bits.
            self.key[i] = (self.rem0[i] + c as f32) as i32 as i16;
        }
        &self.key[..d]
    }
}

impl Permutohedral {
    /// Builds the lattice for `features`, point-major (`features[i*dim + k]` is coordinate `k`
    /// of point `i`), already divided by the kernel's standard deviations.
    pub fn new(features: &[f32], dim: usize) -> Result<Self, CrfError> {
        if dim == 0 || features.is_empty() || !features.len().is_multiple_of(dim) {
            return Err(CrfError::Shape(format!(
                "feature buffer of {} values is not a non-empty multiple of dimension {dim}",
                features.len()
            )));
        }
        if dim > MAX_DIM {
            return Err(CrfError::Shape(format!(
                "feature dimension {dim} is above 64"
            )));
        }
        if let Some(p) = features.iter().position(|v| !v.is_finite()) {
            return Err(CrfError::NonFinite(format!(
                "feature {} of point {}",
                p % dim,
                p / dim
            )));
        }
        let n = features.len() / dim;
        if n >= u32::MAX as usize / (dim + 1) {
            return Err(CrfError::Shape(format!("{n} points are too many")));
        }
        Ok(match dim.div_ceil(4) {
            _ if dim == 2 => Self::build::<1, _>(features, Fixed::<2>),
            _ if dim == 5 => Self::build::<2, _>(features, Fixed::<5>),
            1 => Self::build::<1, _>(features, Dynamic(dim)),
            2 => Self::build::<2, _>(features, Dynamic(dim)),
            3 => Self::build::<3, _>(features, Dynamic(dim)),
            4 => Self::build::<4, _>(features, Dynamic(dim)),
            _ => Self::build::<16, _>(features, Dynamic(dim)),
        })
    }

    fn build<const W: usize, D: Width>(features: &[f32], dim: D) -> Self {
        let d = dim.get();
        let n = features.len() / d;
        let mut table = VertexTable::<W>::with_capacity(n);
        let mut offsets = vec![0u32; n * (d + 1)];
        let mut weights = vec![0f32; n * (d + 1)];
        let mut emb = Embedder::new(dim);
        // Points are embedded AHEAD positions before their vertices are looked up, and the
        // hash slots they will touch are prefetched meanwhile.
        const AHEAD: usize = 8;
        let mut ring_keys = vec![[0u64; W]; AHEAD * (d + 1)];
        let mut ring_weights = vec![0f32; AHEAD * (d + 1)];
        let stage = |i: usize,
                     table: &VertexTable<W>,
                     emb: &mut Embedder<D>,
                     keys: &mut [PackedKey<W>],
                     ws: &mut [f32]| {
            emb.embed(&features[i * d..(i + 1) * d]);
            emb.packed_keys(keys);
            ws.copy_from_slice(&emb.bary[..=d]);
            for key in keys.iter() {
                table.prefetch(key);
            }
        };
        for i in 0..n.min(AHEAD) {
            let k = i * (d + 1)..(i + 1) * (d + 1);
            stage(
                i,
                &table,
                &mut emb,
                &mut ring_keys[k.clone()],
                &mut ring_weights[k],
            );
        }
        for i in 0..n {
            let k = (i % AHEAD) * (d + 1)..(i % AHEAD + 1) * (d + 1);
            for r in 0..=d {
                let v = table.find_or_insert(&ring_keys[k.start + r]);
                offsets[i * (d + 1) + r] = v + 1;
                weights[i * (d + 1) + r] = ring_weights[k.start + r];
            }
            if i + AHEAD < n {
                stage(
                    i + AHEAD,
                    &table,
                    &mut emb,
                    &mut ring_keys[k.clone()],
                    &mut ring_weights[k],
                );
            }
        }
        // densecrf embeds points four at a time and pads the last block with zero features,
        // whose vertices then exist in its lattice (and relay values while blurring).
        if !n.is_multiple_of(4) {
            let zero = vec![0f32; d];
            emb.embed(&zero);
            for r in 0..=d {
                table.find_or_insert(&pack(emb.key_of(r)));
            }
        }
        let m = table.len();
        let keys = table.keys;
        // Number the vertices in lexicographic key order. Shifting every key by the same vector
        // keeps that order, so each blur neighbour relation is found by one merge pass over
        // the sorted keys (no hashing), and during the blur the neighbours of consecutive
        // vertices are read in increasing memory order.
        let mut order: Vec<(PackedKey<W>, u32)> = keys.into_iter().zip(0u32..).collect();
        order.sort_unstable();
        let mut new_id = vec![0u32; m];
        for (pos, &(_, v)) in order.iter().enumerate() {
            new_id[v as usize] = pos as u32;
        }
        for o in offsets.iter_mut() {
            *o = new_id[*o as usize - 1] + 1;
        }
        drop(new_id);
        let sorted: Vec<PackedKey<W>> = order.into_iter().map(|(k, _)| k).collect();
        let neighbors = neighbors_by_merge(&sorted, d);
        Permutohedral {
            dim: d,
            n_points: n,
            n_vertices: m,
            offsets,
            weights,
            neighbors,
        }
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
    pub fn filter(
        &self,
        input: &[f32],
        value_size: usize,
        output: &mut [f32],
    ) -> Result<(), CrfError> {
        self.filter_with_scratch(
            input,
            value_size,
            output,
            false,
            &mut FilterScratch::default(),
        )
    }

    /// The transposed filter (densecrf's `compute(.., reverse = true)`): the blur runs over the
    /// axes in reverse order, which makes it the exact adjoint of `filter`. (The two differ
    /// slightly where the sparse lattice lacks a vertex on one blur path but not the other.)
    pub fn filter_transposed(
        &self,
        input: &[f32],
        value_size: usize,
        output: &mut [f32],
    ) -> Result<(), CrfError> {
        self.filter_with_scratch(
            input,
            value_size,
            output,
            true,
            &mut FilterScratch::default(),
        )
    }

    /// `filter` / `filter_transposed` reusing the buffers of `scratch` between calls.
    pub fn filter_with_scratch(
        &self,
        input: &[f32],
        value_size: usize,
        output: &mut [f32],
        transposed: bool,
        scratch: &mut FilterScratch,
    ) -> Result<(), CrfError> {
        if output.len() != self.n_points * value_size {
            return Err(CrfError::Shape(format!(
                "filter of {} points x {value_size} values got an output of {}",
                self.n_points,
                output.len()
            )));
        }
        self.filter_map(
            input,
            value_size,
            None,
            transposed,
            scratch,
            |i, lane0, v| {
                let start = i * value_size + lane0;
                output[start..start + v.len()].copy_from_slice(v)
            },
        )
    }

    /// The filter of `input` multiplied point-wise by `pre_scale` (when given), handing the
    /// filtered values to `sink(point, first value index, values)` in point order (for more than
    /// 8 values per point, in groups of 8: the values are filtered independently). Lets a caller
    /// fuse its element-wise pre- and post-processing into the splat and slice passes.
    pub(crate) fn filter_map<F: FnMut(usize, usize, &[f32])>(
        &self,
        input: &[f32],
        value_size: usize,
        pre_scale: Option<&[f32]>,
        transposed: bool,
        scratch: &mut FilterScratch,
        mut sink: F,
    ) -> Result<(), CrfError> {
        let n = self.n_points;
        let vs = value_size;
        if vs == 0 || input.len() != n * vs || pre_scale.is_some_and(|s| s.len() != n) {
            return Err(CrfError::Shape(format!(
                "filter of {n} points x {vs} values got an input of {}",
                input.len()
            )));
        }
        // densecrf slices one or two values per point with `seqCompute`, more with `sseCompute`,
        // which multiply in different orders.
        let seq = vs <= 2;
        // Vertex rows are arrays of R = (number of values) floats, known at compile time so that
        // the per-row arithmetic is unrolled and vectorised. (Padding rows to whole SSE
        // registers, as densecrf does, measured slower: more memory traffic.) More than 8
        // values are filtered 8 at a time; the values never mix.
        let mut lane0 = 0;
        while lane0 < vs {
            let lanes = (vs - lane0).min(8);
            let group = Lanes {
                stride: vs,
                first: lane0,
                count: lanes,
                seq,
            };
            let sink = |i: usize, v: &[f32]| sink(i, lane0, v);
            match lanes {
                1 => self.compute::<1, _>(input, group, pre_scale, transposed, scratch, sink),
                2 => self.compute::<2, _>(input, group, pre_scale, transposed, scratch, sink),
                3 => self.compute::<3, _>(input, group, pre_scale, transposed, scratch, sink),
                4 => self.compute::<4, _>(input, group, pre_scale, transposed, scratch, sink),
                5 => self.compute::<5, _>(input, group, pre_scale, transposed, scratch, sink),
                6 => self.compute::<6, _>(input, group, pre_scale, transposed, scratch, sink),
                7 => self.compute::<7, _>(input, group, pre_scale, transposed, scratch, sink),
                _ => self.compute::<8, _>(input, group, pre_scale, transposed, scratch, sink),
            }
            lane0 += lanes;
        }
        Ok(())
    }

    fn compute<const R: usize, F: FnMut(usize, &[f32])>(
        &self,
        input: &[f32],
        lanes: Lanes,
        pre_scale: Option<&[f32]>,
        reverse: bool,
        scratch: &mut FilterScratch,
        sink: F,
    ) {
        let rows = self.n_vertices + 1;
        let FilterScratch { values, next } = scratch;
        values.clear();
        values.resize(rows * R, 0.0);
        next.resize(rows * R, 0.0);
        let (values_rows, _) = values.as_chunks_mut::<R>();
        let (next_rows, _) = next.as_chunks_mut::<R>();
        // Row 0 stands for absent neighbours and must stay zero in both buffers.
        next_rows[0] = [0.0; R];
        match pre_scale {
            Some(s) => self.splat::<R, _>(input, lanes, |p| s[p], values_rows),
            None => self.splat::<R, _>(input, lanes, |_| 1.0, values_rows),
        }
        let blurred = self.blur::<R>(values_rows, next_rows, reverse);
        self.slice::<R, _>(blurred, lanes, sink);
    }

    /// Splat: every vertex accumulates, in point order, weight times the point's values times
    /// the point's scale (`w * (x * s)`: densecrf scales its input before splatting).
    #[inline(always)]
    fn splat<const R: usize, S: Fn(usize) -> f32>(
        &self,
        input: &[f32],
        lanes: Lanes,
        scale: S,
        rows: &mut [[f32; R]],
    ) {
        let d1 = self.dim + 1;
        assert!(rows.len() == self.n_vertices + 1 && lanes.count <= R);
        assert!(
            input.len() >= self.n_points * lanes.stride
                && lanes.first + lanes.count <= lanes.stride
        );
        for i in 0..self.n_points {
            self.prefetch_rows(i + PREFETCH_POINTS, rows);
            let s = scale(i);
            let mut t = [0f32; R];
            let x = &input[i * lanes.stride + lanes.first..][..lanes.count];
            for k in 0..lanes.count {
                t[k] = x[k] * s;
            }
            for r in 0..d1 {
                let o = self.offsets[i * d1 + r] as usize;
                let w = self.weights[i * d1 + r];
                debug_assert!(o < rows.len());
                // SAFETY: every offset is a vertex number plus one, at most n_vertices (checked
                // when the lattice was built), and there are n_vertices + 1 rows.
                let row = unsafe { rows.get_unchecked_mut(o) };
                for k in 0..R {
                    row[k] += w * t[k];
                }
            }
        }
    }

    /// Prefetches the vertex rows of point `i` (if any): the splat and slice access vertices
    /// all over the lattice, and the offsets tell where well in advance.
    #[inline(always)]
    fn prefetch_rows<T>(&self, i: usize, rows: &[T]) {
        let d1 = self.dim + 1;
        if i < self.n_points {
            for &o in &self.offsets[i * d1..(i + 1) * d1] {
                prefetch(rows.as_ptr().wrapping_add(o as usize));
            }
        }
    }

    /// Blur: along each lattice axis, `v <- v + (v_prev + v_next) / 2`. Returns the buffer that
    /// holds the result.
    #[inline(always)]
    fn blur<'a, const R: usize>(
        &self,
        mut values: &'a mut [[f32; R]],
        mut next: &'a mut [[f32; R]],
        reverse: bool,
    ) -> &'a [[f32; R]] {
        let m = self.n_vertices;
        assert!(values.len() == m + 1 && next.len() == m + 1);
        for step in 0..=self.dim {
            let j = if reverse { self.dim - step } else { step };
            let nb = &self.neighbors[j * m..(j + 1) * m];
            for (v, &[a, b]) in nb.iter().enumerate() {
                debug_assert!((a as usize) <= m && (b as usize) <= m);
                // SAFETY: neighbour numbers are vertex numbers plus one (or 0), at most m, and
                // both buffers hold m + 1 rows; v + 1 <= m.
                unsafe {
                    let (po, pa, pb) = (
                        values.get_unchecked(v + 1),
                        values.get_unchecked(a as usize),
                        values.get_unchecked(b as usize),
                    );
                    let dst = next.get_unchecked_mut(v + 1);
                    for k in 0..R {
                        dst[k] = po[k] + 0.5 * (pa[k] + pb[k]);
                    }
                }
            }
            std::mem::swap(&mut values, &mut next);
        }
        values
    }

    /// Slice: interpolate the blurred vertex values back at the points, scaled by densecrf's
    /// constant `alpha = 1 / (1 + 2^-d)`.
    #[inline(always)]
    fn slice<const R: usize, F: FnMut(usize, &[f32])>(
        &self,
        rows: &[[f32; R]],
        lanes: Lanes,
        mut sink: F,
    ) {
        let d1 = self.dim + 1;
        let alpha = 1.0f32 / (1.0 + 2f32.powi(-(self.dim as i32)));
        assert!(rows.len() == self.n_vertices + 1 && lanes.count <= R);
        for i in 0..self.n_points {
            self.prefetch_rows(i + PREFETCH_POINTS, rows);
            let mut out = [0f32; R];
            for r in 0..d1 {
                let o = self.offsets[i * d1 + r] as usize;
                let w = self.weights[i * d1 + r];
                debug_assert!(o < rows.len());
                // SAFETY: as in the splat, o <= n_vertices and there are n_vertices + 1 rows.
                let src = unsafe { rows.get_unchecked(o) };
                if lanes.seq {
                    for k in 0..R {
                        out[k] += w * src[k] * alpha;
                    }
                } else {
                    let wa = w * alpha;
                    for k in 0..R {
                        out[k] += wa * src[k];
                    }
                }
            }
            sink(i, &out[..lanes.count]);
        }
    }
}

/// Which values of each point a filter pass handles: `count` values from index `first` of
/// rows of `stride` values; `seq` selects densecrf's slicing formula for one or two values.
#[derive(Clone, Copy)]
struct Lanes {
    stride: usize,
    first: usize,
    count: usize,
    seq: bool,
}

/// A count (the feature dimension) known at compile time (`Fixed`), for the usual 2 and 5, so
/// that the per-point loops unroll, or at run time (`Dynamic`).
trait Width: Copy {
    fn get(self) -> usize;
}

#[derive(Clone, Copy)]
struct Fixed<const N: usize>;

impl<const N: usize> Width for Fixed<N> {
    #[inline(always)]
    fn get(self) -> usize {
        N
    }
}

#[derive(Clone, Copy)]
struct Dynamic(usize);

impl Width for Dynamic {
    #[inline(always)]
    fn get(self) -> usize {
        self.0
    }
}

/// Reusable buffers for `Permutohedral::filter_with_scratch`.
#[derive(Clone, Debug, Default)]
pub struct FilterScratch {
    values: Vec<f32>,
    next: Vec<f32>,
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
        let f: Vec<f32> = (0..60)
            .map(|i| ((i * 37 % 11) as f32) * 0.37 - 1.0)
            .collect();
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
        let b: Vec<f32> = (0..63 * 3)
            .map(|i| ((i * 7 % 23) as f32) / 23.0 - 0.3)
            .collect();
        let mut kb = vec![0.0; b.len()];
        let mut kta = vec![0.0; a.len()];
        lat.filter(&b, 3, &mut kb).unwrap();
        lat.filter_transposed(&a, 3, &mut kta).unwrap();
        let dot = |x: &[f32], y: &[f32]| {
            x.iter()
                .zip(y)
                .map(|(p, q)| *p as f64 * *q as f64)
                .sum::<f64>()
        };
        let (l, r) = (dot(&a, &kb), dot(&kta, &b));
        assert!((l - r).abs() < 1e-5 * l.abs(), "{l} {r}");
    }
}
