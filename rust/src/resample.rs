//! Pillow's separable 8-bit resampler (`src/libImaging/Resample.c`), reproduced bit for bit for interleaved
//! RGB, but evaluated only for the output pixels a caller keeps.
//!
//! Pillow resizes in two passes, rounding to `u8` in between: horizontal first, except (since Pillow 13,
//! python-pillow/Pillow#9549) when the height shrinks by more than twice as many pixels as the width. Each output sample is a
//! fixed-point dot product of its own input taps, so computing a subset of outputs gives exactly the values
//! the full resize would. Coefficients follow `precompute_coeffs` + `normalize_coeffs_8bpc`: weights in
//! double, normalised by their sum, then rounded away from zero to 22-bit fixed point; the accumulator starts
//! at one half and the result is clipped to 0..=255.

use std::ops::Range;

/// Fractional bits of Pillow's fixed-point weights: 32 bits minus 8 for the pixel, 2 for overshoot headroom.
pub const PRECISION_BITS: u32 = 32 - 8 - 2;
/// Added before the final shift so that it rounds half up, as Pillow does.
const ROUND_HALF: i32 = 1 << (PRECISION_BITS - 1);
/// Fixed-point weight of one half: the exact weight of both taps of an even 2× BOX reduction.
const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// Rows transposed together in the horizontal pass, so one weight multiplies a whole column of pixels.
const BLOCK_ROWS: usize = 8;
/// `i32` lanes per transposed column: `BLOCK_ROWS` pixels of 3 channels.
const LANES: usize = BLOCK_ROWS * 3;

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

/// A rectangle of an interleaved RGB `u8` image: `rows` rows of `width` pixels, row `r` at `data[r * stride..]`.
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

/// Horizontal pass: every row of `src` (which spans `taps.lo()..taps.hi()`) resampled to the kept
/// columns, written to `dst` as `src.rows` rows of `taps.len()` pixels. `block` is reused scratch.
pub fn horizontal(src: &Plane, taps: &AxisTaps, block: &mut Vec<u8>, dst: &mut [u8]) {
    if taps.is_empty() {
        return;
    }
    let dst_stride = taps.len() * 3;
    debug_assert_eq!(src.width, taps.hi - taps.lo);
    debug_assert!(dst.len() >= src.rows * dst_stride);
    if taps.halves {
        for r in 0..src.rows {
            let row = src.row(r);
            let out = &mut dst[r * dst_stride..][..dst_stride];
            for (&start, px) in taps.starts.iter().zip(out.chunks_exact_mut(3)) {
                let pair = &row[start * 3..start * 3 + 6];
                for c in 0..3 {
                    px[c] = average(pair[c], pair[c + 3]);
                }
            }
        }
        return;
    }
    // Transpose BLOCK_ROWS rows so that a column of pixels is contiguous: each weight then multiplies
    // LANES values at once, which the compiler turns into vector multiply-adds.
    block.clear();
    block.resize(src.width * LANES, 0);
    let (columns, _) = block.as_chunks_mut::<LANES>();
    for r0 in (0..src.rows).step_by(BLOCK_ROWS) {
        let n_rows = BLOCK_ROWS.min(src.rows - r0);
        for r in 0..n_rows {
            for (column, px) in columns.iter_mut().zip(src.row(r0 + r).chunks_exact(3)) {
                column[r * 3..r * 3 + 3].copy_from_slice(px);
            }
        }
        let out = &mut dst[r0 * dst_stride..];
        for (i, (&start, weights)) in taps
            .starts
            .iter()
            .zip(taps.weights.chunks_exact(taps.k))
            .enumerate()
        {
            let mut acc = [ROUND_HALF; LANES];
            for (column, &w) in columns[start..start + taps.k].iter().zip(weights) {
                for (a, &p) in acc.iter_mut().zip(column) {
                    *a += w * i32::from(p);
                }
            }
            for r in 0..n_rows {
                let px = &mut out[r * dst_stride + i * 3..][..3];
                for c in 0..3 {
                    px[c] = clip8(acc[r * 3 + c]);
                }
            }
        }
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
