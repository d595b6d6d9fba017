//! Pillow's separable 8-bit resampler (`src/libImaging/Resample.c`), reproduced bit for bit for interleaved
//! RGB, but evaluated only for the output pixels a caller keeps.
//!
//! Pillow resizes in two passes, rounding to `u8` in between: horizontal first, except (since Pillow 13,
//! python-pillow/Pillow#9549) when the height shrinks by more than twice as many pixels as the width.
//! Each output sample is a fixed-point dot product of its own input taps, so computing a subset of outputs
//! gives exactly the values the full resize would. Coefficients follow `precompute_coeffs` and
//! `normalize_coeffs_8bpc`: weights in double, normalised by their sum, then rounded away from zero to
//! 22-bit fixed point; the accumulator starts at one half and the result is clipped to 0..=255.

use std::ops::Range;

/// Fractional bits of Pillow's fixed-point weights: 32 bits minus 8 for the pixel, 2 for overshoot headroom.
pub const PRECISION_BITS: u32 = 32 - 8 - 2;
/// Added before the final shift so that it rounds half up, as Pillow does.
const ROUND_HALF: i32 = 1 << (PRECISION_BITS - 1);
/// Fixed-point weight of one half: the exact weight of both taps of an even 2× BOX reduction.
const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// Rows transposed together in the horizontal pass, so one weight multiplies a whole column of pixels.
const BLOCK_ROWS: usize = 8;

/// The resampling filters the ADM center crop uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    /// Pillow's `Image.BOX`: the average of the input pixels the output pixel covers.
    Box,
    /// Pillow's `Image.BICUBIC`: Keys cubic convolution with a = -0.5.
    Bicubic,
}

impl Filter {
    /// Half-width of the filter at scale 1, in input pixels.
    fn support(self) -> f64 {
        match self {
            Filter::Box => 0.5,
            Filter::Bicubic => 2.0,
        }
    }

