//! Patchify / unpatchify: between images and JiT's patch tokens.
//!
//! Tokens are in row-major patch order; inside a token the order is (row in patch, column in patch,
//! channel), the layout JiT's own unpatchify uses (reshape (N,h,w,p,p,C), einsum 'nhwpqc->nchpwq').
//!
//! Both directions are one permutation of a 6-axis array, so both are one strided copy into a
//! contiguous output: the source may have any strides (negative, transposed, sliced with steps). Axes
//! that are contiguous together are merged first, so the common channels-last case becomes copies of
//! whole rows of `p*C` elements; channel-first becomes a small transpose per patch row.
//! The code is generic over the element type: it only moves elements, so callers pass any `Copy`
//! type of the right size (`u16` for float16 works as well as `half::f16`).

use rayon::prelude::*;
use thiserror::Error;

/// Outputs smaller than this many bytes are copied on the calling thread: below it, handing work to
/// rayon costs more than the copy.
const PARALLEL_MIN_BYTES: usize = 1 << 20;
/// Bytes of output per rayon task: large enough to amortise scheduling, small enough to balance.
const TASK_BYTES: usize = 256 << 10;
/// Outputs at least this large are written with non-temporal (streaming) stores where the kernel
/// allows: they cannot stay in cache anyway, and ordinary stores first read every destination line
/// (read-for-ownership), a third pass over memory that a plain memcpy of this size does not pay.
const STREAM_MIN_BYTES: usize = 8 << 20;
/// Innermost axes no longer than this are copied as a small transpose (channels of a channel-first
/// image) rather than as a strided gather.
const TRANSPOSE_MAX_COLS: usize = 16;

/// The most axes any permutation here needs: (batch, grid row, grid column, row in patch,
/// column in patch, channel).
const MAX_AXES: usize = 6;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PatchError {
    #[error("p must be >= 1, got {0}")]
    PatchSize(usize),
    #[error("height {height} and width {width} must be multiples of p={p}")]
    NotMultiple {
        height: usize,
        width: usize,
        p: usize,
    },
    #[error(
        "expected {expected_tokens} tokens of length a multiple of p*p={pp} for height {height}, \
         width {width} and p={p}, got {tokens} tokens of length {token_len}"
    )]
    TokenShape {
        tokens: usize,
        token_len: usize,
        expected_tokens: usize,
        pp: usize,
        height: usize,
        width: usize,
        p: usize,
    },
    #[error("the strided view reaches outside its buffer of {len} elements")]
    OutOfBounds { len: usize },
    #[error("the output holds {got} elements, {expected} are needed")]
    OutputLength { got: usize, expected: usize },
}

/// A read-only strided view of a buffer: element `(i0, i1, ..)` is `data[offset + Σ ik*strides[k]]`.
/// Strides are in elements and may be negative or zero.
#[derive(Debug, Clone, Copy)]
pub struct Strided<'a, T, const N: usize> {
    data: &'a [T],
    offset: usize,
    shape: [usize; N],
    strides: [isize; N],
}

impl<'a, T, const N: usize> Strided<'a, T, N> {
    /// Checks that every element the view can reach lies inside `data`.
    pub fn new(
        data: &'a [T],
        offset: usize,
        shape: [usize; N],
        strides: [isize; N],
    ) -> Result<Self, PatchError> {
        let out_of_bounds = PatchError::OutOfBounds { len: data.len() };
        if shape.contains(&0) {
            return Ok(Self {
                data,
                offset,
                shape,
                strides,
            });
        }
        let (mut low, mut high) = (offset as i128, offset as i128);
        for (&n, &s) in shape.iter().zip(&strides) {
            let reach = (n as i128 - 1) * s as i128;
            if reach < 0 {
                low += reach;
            } else {
                high += reach;
            }
        }
        if low < 0 || high >= data.len() as i128 {
            return Err(out_of_bounds);
        }
        Ok(Self {
            data,
            offset,
            shape,
            strides,
        })
    }

    /// A contiguous row-major view of `data` with the given shape.
    pub fn contiguous(data: &'a [T], shape: [usize; N]) -> Result<Self, PatchError> {
        let mut strides = [0isize; N];
        let mut step = 1usize;
        for k in (0..N).rev() {
            strides[k] = step as isize;
            step *= shape[k];
        }
        Self::new(data, 0, shape, strides)
    }