    /// The filter kernel, written with Pillow's operation order so the doubles round identically.
    fn weight(self, x: f64) -> f64 {
        match self {
            Filter::Box => {
                if x > -0.5 && x <= 0.5 {
                    1.0
                } else {
                    0.0
                }
            }
            Filter::Bicubic => {
                const A: f64 = -0.5;
                let x = x.abs();
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
        }
    }
}

/// Pillow's normalised double weights for output sample `out_index` of a resize from `in_size` to
/// `out_size` samples along one axis. Writes the weights to `weights` and returns the first input index.
pub fn pillow_weights(
    in_size: usize,
    out_size: usize,
    filter: Filter,
    out_index: usize,
    weights: &mut Vec<f64>,
) -> usize {
    // Pillow receives the box (0, 0, w, h) as C floats and subtracts them in float.
    let scale = f64::from(in_size as f32) / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let center = (out_index as f64 + 0.5) * scale;
    let ss = 1.0 / filterscale;
    // `as i64` truncates toward zero like C's `(int)` cast.
    let xmin = ((center - support + 0.5) as i64).max(0);
    let xmax = ((center + support + 0.5) as i64).min(in_size as i64);
    weights.clear();
    let mut ww = 0.0;
    for x in xmin..xmax {
        let w = filter.weight((x as f64 - center + 0.5) * ss);
        weights.push(w);
        ww += w;
    }
    if ww != 0.0 {
        for w in weights.iter_mut() {
            *w /= ww;
        }
    }
    xmin as usize
}

/// Whether Pillow (>= 13) resizes `in_width`×`in_height` to `out_width`×`out_height` vertical pass first.
/// Read off `ImagingResampleInner` in Pillow 13.0's `_imaging` binary; only matters when both sizes change.
pub fn vertical_first(
    in_width: usize,
    in_height: usize,
    out_width: usize,
    out_height: usize,
) -> bool {
    let shrink_h = in_height as i64 - out_height as i64;
    let shrink_w = in_width as i64 - out_width as i64;
    in_width != out_width && in_height != out_height && shrink_h > 0 && shrink_h > 2 * shrink_w
}

/// Pillow's `normalize_coeffs_8bpc`: a double weight to 22-bit fixed point, rounded half away from zero.
pub fn fixed_point(w: f64) -> i32 {
    let scaled = w * f64::from(1u32 << PRECISION_BITS);
    if w < 0.0 {
        (-0.5 + scaled) as i32
    } else {
        (0.5 + scaled) as i32
    }
}

/// Pillow's `clip8`: drop the fraction bits and saturate to a byte.
#[inline(always)]
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// `(a + b + 1) >> 1`: what Pillow's fixed point makes of two taps weighted one half each.
#[inline(always)]
fn average(a: u8, b: u8) -> u8 {
    ((u16::from(a) + u16::from(b) + 1) >> 1) as u8
}

/// The fixed-point taps of the kept output samples of a resize along one axis.
///
/// Every output reads exactly `k` consecutive inputs (padded with zero weights, which add exactly
/// nothing), starting inside the input span `lo..hi` that the kept outputs need.
#[derive(Default)]
pub struct AxisTaps {
    lo: usize,
    hi: usize,
    k: usize,
    /// Per kept output, in output order: first input index, relative to `lo`.
    starts: Vec<usize>,
    /// `starts.len() * k` fixed-point weights.
    weights: Vec<i32>,
    /// Every output is the rounded average of two neighbours (the even 2× BOX reduction).
    halves: bool,
    /// Unpadded weights and spans from the first pass of `build`, kept to reuse their allocation.
    unpadded: Vec<i32>,
    spans: Vec<(usize, usize)>,
    doubles: Vec<f64>,
    /// The arguments of the last `build`: images of one size repeat, and so do their taps.
    built_for: Option<(usize, usize, Filter, Range<usize>, bool)>,
}

impl AxisTaps {
    /// Taps for outputs `kept` (in reverse order when `reversed`) of a resize from `in_size` to `out_size`.
    pub fn build(
        &mut self,
        in_size: usize,
        out_size: usize,
        filter: Filter,
        kept: Range<usize>,
        reversed: bool,
    ) {
        let key = Some((in_size, out_size, filter, kept.clone(), reversed));
        if self.built_for == key {
            return;
        }
        self.built_for = key;
        self.unpadded.clear();
        self.spans.clear();
        let (mut lo, mut hi, mut k) = (usize::MAX, 0, 0);
        for i in 0..kept.len() {
            let out_index = if reversed {
                kept.end - 1 - i
            } else {
                kept.start + i
            };
            let xmin = pillow_weights(in_size, out_size, filter, out_index, &mut self.doubles);
            let n = self.doubles.len();
            self.spans.push((xmin, n));
            self.unpadded
                .extend(self.doubles.iter().map(|&w| fixed_point(w)));
            lo = lo.min(xmin);
            hi = hi.max(xmin + n);
            k = k.max(n);
        }
        if self.spans.is_empty() {
            (lo, k) = (0, 1);
        }
        self.lo = lo;
        self.hi = hi;
        self.k = k;
        self.starts.clear();
        self.weights.clear();
        self.weights.resize(self.spans.len() * k, 0);
        let mut unpadded = self.unpadded.as_slice();
        for (&(xmin, n), row) in self.spans.iter().zip(self.weights.chunks_exact_mut(k)) {
            // Near the far edge the window slides left so it stays inside lo..hi; the taps it gains
            // on the left get weight zero.
            let start = (xmin - lo).min(hi - lo - k);
            let shift = xmin - lo - start;
            let (taps, rest) = unpadded.split_at(n);
            row[shift..shift + n].copy_from_slice(taps);
            unpadded = rest;
            self.starts.push(start);
        }
        self.halves = k == 2 && self.weights.iter().all(|&w| w == HALF);
    }

    /// First input index the kept outputs read.
    pub fn lo(&self) -> usize {
        self.lo
    }

    /// One past the last input index the kept outputs read.
    pub fn hi(&self) -> usize {
        self.hi
    }