    pub fn shape(&self) -> [usize; N] {
        self.shape
    }

    /// The items `range` of the first axis (a chunk of a batch), as a view of the same buffer.
    pub fn rows(&self, range: std::ops::Range<usize>) -> Result<Self, PatchError> {
        let out_of_bounds = PatchError::OutOfBounds {
            len: self.data.len(),
        };
        if range.start > range.end || range.end > self.shape[0] {
            return Err(out_of_bounds);
        }
        let mut shape = self.shape;
        shape[0] = range.len();
        if shape.contains(&0) {
            return Self::new(self.data, self.offset, shape, self.strides);
        }
        let offset = self.offset as i128 + range.start as i128 * self.strides[0] as i128;
        let offset = usize::try_from(offset).map_err(|_| out_of_bounds)?;
        Self::new(self.data, offset, shape, self.strides)
    }
}

/// Patch tokens of images viewed as (B, H, W, C) (a channel-first array is passed as a view with
/// permuted strides). Writes `out` as (B, H/p * W/p, p*p*C), row-major.
pub fn patchify<T: Copy + Send + Sync>(
    image: &Strided<'_, T, 4>,
    p: usize,
    out: &mut [T],
) -> Result<(), PatchError> {
    let [b, height, width, c] = image.shape;
    check_grid(height, width, p)?;
    let (gh, gw) = (height / p, width / p);
    let [sb, sh, sw, sc] = image.strides;
    let pi = p as isize;
    strided_copy(
        image.data,
        image.offset,
        [b, gh, gw, p, p, c],
        [sb, sh * pi, sw * pi, sh, sw, sc],
        out,
    )
}

/// Images from patch tokens viewed as (B, N, D) with N = (height/p)*(width/p) and D = p*p*C.
/// Writes `out` row-major as (B, height, width, C) when `channels_last`, else (B, C, height, width).
/// Returns C.
pub fn unpatchify<T: Copy + Send + Sync>(
    tokens: &Strided<'_, T, 3>,
    p: usize,
    height: usize,
    width: usize,
    channels_last: bool,
    out: &mut [T],
) -> Result<usize, PatchError> {
    let [b, n, d] = tokens.shape;
    let c = token_channels(n, d, p, height, width)?;
    let (gh, gw) = (height / p, width / p);
    let [tb, tn, td] = tokens.strides;
    let (pi, ci, gwi) = (p as isize, c as isize, gw as isize);
    // Source strides of the output's axes: grid row, row in patch, grid column, column in patch, channel.
    let (s_gh, s_pr, s_gw, s_pc, s_c) = (tn * gwi, td * pi * ci, tn, td * ci, td);
    let (dims, strides) = if channels_last {
        ([b, gh, p, gw, p, c], [tb, s_gh, s_pr, s_gw, s_pc, s_c])
    } else {
        ([b, c, gh, p, gw, p], [tb, s_c, s_gh, s_pr, s_gw, s_pc])
    };
    strided_copy(tokens.data, tokens.offset, dims, strides, out)?;
    Ok(c)
}

/// The channel count C of `n` tokens of length `d` that unpatchify into a `height`×`width` image,
/// or why they can't.
pub fn token_channels(
    n: usize,
    d: usize,
    p: usize,
    height: usize,
    width: usize,
) -> Result<usize, PatchError> {
    check_grid(height, width, p)?;
    let pp = p * p;
    if n != (height / p) * (width / p) || !d.is_multiple_of(pp) || d == 0 {
        return Err(PatchError::TokenShape {
            tokens: n,
            token_len: d,
            expected_tokens: (height / p) * (width / p),
            pp,
            height,
            width,
            p,
        });
    }
    Ok(d / pp)
}

/// Whether a `height`×`width` image splits into p×p patches.
pub fn check_grid(height: usize, width: usize, p: usize) -> Result<(), PatchError> {
    if p == 0 {
        return Err(PatchError::PatchSize(p));
    }
    if !height.is_multiple_of(p) || !width.is_multiple_of(p) {
        return Err(PatchError::NotMultiple { height, width, p });
    }
    Ok(())
}