    /// Number of kept outputs.
    pub fn len(&self) -> usize {
        self.starts.len()
    }

    /// Whether no output is kept.
    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }
}

/// A rectangle of an interleaved RGB `u8` image: `rows` rows of `width` pixels, row `r` at
/// `data[r * stride..]`.
#[derive(Clone, Copy)]
pub struct Plane<'a> {
    pub data: &'a [u8],
    pub stride: usize,
    pub width: usize,
    pub rows: usize,
}

impl Plane<'_> {
    fn row(&self, r: usize) -> &[u8] {
        &self.data[r * self.stride..][..self.width * 3]
    }
}

/// Calls `$kernel` compiled for AVX2 when the CPU has it, else `$generic` (the code for the baseline
/// target). Pillow's 32-bit products vectorise only with a native `i32` multiply, which baseline x86-64
/// lacks.
macro_rules! dispatch {
    ($generic:ident, $kernel:ident, ($($arg:expr),*)) => {{
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2, checked just above.
                return unsafe { $kernel($($arg),*) };
            }
        }
        $generic($($arg),*)
    }};
}

/// Horizontal pass: every row of `src` (which spans `taps.lo()..taps.hi()`) resampled to the kept
/// columns, written to `dst` as `src.rows` rows of `taps.len()` pixels. `block` is reused scratch.
pub fn horizontal(src: &Plane, taps: &AxisTaps, block: &mut Vec<Column>, dst: &mut [u8]) {
    if taps.is_empty() {
        return;
    }
    debug_assert_eq!(src.width, taps.hi - taps.lo);
    debug_assert!(dst.len() >= src.rows * taps.len() * 3);
    if taps.halves {
        dispatch!(
            horizontal_halves,
            horizontal_halves_avx2,
            (src, taps, block, dst)
        )
    } else {
        dispatch!(
            horizontal_blocks_portable,
            horizontal_blocks_avx2,
            (src, taps, block, dst)
        )
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn horizontal_halves_avx2(src: &Plane, taps: &AxisTaps, block: &mut Vec<Column>, dst: &mut [u8]) {
    horizontal_halves(src, taps, block, dst)
}

#[inline(always)]
fn horizontal_halves(src: &Plane, taps: &AxisTaps, block: &mut Vec<Column>, dst: &mut [u8]) {
    let n_out = taps.len();
    let dst_stride = n_out * 3;
    let first = taps.starts[0];
    let consecutive = taps
        .starts
        .iter()
        .enumerate()
        .all(|(i, &start)| start == first + 2 * i);
    // Scratch for the averages of every byte with the same byte of the next pixel.
    let span = n_out * 6;
    block.resize(span.div_ceil(size_of::<Column>()), [[0; 4]; BLOCK_ROWS]);
    let pairs = &mut block.as_flattened_mut().as_flattened_mut()[..span - 3];
    for r in 0..src.rows {
        let row = src.row(r);
        let out = &mut dst[r * dst_stride..][..dst_stride];
        if consecutive {
            // Average the whole span in one vectorisable pass, then keep the first pixel of each pair.
            let row = &row[first * 3..first * 3 + span];
            for ((p, &a), &b) in pairs.iter_mut().zip(row).zip(&row[3..]) {
                *p = average(a, b);
            }
            let (rest, last) = out.split_at_mut(dst_stride - 3);
            for (o, p) in rest.chunks_exact_mut(3).zip(pairs.chunks_exact(6)) {
                o.copy_from_slice(&p[..3]);
            }
            last.copy_from_slice(&pairs[span - 6..span - 3]);
        } else {
            for (px, &start) in out.chunks_exact_mut(3).zip(&taps.starts) {
                let pair = &row[start * 3..start * 3 + 6];
                for c in 0..3 {
                    px[c] = average(pair[c], pair[c + 3]);
                }
            }
        }
    }
}

/// One transposed column: the pixel at one x in each of BLOCK_ROWS consecutive rows, padded to 4 bytes
/// (the fourth is ignored) so that pixels move with single 4-byte copies.
pub type Column = [[u8; 4]; BLOCK_ROWS];

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn horizontal_blocks_avx2(src: &Plane, taps: &AxisTaps, block: &mut Vec<Column>, dst: &mut [u8]) {
    horizontal_blocks(src, taps, block, dst, |columns, weights| {
        avx2::column_dot(columns, weights)
    })
}

fn horizontal_blocks_portable(
    src: &Plane,
    taps: &AxisTaps,
    block: &mut Vec<Column>,
    dst: &mut [u8],
) {
    horizontal_blocks(src, taps, block, dst, column_dot)
}

/// One output pixel for each of the BLOCK_ROWS rows: the weighted sum of consecutive transposed columns.
#[inline(always)]
fn column_dot(columns: &[Column], weights: &[i32]) -> Column {
    let mut acc = [[ROUND_HALF; 4]; BLOCK_ROWS];
    for (column, &w) in columns.iter().zip(weights) {
        for (a, px) in acc.iter_mut().zip(column) {
            for (a, &p) in a.iter_mut().zip(px) {
                *a += w * i32::from(p);
            }
        }
    }
    acc.map(|a| a.map(clip8))
}

#[inline(always)]
fn horizontal_blocks(
    src: &Plane,
    taps: &AxisTaps,
    block: &mut Vec<Column>,
    dst: &mut [u8],
    dot: impl Fn(&[Column], &[i32]) -> Column,
) {
    let dst_stride = taps.len() * 3;
    let n_out = taps.len();
    block.clear();
    block.resize(src.width, [[0; 4]; BLOCK_ROWS]);
    for r0 in (0..src.rows).step_by(BLOCK_ROWS) {
        let n_rows = BLOCK_ROWS.min(src.rows - r0);
        for r in 0..n_rows {
            let row = src.row(r0 + r);
            // Four bytes at a time: the fourth is the next pixel's first, and ignored. The last pixel
            // has no byte after it.
            let Some((last, rest)) = block.split_last_mut() else {
                return;
            };
            for (column, quad) in rest.iter_mut().zip(row.windows(4).step_by(3)) {
                column[r].copy_from_slice(quad);
            }
            let tail = &row[row.len() - 3..];
            last[r] = [tail[0], tail[1], tail[2], 0];
        }
        let out = &mut dst[r0 * dst_stride..];
        for (i, (&start, weights)) in taps
            .starts
            .iter()
            .zip(taps.weights.chunks_exact(taps.k))
            .enumerate()
        {
            let px = dot(&block[start..start + taps.k], weights);
            for (r, px) in px.iter().enumerate().take(n_rows) {
                let at = r * dst_stride + i * 3;
                // A 4-byte store is cheaper; its extra byte is overwritten by the next pixel of the row.
                if i + 1 < n_out {
                    out[at..at + 4].copy_from_slice(px);
                } else {
                    out[at..at + 3].copy_from_slice(&px[..3]);
                }
            }
        }
    }
}

/// Hand-vectorised kernels: LLVM vectorises `column_dot` across taps (with byte gathers) rather than across
/// lanes, so the AVX2 version spells the lane-wise multiply-add out.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{Column, PRECISION_BITS, ROUND_HALF};

    /// Eight bytes (two padded pixels) zero-extended to eight `i32` lanes.
    #[target_feature(enable = "avx2")]
    fn widen(bytes: &[u8; 8]) -> __m256i {
        _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(i64::from_le_bytes(*bytes)))
    }

    /// Same as `super::column_dot`.
    #[target_feature(enable = "avx2")]
    pub(super) fn column_dot(columns: &[Column], weights: &[i32]) -> Column {
        // acc[g] holds rows 2g and 2g + 1, four lanes each.
        let mut acc = [_mm256_set1_epi32(ROUND_HALF); 4];
        for (column, &w) in columns.iter().zip(weights) {
            let w = _mm256_set1_epi32(w);
            let (pairs, _) = column.as_flattened().as_chunks::<8>();
            for (a, pair) in acc.iter_mut().zip(pairs) {
                *a = _mm256_add_epi32(*a, _mm256_mullo_epi32(widen(pair), w));
            }
        }
        let [a0, a1, a2, a3] = acc.map(|a| _mm256_srai_epi32::<{ PRECISION_BITS as i32 }>(a));
        // acc >> 22 lies in -512..512, so the two unsigned-saturating packs clip to 0..=255 exactly.
        // Within 128-bit halves they interleave: 32-bit lanes come out as rows 0 2 4 6 1 3 5 7.
        let bytes = _mm256_packus_epi16(_mm256_packus_epi32(a0, a1), _mm256_packus_epi32(a2, a3));
        let rows = _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        // SAFETY: a 256-bit vector and eight 4-byte arrays are the same 32 bytes of plain integers.
        unsafe { std::mem::transmute::<__m256i, Column>(rows) }
    }
}

/// Vertical pass: the kept rows resampled from `src` (rows of `row_len` bytes every `src_stride` bytes,
/// spanning `taps.lo()..taps.hi()`), written to `dst` with row stride `dst_stride`. `acc` is reused scratch.
pub fn vertical(
    src: &[u8],
    src_stride: usize,
    row_len: usize,
    taps: &AxisTaps,
    acc: &mut Vec<i32>,
    dst: &mut [u8],
    dst_stride: usize,
) {
    if taps.is_empty() {
        return;
    }
    dispatch!(
        vertical_rows,
        vertical_rows_avx2,
        (src, src_stride, row_len, taps, acc, dst, dst_stride)
    )
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn vertical_rows_avx2(
    src: &[u8],
    src_stride: usize,
    row_len: usize,
    taps: &AxisTaps,
    acc: &mut Vec<i32>,
    dst: &mut [u8],
    dst_stride: usize,
) {
    vertical_rows(src, src_stride, row_len, taps, acc, dst, dst_stride)
}

#[inline(always)]
fn vertical_rows(
    src: &[u8],
    src_stride: usize,
    row_len: usize,
    taps: &AxisTaps,
    acc: &mut Vec<i32>,
    dst: &mut [u8],
    dst_stride: usize,
) {
    let row = |r: usize| &src[r * src_stride..][..row_len];
    if taps.halves {
        for (i, &start) in taps.starts.iter().enumerate() {
            let out = &mut dst[i * dst_stride..][..row_len];
            for ((o, &a), &b) in out.iter_mut().zip(row(start)).zip(row(start + 1)) {
                *o = average(a, b);
            }
        }
        return;
    }
    acc.clear();
    acc.resize(row_len, 0);
    for (i, (&start, weights)) in taps
        .starts
        .iter()
        .zip(taps.weights.chunks_exact(taps.k))
        .enumerate()
    {
        acc.fill(ROUND_HALF);
        for (j, &w) in weights.iter().enumerate() {
            for (a, &p) in acc.iter_mut().zip(row(start + j)) {
                *a += w * i32::from(p);
            }
        }
        let out = &mut dst[i * dst_stride..][..row_len];
        for (o, &a) in out.iter_mut().zip(acc.iter()) {
            *o = clip8(a);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weights(
        in_size: usize,
        out_size: usize,
        filter: Filter,
        out_index: usize,
    ) -> (usize, Vec<f64>) {
        let mut w = Vec::new();
        let xmin = pillow_weights(in_size, out_size, filter, out_index, &mut w);
        (xmin, w)
    }

    #[test]
    fn fixed_point_rounds_half_away_from_zero() {
        assert_eq!(fixed_point(1.0), 1 << 22);
        assert_eq!(fixed_point(0.5), 1 << 21);
        assert_eq!(fixed_point(-0.25), -(1 << 20));
        // 1.5 / 2^22 sits exactly between two steps: away from zero on both sides.
        assert_eq!(fixed_point(1.5 / 4194304.0), 2);
        assert_eq!(fixed_point(-1.5 / 4194304.0), -2);
        assert_eq!(fixed_point(1.4 / 4194304.0), 1);
    }

    #[test]
    fn bicubic_kernel_values() {
        let f = Filter::Bicubic;
        assert_eq!(f.weight(0.0), 1.0);
        assert_eq!(f.weight(1.0), 0.0);
        assert_eq!(f.weight(2.0), 0.0);
        // Keys a = -0.5: 1.5|x|^3 - 2.5|x|^2 + 1 inside, -0.5|x|^3 + 2.5|x|^2 - 4|x| + 2 outside.
        assert_eq!(f.weight(0.5), 0.5625);
        assert_eq!(f.weight(-0.5), 0.5625);
        assert_eq!(f.weight(1.5), -0.0625);
    }

    #[test]
    fn even_box_halving_averages_pairs() {
        for out_index in [0, 1, 7] {
            let (xmin, w) = weights(16, 8, Filter::Box, out_index);
            assert_eq!(xmin, 2 * out_index);
            assert_eq!(w, vec![0.5, 0.5]);
        }
        let mut taps = AxisTaps::default();
        taps.build(16, 8, Filter::Box, 0..8, false);
        assert!(taps.halves);
        // An odd size halved is not a 2x reduction: 5 -> 2 has 2.5-pixel windows.
        taps.build(5, 2, Filter::Box, 0..2, false);
        assert!(!taps.halves);
        // Output 0: centre 1.25, support 1.25, inputs 0..3 at scaled offsets -0.3, 0.1 and 0.5; the box
        // includes +0.5, so all three count.
        let (xmin, w) = weights(5, 2, Filter::Box, 0);
        assert_eq!(xmin, 0);
        assert!(w.iter().all(|&x| x == 1.0 / 3.0));
        // Output 1: centre 3.75, inputs 3 and 4 (input 5 is past the edge).
        let (xmin, w) = weights(5, 2, Filter::Box, 1);
        assert_eq!((xmin, w), (3, vec![0.5, 0.5]));
    }

    #[test]
    fn bicubic_identity_scale_is_exact() {
        // Same size: taps at distance 0 (weight 1) and at integer distances (weight 0).
        let (xmin, w) = weights(10, 10, Filter::Bicubic, 5);
        assert_eq!(xmin, 4);
        assert_eq!(w, vec![0.0, 1.0, 0.0, 0.0]);
    }

    #[test]
    fn bicubic_upscale_by_two_by_hand() {
        // 4 -> 8: output 2 has centre 1.25; inputs 0..=3 sit at offsets -0.75, 0.25, 1.25 and 2.25 (cut).
        let (xmin, w) = weights(4, 8, Filter::Bicubic, 2);
        assert_eq!(xmin, 0);
        let expect = [
            1.5 * 0.421875 - 2.5 * 0.5625 + 1.0,               // |x| = 0.75
            1.5 * 0.015625 - 2.5 * 0.0625 + 1.0,               // |x| = 0.25
            (((1.25 - 5.0) * 1.25 + 8.0) * 1.25 - 4.0) * -0.5, // |x| = 1.25
        ];
        let sum: f64 = expect.iter().sum();
        assert_eq!(w.len(), 3);
        for (got, want) in w.iter().zip(expect) {
            assert!((got - want / sum).abs() < 1e-15, "{got} vs {}", want / sum);
        }
    }

    #[test]
    fn fixed_weights_sum_to_one() {
        for (in_size, out_size) in [(500, 341), (375, 256), (17, 256), (1000, 3), (3, 1), (1, 5)] {
            for filter in [Filter::Box, Filter::Bicubic] {
                let mut taps = AxisTaps::default();
                taps.build(in_size, out_size, filter, 0..out_size, false);
                for row in taps.weights.chunks_exact(taps.k) {
                    let sum: i32 = row.iter().sum();
                    // Each weight rounds by at most a half step.
                    assert!(
                        (sum - (1 << 22)).abs() <= taps.k as i32 / 2 + 1,
                        "{in_size}->{out_size}: {sum}"
                    );
                }
                assert_eq!((taps.lo, taps.hi), (0, in_size));
            }
        }
    }

    #[test]
    fn kept_range_needs_only_its_inputs() {
        let mut taps = AxisTaps::default();
        // 100 -> 50 bicubic: output o is centred on input 2o + 1 with support 4.
        taps.build(100, 50, Filter::Bicubic, 10..20, false);
        assert_eq!(taps.len(), 10);
        assert_eq!(taps.lo(), (21.0f64 - 4.0 + 0.5) as usize);
        assert_eq!(taps.hi(), (39.0f64 + 4.0 + 0.5) as usize);
        let forward: Vec<usize> = taps.starts.clone();
        taps.build(100, 50, Filter::Bicubic, 10..20, true);
        let mut backward = taps.starts.clone();
        backward.reverse();
        assert_eq!(forward, backward);
        // Reusing the tables for the same arguments, rebuilding them for others.
        taps.build(100, 50, Filter::Bicubic, 10..20, true);
        assert_eq!(taps.starts.first(), backward.last());
        taps.build(100, 50, Filter::Box, 10..20, false);
        assert_eq!(
            (taps.lo(), taps.k, taps.starts[0], taps.halves),
            (20, 2, 0, true)
        );
    }

    /// Straightforward per-pixel resample of one channel along rows, as Pillow loops it.
    fn reference_row(row: &[u8], out_size: usize, filter: Filter) -> Vec<u8> {
        let mut w = Vec::new();
        (0..out_size)
            .map(|o| {
                let xmin = pillow_weights(row.len(), out_size, filter, o, &mut w);
                let acc = w.iter().enumerate().fold(ROUND_HALF, |acc, (j, &wt)| {
                    acc + fixed_point(wt) * i32::from(row[xmin + j])
                });
                clip8(acc)
            })
            .collect()
    }

    #[test]
    fn passes_match_the_per_pixel_loop() {
        let (width, rows) = (37, 11);
        let img: Vec<u8> = (0..width * rows * 3)
            .map(|i| (i * 7919 % 251) as u8)
            .collect();
        for (out_w, filter) in [
            (13, Filter::Bicubic),
            (60, Filter::Bicubic),
            (18, Filter::Box),
            (5, Filter::Box),
        ] {
            let mut taps = AxisTaps::default();
            taps.build(width, out_w, filter, 2..out_w - 1, false);
            let (lo, hi) = (taps.lo(), taps.hi());
            let plane = Plane {
                data: &img[lo * 3..],
                stride: width * 3,
                width: hi - lo,
                rows,
            };
            let mut dst = vec![0; rows * taps.len() * 3];
            horizontal(&plane, &taps, &mut Vec::new(), &mut dst);
            // The dispatched kernel may be the AVX2 one; the portable one must agree.
            let mut portable = vec![0; dst.len()];
            if !taps.halves {
                horizontal_blocks_portable(&plane, &taps, &mut Vec::new(), &mut portable);
                assert_eq!(portable, dst);
            }
            for r in 0..rows {
                for c in 0..3 {
                    let channel: Vec<u8> =
                        (0..width).map(|x| img[(r * width + x) * 3 + c]).collect();
                    let want = reference_row(&channel, out_w, filter);
                    for (i, o) in (2..out_w - 1).enumerate() {
                        assert_eq!(
                            dst[(r * taps.len() + i) * 3 + c],
                            want[o],
                            "row {r} col {o} ch {c}"
                        );
                    }
                }
            }
            // The vertical pass on the transposed problem: rows of one pixel, reading down a column.
            let column: Vec<u8> = (0..width).map(|x| img[x * 3]).collect();
            let mut v = AxisTaps::default();
            v.build(width, out_w, filter, 0..out_w, false);
            let mut out = vec![0; out_w];
            vertical(&column, 1, 1, &v, &mut Vec::new(), &mut out, 1);
            assert_eq!(out, reference_row(&column, out_w, filter));
        }
    }
}