/// How the innermost axes of a copy are moved, once per run of `len()` output elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Inner {
    /// `len` source elements are contiguous: one memcpy.
    Run { len: usize },
    /// out[i*cols + j] = src[i + j*col_stride]: read `cols` contiguous rows, write them interleaved.
    Transpose {
        rows: usize,
        cols: usize,
        col_stride: isize,
    },
    /// out[i] = src[i*stride].
    Gather { len: usize, stride: isize },
}

impl Inner {
    fn len(self) -> usize {
        match self {
            Inner::Run { len } | Inner::Gather { len, .. } => len,
            Inner::Transpose { rows, cols, .. } => rows * cols,
        }
    }
}

#[inline]
fn run<T: Copy>(src: &[T], base: isize, out: &mut [T]) {
    let start = base as usize;
    out.copy_from_slice(&src[start..start + out.len()]);
}

/// A run of a length known at compile time: an inlined copy instead of a memcpy call, which dominates
/// the short rows of channels-last patches (p·C = 48 elements for p = 16, RGB).
#[inline]
fn run_fixed<T: Copy, const N: usize>(src: &[T], base: isize, out: &mut [T]) {
    let start = base as usize;
    let from: &[T; N] = src[start..start + N]
        .try_into()
        .expect("run length checked by the caller");
    let to: &mut [T; N] = out.try_into().expect("run length checked by the caller");
    *to = *from;
}

#[inline]
fn transpose_any<T: Copy>(src: &[T], base: isize, cols: usize, col_stride: isize, out: &mut [T]) {
    let rows = out.len() / cols;
    for j in 0..cols {
        let start = (base + j as isize * col_stride) as usize;
        let row = &src[start..start + rows];
        for (dst, &v) in out[j..].iter_mut().step_by(cols).zip(row) {
            *dst = v;
        }
    }
}

#[inline]
fn gather_any<T: Copy>(src: &[T], base: isize, stride: isize, out: &mut [T]) {
    for (i, dst) in out.iter_mut().enumerate() {
        *dst = src[(base + i as isize * stride) as usize];
    }
}

/// Non-temporal copies of contiguous runs whose byte length is a multiple of 16 into 16-byte-aligned
/// output (x86-64 only: SSE2 is part of its baseline, so no runtime detection is needed).
#[cfg(target_arch = "x86_64")]
mod streaming {
    use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_sfence, _mm_stream_si128};

    /// Whether `Inner::Run` of `len` elements of `T` can stream into `out`: every run then starts
    /// on a 16-byte boundary because runs tile the output from its (aligned) start.
    pub fn applies<T>(len: usize, out: &[T]) -> bool {
        (len * size_of::<T>()).is_multiple_of(16) && (out.as_ptr() as usize).is_multiple_of(16)
    }

    /// `run`, with the output written around the cache. `CHUNKS` 16-byte chunks; 0 means "as many
    /// as `out` holds" (a run length not known at compile time).
    #[inline]
    pub fn run<T: Copy, const CHUNKS: usize>(src: &[T], base: isize, out: &mut [T]) {
        let start = base as usize;
        let from = &src[start..start + out.len()];
        let chunks = if CHUNKS == 0 {
            size_of_val(out) / 16
        } else {
            CHUNKS
        };
        assert!(chunks * 16 == size_of_val(out) && (out.as_ptr() as usize).is_multiple_of(16));
        let (s, d) = (
            from.as_ptr() as *const __m128i,
            out.as_mut_ptr() as *mut __m128i,
        );
        for i in 0..chunks {
            // SAFETY: `from` and `out` are both `chunks * 16` bytes long (asserted above, and `from`
            // has `out.len()` elements); `d` is 16-byte aligned as _mm_stream_si128 requires, and
            // `_mm_loadu_si128` accepts any alignment. SSE2 is always present on x86-64.
            unsafe { _mm_stream_si128(d.add(i), _mm_loadu_si128(s.add(i))) }
        }
    }

    /// Orders the streaming stores before whatever this thread does next (handing the output to
    /// another thread included): non-temporal stores are weakly ordered.
    pub fn fence() {
        // SAFETY: SSE is part of the x86-64 baseline.
        unsafe { _mm_sfence() }
    }
}

/// `Inner::Transpose` with `K` columns.
#[inline]
fn transpose<T: Copy, const K: usize>(src: &[T], base: isize, col_stride: isize, out: &mut [T]) {
    let rows = out.len() / K;
    let columns: [&[T]; K] = std::array::from_fn(|j| {
        let start = (base + j as isize * col_stride) as usize;
        &src[start..start + rows]
    });
    let (pixels, _) = out.as_chunks_mut::<K>();
    for (i, pixel) in pixels.iter_mut().enumerate() {
        for (dst, column) in pixel.iter_mut().zip(&columns) {
            *dst = column[i];
        }
    }
}

/// `Inner::Gather` with a stride of `K` elements.
#[inline]
fn gather<T: Copy, const K: usize>(src: &[T], base: isize, out: &mut [T]) {
    // Gather runs always have len >= 2: Plan drops unit axes.
    let len = out.len();
    let start = base as usize;
    // The last element read is at (len-1)*K; reading whole K-chunks could run past the buffer.
    let (chunks, _) = src[start..start + (len - 1) * K].as_chunks::<K>();
    for (dst, chunk) in out.iter_mut().zip(chunks) {
        *dst = chunk[0];
    }
    out[len - 1] = src[start + (len - 1) * K];
}

/// A copy of a strided N-axis view into a contiguous row-major output, after merging axes.
/// Output blocks are `rep` inner runs, one per step of the innermost outer axis: looping that axis
/// inside a block keeps the odometer's per-block cost off the short runs.
#[derive(Debug, Clone, Copy)]
struct Plan {
    outer_dims: [usize; MAX_AXES],
    outer_strides: [isize; MAX_AXES],
    outer_len: usize,
    rep: usize,
    rep_stride: isize,
    inner: Inner,
}

impl Plan {
    fn new(dims: [usize; MAX_AXES], strides: [isize; MAX_AXES]) -> Self {
        // Drop unit axes, then merge neighbours whose source memory is contiguous together: the
        // output is contiguous, so merging never changes where an element goes.
        let mut d = [1usize; MAX_AXES];
        let mut s = [0isize; MAX_AXES];
        let mut k = 0;
        for (&n, &st) in dims.iter().zip(&strides) {
            if n == 1 {
                continue;
            }
            if k > 0 && s[k - 1] == st * n as isize {
                d[k - 1] *= n;
                s[k - 1] = st;
            } else {
                d[k] = n;
                s[k] = st;
                k += 1;
            }
        }
        if k == 0 {
            // A single element.
            d[0] = 1;
            s[0] = 1;
            k = 1;
        }
        let (inner, n_inner) = if s[k - 1] == 1 {
            (Inner::Run { len: d[k - 1] }, 1)
        } else if k >= 2 && s[k - 2] == 1 && d[k - 1] <= TRANSPOSE_MAX_COLS {
            let inner = Inner::Transpose {
                rows: d[k - 2],
                cols: d[k - 1],
                col_stride: s[k - 1],
            };
            (inner, 2)
        } else {
            (
                Inner::Gather {
                    len: d[k - 1],
                    stride: s[k - 1],
                },
                1,
            )
        };
        let mut outer_len = k - n_inner;
        let (mut rep, mut rep_stride) = (1, 0);
        if outer_len > 0 {
            outer_len -= 1;
            (rep, rep_stride) = (d[outer_len], s[outer_len]);
        }
        let mut outer_dims = [1usize; MAX_AXES];
        let mut outer_strides = [0isize; MAX_AXES];
        outer_dims[..outer_len].copy_from_slice(&d[..outer_len]);
        outer_strides[..outer_len].copy_from_slice(&s[..outer_len]);
        Plan {
            outer_dims,
            outer_strides,
            outer_len,
            rep,
            rep_stride,
            inner,
        }
    }

    fn block_len(&self) -> usize {
        self.rep * self.inner.len()
    }

    /// Copies the blocks `first_block..` into `out` (a whole number of blocks). The kind of inner
    /// run is chosen once here, so each `walk` below is a tight loop over one kind.
    fn copy_blocks<T: Copy>(
        &self,
        src: &[T],
        offset: usize,
        first_block: usize,
        out: &mut [T],
        stream: bool,
    ) {
        let at = (src, offset, first_block);
        #[cfg(target_arch = "x86_64")]
        if let Inner::Run { len } = self.inner {
            if stream && streaming::applies::<T>(len, out) {
                match len * size_of::<T>() / 16 {
                    3 => self.walk(at, out, streaming::run::<T, 3>),
                    6 => self.walk(at, out, streaming::run::<T, 6>),
                    12 => self.walk(at, out, streaming::run::<T, 12>),
                    24 => self.walk(at, out, streaming::run::<T, 24>),
                    _ => self.walk(at, out, streaming::run::<T, 0>),
                }
                streaming::fence();
                return;
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = stream;
        match self.inner {
            // Rows of p·C elements for p in {4, 8, 16, 32} and 3 or 4 channels.
            Inner::Run { len: 12 } => self.walk(at, out, run_fixed::<T, 12>),
            Inner::Run { len: 16 } => self.walk(at, out, run_fixed::<T, 16>),
            Inner::Run { len: 24 } => self.walk(at, out, run_fixed::<T, 24>),
            Inner::Run { len: 32 } => self.walk(at, out, run_fixed::<T, 32>),
            Inner::Run { len: 48 } => self.walk(at, out, run_fixed::<T, 48>),
            Inner::Run { len: 64 } => self.walk(at, out, run_fixed::<T, 64>),
            Inner::Run { len: 96 } => self.walk(at, out, run_fixed::<T, 96>),
            Inner::Run { len: 128 } => self.walk(at, out, run_fixed::<T, 128>),
            Inner::Run { .. } => self.walk(at, out, run),
            // Image channels are 1 to 4: a fixed count lets the compiler unroll and vectorise.
            Inner::Transpose {
                cols: 2,
                col_stride,
                ..
            } => self.walk(at, out, |s, b, o| transpose::<T, 2>(s, b, col_stride, o)),
            Inner::Transpose {
                cols: 3,
                col_stride,
                ..
            } => self.walk(at, out, |s, b, o| transpose::<T, 3>(s, b, col_stride, o)),
            Inner::Transpose {
                cols: 4,
                col_stride,
                ..
            } => self.walk(at, out, |s, b, o| transpose::<T, 4>(s, b, col_stride, o)),
            Inner::Transpose {
                cols, col_stride, ..
            } => self.walk(at, out, |s, b, o| transpose_any(s, b, cols, col_stride, o)),
            Inner::Gather { stride: 2, .. } => self.walk(at, out, gather::<T, 2>),
            Inner::Gather { stride: 3, .. } => self.walk(at, out, gather::<T, 3>),
            Inner::Gather { stride: 4, .. } => self.walk(at, out, gather::<T, 4>),
            Inner::Gather { stride, .. } => {
                self.walk(at, out, |s, b, o| gather_any(s, b, stride, o))
            }
        }
    }

    /// Calls `copy(src, base, run)` for each inner run of the blocks `first_block..`, where `base` is
    /// the run's first source index. Callers guarantee (via `Strided::new`) every read is inside `src`.
    #[inline]
    fn walk<T: Copy>(
        &self,
        (src, offset, first_block): (&[T], usize, usize),
        out: &mut [T],
        copy: impl Fn(&[T], isize, &mut [T]),
    ) {
        let dims = &self.outer_dims[..self.outer_len];
        let strides = &self.outer_strides[..self.outer_len];
        let mut index = [0usize; MAX_AXES];
        let mut rest = first_block;
        let mut base = offset as isize;
        for k in (0..self.outer_len).rev() {
            index[k] = rest % dims[k];
            rest /= dims[k];
            base += index[k] as isize * strides[k];
        }
        for block in out.chunks_exact_mut(self.block_len()) {
            let mut run_base = base;
            for run in block.chunks_exact_mut(self.inner.len()) {
                copy(src, run_base, run);
                run_base += self.rep_stride;
            }
            for k in (0..self.outer_len).rev() {
                index[k] += 1;
                base += strides[k];
                if index[k] < dims[k] {
                    break;
                }
                base -= strides[k] * dims[k] as isize;
                index[k] = 0;
            }
        }
    }
}

/// Copies the view (`src`, `offset`, `dims`, `strides`) into `out` in row-major order of `dims`,
/// on the threads of the current rayon pool (the caller's `ThreadPool::install`) when the output is large.
fn strided_copy<T: Copy + Send + Sync>(
    src: &[T],
    offset: usize,
    dims: [usize; MAX_AXES],
    strides: [isize; MAX_AXES],
    out: &mut [T],
) -> Result<(), PatchError> {
    let expected: usize = dims.iter().product();
    if out.len() != expected {
        return Err(PatchError::OutputLength {
            got: out.len(),
            expected,
        });
    }
    if expected == 0 {
        return Ok(());
    }
    // Revalidate in the permuted axes so the copy below can never index outside `src`.
    let view = Strided::new(src, offset, dims, strides)?;
    let plan = Plan::new(view.shape, view.strides);
    let block = plan.block_len();
    let elem = std::mem::size_of::<T>().max(1);
    let stream = expected * elem >= STREAM_MIN_BYTES;
    if expected * elem < PARALLEL_MIN_BYTES {
        plan.copy_blocks(src, offset, 0, out, stream);
        return Ok(());
    }
    let blocks_per_task = (TASK_BYTES / (block * elem)).max(1);
    out.par_chunks_mut(block * blocks_per_task)
        .enumerate()
        .for_each(|(task, chunk)| {
            plan.copy_blocks(src, offset, task * blocks_per_task, chunk, stream);
        });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Independent reference: the definition, element by element, with explicit index arithmetic.
    fn reference_patchify(
        img: &[u32],
        b: usize,
        h: usize,
        w: usize,
        c: usize,
        p: usize,
    ) -> Vec<u32> {
        let (gh, gw) = (h / p, w / p);
        let mut out = Vec::with_capacity(img.len());
        for bi in 0..b {
            for ty in 0..gh {
                for tx in 0..gw {
                    for r in 0..p {
                        for q in 0..p {
                            for ch in 0..c {
                                let (y, x) = (ty * p + r, tx * p + q);
                                out.push(img[((bi * h + y) * w + x) * c + ch]);
                            }
                        }
                    }
                }
            }
        }
        out
    }

    fn iota(n: usize) -> Vec<u32> {
        (0..n as u32).collect()
    }

    #[test]
    fn channels_last_matches_definition() {
        for &(b, h, w, c, p) in &[
            (1, 4, 6, 3, 2),
            (2, 8, 8, 1, 4),
            (3, 6, 9, 2, 3),
            (1, 5, 5, 3, 5),
            (2, 3, 3, 4, 1),
        ] {
            let img = iota(b * h * w * c);
            let view = Strided::contiguous(&img, [b, h, w, c]).unwrap();
            let mut out = vec![0; img.len()];
            patchify(&view, p, &mut out).unwrap();
            assert_eq!(
                out,
                reference_patchify(&img, b, h, w, c, p),
                "{:?}",
                (b, h, w, c, p)
            );
        }
    }

    #[test]
    fn channel_first_view_matches_channels_last() {
        let (b, c, h, w, p) = (2, 3, 8, 12, 4);
        let chw = iota(b * c * h * w);
        // The same image, stored channels-last.
        let mut hwc = vec![0; chw.len()];
        for bi in 0..b {
            for ch in 0..c {
                for y in 0..h {
                    for x in 0..w {
                        hwc[((bi * h + y) * w + x) * c + ch] = chw[((bi * c + ch) * h + y) * w + x];
                    }
                }
            }
        }
        let (hw, chw_len) = ((h * w) as isize, (c * h * w) as isize);
        let view = Strided::new(&chw, 0, [b, h, w, c], [chw_len, w as isize, 1, hw]).unwrap();
        let mut out = vec![0; chw.len()];
        patchify(&view, p, &mut out).unwrap();
        assert_eq!(out, reference_patchify(&hwc, b, h, w, c, p));
    }

    /// Every channel count hits a different inner kernel: the fixed 2/3/4-channel transposes and
    /// gathers, and the generic ones (5, 6 channels).
    #[test]
    fn channel_first_every_channel_count() {
        for c in 1..=6 {
            for p in 1..=3 {
                let (b, h, w) = (2, 2 * p, 3 * p);
                let hwc = iota(b * h * w * c);
                let mut chw = vec![0; hwc.len()];
                for (i, &v) in hwc.iter().enumerate() {
                    let (ch, x, y, bi) = (i % c, i / c % w, i / (c * w) % h, i / (c * w * h));
                    chw[((bi * c + ch) * h + y) * w + x] = v;
                }
                let (hw, chw_len) = ((h * w) as isize, (c * h * w) as isize);
                let view =
                    Strided::new(&chw, 0, [b, h, w, c], [chw_len, w as isize, 1, hw]).unwrap();
                let mut tokens = vec![0; hwc.len()];
                patchify(&view, p, &mut tokens).unwrap();
                assert_eq!(
                    tokens,
                    reference_patchify(&hwc, b, h, w, c, p),
                    "c={c} p={p}"
                );
                let tview =
                    Strided::contiguous(&tokens, [b, (h / p) * (w / p), p * p * c]).unwrap();
                let mut back = vec![0; hwc.len()];
                unpatchify(&tview, p, h, w, false, &mut back).unwrap();
                assert_eq!(back, chw, "c={c} p={p}");
            }
        }
    }

    #[test]
    fn negative_strides_read_the_flipped_image() {
        let (h, w, c, p) = (4, 4, 2, 2);
        let img = iota(h * w * c);
        // Flip both spatial axes: start at the last pixel, walk backwards.
        let offset = ((h - 1) * w + (w - 1)) * c;
        let view = Strided::new(
            &img,
            offset,
            [1, h, w, c],
            [0, -((w * c) as isize), -(c as isize), 1],
        )
        .unwrap();
        let mut flipped = vec![0; img.len()];
        for y in 0..h {
            for x in 0..w {
                for ch in 0..c {
                    flipped[(y * w + x) * c + ch] = img[((h - 1 - y) * w + (w - 1 - x)) * c + ch];
                }
            }
        }
        let mut out = vec![0; img.len()];
        patchify(&view, p, &mut out).unwrap();
        assert_eq!(out, reference_patchify(&flipped, 1, h, w, c, p));
    }

    #[test]
    fn unpatchify_inverts_patchify_both_layouts() {
        let (b, h, w, c, p) = (2, 6, 9, 3, 3);
        let img = iota(b * h * w * c);
        let mut tokens = vec![0; img.len()];
        patchify(
            &Strided::contiguous(&img, [b, h, w, c]).unwrap(),
            p,
            &mut tokens,
        )
        .unwrap();
        let n = (h / p) * (w / p);
        let tview = Strided::contiguous(&tokens, [b, n, p * p * c]).unwrap();
        let mut back = vec![0; img.len()];
        assert_eq!(unpatchify(&tview, p, h, w, true, &mut back), Ok(c));
        assert_eq!(back, img);
        let mut first = vec![0; img.len()];
        unpatchify(&tview, p, h, w, false, &mut first).unwrap();
        for bi in 0..b {
            for ch in 0..c {
                for y in 0..h {
                    for x in 0..w {
                        assert_eq!(
                            first[((bi * c + ch) * h + y) * w + x],
                            img[((bi * h + y) * w + x) * c + ch]
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn large_copies_split_across_threads_match_single_thread() {
        // 4 MiB of u32: above PARALLEL_MIN_BYTES, with a task boundary inside a batch.
        let (b, h, w, c, p) = (4, 256, 256, 4, 16);
        let img = iota(b * h * w * c);
        let mut out = vec![0; img.len()];
        patchify(
            &Strided::contiguous(&img, [b, h, w, c]).unwrap(),
            p,
            &mut out,
        )
        .unwrap();
        assert_eq!(out, reference_patchify(&img, b, h, w, c, p));
        let view = Strided::new(
            &img,
            0,
            [b, h, w, c],
            [(h * w * c) as isize, w as isize, 1, (h * w) as isize],
        );
        let mut first = vec![0; img.len()];
        patchify(&view.unwrap(), p, &mut first).unwrap();
        let mut back = vec![0; img.len()];
        let n = (h / p) * (w / p);
        unpatchify(
            &Strided::contiguous(&first, [b, n, p * p * c]).unwrap(),
            p,
            h,
            w,
            false,
            &mut back,
        )
        .unwrap();
        assert_eq!(back, img);
    }

    /// Outputs from STREAM_MIN_BYTES up take the non-temporal path: runs of 3, 6, 12 and 24 16-byte
    /// chunks (the unrolled kernels), 8 (the generic one), and 40 bytes (not streamable: an ordinary copy);
    /// channel-first (transposes and gathers, which write with ordinary stores), the same sizes.
    #[test]
    fn streamed_copies_match_the_definition() {
        for &(c, p) in &[(3, 4), (6, 4), (3, 16), (3, 32), (4, 8), (5, 2)] {
            let (h, w) = (1024, 512);
            let b = STREAM_MIN_BYTES.div_ceil(h * w * c * 4);
            let img = iota(b * h * w * c);
            assert!(img.len() * 4 >= STREAM_MIN_BYTES);
            let mut out = vec![0; img.len()];
            patchify(
                &Strided::contiguous(&img, [b, h, w, c]).unwrap(),
                p,
                &mut out,
            )
            .unwrap();
            assert!(
                out == reference_patchify(&img, b, h, w, c, p),
                "c={c} p={p}"
            );
            let mut back = vec![0; img.len()];
            let tokens = Strided::contiguous(&out, [b, (h / p) * (w / p), p * p * c]).unwrap();
            unpatchify(&tokens, p, h, w, true, &mut back).unwrap();
            assert!(back == img, "c={c} p={p}");

            // The same numbers read as channel-first images.
            let (hw, chw) = (h * w, c * h * w);
            let as_chw = Strided::new(
                &img,
                0,
                [b, h, w, c],
                [chw as isize, w as isize, 1, hw as isize],
            )
            .unwrap();
            let mut hwc = vec![0; img.len()];
            for (i, v) in hwc.iter_mut().enumerate() {
                let (ch, x, y, bi) = (i % c, i / c % w, i / (c * w) % h, i / chw);
                *v = img[bi * chw + ch * hw + y * w + x];
            }
            patchify(&as_chw, p, &mut out).unwrap();
            assert!(
                out == reference_patchify(&hwc, b, h, w, c, p),
                "channel-first c={c} p={p}"
            );
            let tokens = Strided::contiguous(&out, [b, (h / p) * (w / p), p * p * c]).unwrap();
            unpatchify(&tokens, p, h, w, false, &mut back).unwrap();
            assert!(back == img, "channel-first c={c} p={p}");
        }
    }

    #[test]
    fn plan_merges_channels_last_rows_into_runs() {
        let (h, w, c, p) = (32usize, 32usize, 3usize, 16usize);
        let (sh, sw) = ((w * c) as isize, c as isize);
        let plan = Plan::new(
            [2, h / p, w / p, p, p, c],
            [(h * w * c) as isize, sh * 16, sw * 16, sh, sw, 1],
        );
        assert_eq!(plan.inner, Inner::Run { len: p * c });
    }

    #[test]
    fn errors_name_the_problem() {
        let img = iota(5 * 6 * 3);
        let view = Strided::contiguous(&img, [1, 5, 6, 3]).unwrap();
        let mut out = vec![0; img.len()];
        assert_eq!(patchify(&view, 0, &mut out), Err(PatchError::PatchSize(0)));
        let err = patchify(&view, 2, &mut out).unwrap_err();
        assert_eq!(
            err.to_string(),
            "height 5 and width 6 must be multiples of p=2"
        );
        let tokens = Strided::contiguous(&img, [1, 6, 15]).unwrap();
        let err = unpatchify(&tokens, 2, 4, 6, true, &mut out).unwrap_err();
        assert!(matches!(
            err,
            PatchError::TokenShape {
                tokens: 6,
                token_len: 15,
                expected_tokens: 6,
                ..
            }
        ));
        assert_eq!(
            Strided::new(&img, 10, [1, 5, 6, 3], [0, -18, 3, 1]).unwrap_err(),
            PatchError::OutOfBounds { len: 90 }
        );
        assert_eq!(
            patchify(&view, 1, &mut out[1..]),
            Err(PatchError::OutputLength {
                got: 89,
                expected: 90
            })
        );
    }

    #[test]
    fn chunks_of_a_batch_patchify_to_slices_of_the_whole() {
        let (b, h, w, c, p) = (5usize, 8usize, 8usize, 3usize, 4usize);
        let img = iota(b * h * w * c);
        let item = h * w * c;
        // Batch order reversed (negative first stride), as x[::-1] passes it.
        let view = Strided::new(
            &img,
            (b - 1) * item,
            [b, h, w, c],
            [-(item as isize), (w * c) as isize, c as isize, 1],
        )
        .unwrap();
        let mut whole = vec![0; img.len()];
        patchify(&view, p, &mut whole).unwrap();
        let mut chunked = vec![0; img.len()];
        for range in [0..2, 2..2, 2..5] {
            let out = &mut chunked[range.start * item..range.end * item];
            patchify(&view.rows(range).unwrap(), p, out).unwrap();
        }
        assert!(chunked == whole);
        assert!(view.rows(4..6).is_err());
    }
}
