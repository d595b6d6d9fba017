//! `patchify` / `unpatchify`: numpy in, numpy out, any strides, on the worker threads with the GIL
//! released, in chunks of the batch so Ctrl-C is honoured.
//!
//! The core only moves elements, so each dtype is handled as the unsigned integer of its size and the
//! result is viewed back as the input's dtype (byte order included). Both arrays are borrowed through
//! the numpy crate (the input read-only, the output read-write), whose borrow checker refuses an
//! output that shares memory with the input.

use std::ops::Range;

use numpy::{
    BorrowError, Element, PyArrayDescrMethods, PyArrayDyn, PyArrayMethods, PyUntypedArray,
    PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;

use super::arrays::{ascontiguous, checked_out, dtype_str, numpy_array, shape_str};
use super::parallel::{detach_in_chunks, pool};
use crate::error::Error;
use crate::patchify::{self as core_tokens, PatchError, Strided};

/// Output bytes per GIL-free chunk of a batch: Ctrl-C waits at most one chunk (tens of milliseconds),
/// and a chunk stays far above the sizes where the core's parallel and streaming paths switch on.
const CHUNK_BYTES: usize = 64 << 20;

/// Split images into JiT patch tokens.
///
/// arr: uint8, float16, float32 or float64 array, (H, W, C) or (B, H, W, C); with channels_last=False
/// (C, H, W) or (B, C, H, W). Any strides. H and W must be multiples of p.
/// Returns a new C-contiguous array of arr's dtype, (N, p*p*C) or (B, N, p*p*C), N = (H/p)*(W/p),
/// patches in row-major order, each token ordered (row in patch, column in patch, channel) as in JiT.
/// out: a C-contiguous array of that shape and dtype, not overlapping arr, to fill and return instead.
#[pyfunction]
#[pyo3(signature = (arr, p, channels_last = true, out = None))]
pub fn patchify<'py>(
    arr: &Bound<'py, PyAny>,
    p: i64,
    channels_last: bool,
    out: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let arr = supported(numpy_array(arr, "patchify: arr")?, "patchify: arr")?;
    let shape = arr.shape().to_vec();
    let context = format!("patchify: arr of shape {} with p={p}", shape_str(&shape));
    let p = patch_size(&context, p)?;
    if !matches!(shape.len(), 3 | 4) {
        let layout = if channels_last {
            "(H, W, C) or (B, H, W, C)"
        } else {
            "(C, H, W) or (B, C, H, W)"
        };
        return Err(PyValueError::new_err(format!(
            "{context}: expected {layout}"
        )));
    }
    let batched = shape.len() == 4;
    let arr = readable(arr)?;
    let (mut dims, mut strides) = (arr.shape().to_vec(), element_strides(&arr));
    if !batched {
        dims.insert(0, 1);
        strides.insert(0, 0);
    }
    if !channels_last {
        // (B, C, H, W) read as the core's (B, H, W, C) by permuting strides: no copy.
        dims = vec![dims[0], dims[2], dims[3], dims[1]];
        strides = vec![strides[0], strides[2], strides[3], strides[1]];
    }
    let (b, h, w, c) = (dims[0], dims[1], dims[2], dims[3]);
    core_tokens::check_grid(h, w, p).map_err(|reason| shape_error(&context, reason))?;
    let tokens = (h / p) * (w / p);
    let out_shape = if batched {
        vec![b, tokens, p * p * c]
    } else {
        vec![tokens, p * p * c]
    };
    let op = Op::Patchify {
        shape: [b, h, w, c],
        strides: [strides[0], strides[1], strides[2], strides[3]],
        p,
    };
    run(&arr, &op, &out_shape, &context, out)
}

/// Reassemble images from JiT patch tokens: the exact inverse of `patchify`.
///
/// tokens: uint8, float16, float32 or float64 array, (N, p*p*C) or (B, N, p*p*C) with
/// N = (height/p)*(width/p); any strides. Returns a new C-contiguous array of tokens' dtype,
/// (height, width, C) / (B, height, width, C), or with channels_last=False (C, height, width) /
/// (B, C, height, width). out: a C-contiguous array of that shape and dtype, not overlapping tokens, to
/// fill and return instead.
#[pyfunction]
#[pyo3(signature = (tokens, p, height, width, channels_last = true, out = None))]
pub fn unpatchify<'py>(
    tokens: &Bound<'py, PyAny>,
    p: i64,
    height: i64,
    width: i64,
    channels_last: bool,
    out: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let arr = supported(
        numpy_array(tokens, "unpatchify: tokens")?,
        "unpatchify: tokens",
    )?;
    let shape = arr.shape().to_vec();
    let context = format!(
        "unpatchify: tokens of shape {} with p={p}, height={height}, width={width}",
        shape_str(&shape)
    );
    let p = patch_size(&context, p)?;
    let (Ok(height), Ok(width)) = (usize::try_from(height), usize::try_from(width)) else {
        return Err(PyValueError::new_err(format!(
            "{context}: height and width must be >= 0"
        )));
    };
    if !matches!(shape.len(), 2 | 3) {
        return Err(PyValueError::new_err(format!(
            "{context}: expected (N, p*p*C) or (B, N, p*p*C)"
        )));
    }
    let batched = shape.len() == 3;
    let arr = readable(arr)?;
    let (mut dims, mut strides) = (arr.shape().to_vec(), element_strides(&arr));
    if !batched {
        dims.insert(0, 1);
        strides.insert(0, 0);
    }
    let (b, n, d) = (dims[0], dims[1], dims[2]);
    let c = core_tokens::token_channels(n, d, p, height, width)
        .map_err(|reason| shape_error(&context, reason))?;
    let image = if channels_last {
        [height, width, c]
    } else {
        [c, height, width]
    };
    let out_shape: Vec<usize> = if batched {
        [&[b][..], &image].concat()
    } else {
        image.to_vec()
    };
    let op = Op::Unpatchify {
        shape: [b, n, d],
        strides: [strides[0], strides[1], strides[2]],
        p,
        height,
        width,
        channels_last,
    };
    run(&arr, &op, &out_shape, &context, out)
}

/// What to compute, in the core's canonical axes (strides in elements).
enum Op {
    Patchify {
        shape: [usize; 4],
        strides: [isize; 4],
        p: usize,
    },
    Unpatchify {
        shape: [usize; 3],
        strides: [isize; 3],
        p: usize,
        height: usize,
        width: usize,
        channels_last: bool,
    },
}

fn patch_size(context: &str, p: i64) -> PyResult<usize> {
    match usize::try_from(p) {
        Ok(p) if p >= 1 => Ok(p),
        _ => Err(PyValueError::new_err(format!("{context}: p must be >= 1"))),
    }
}

/// The array if its dtype is one we support, else a TypeError naming the dtype.
fn supported<'py>(
    arr: Bound<'py, PyUntypedArray>,
    what: &str,
) -> PyResult<Bound<'py, PyUntypedArray>> {
    let dtype = arr.dtype();
    let ok = matches!(
        (dtype.kind(), dtype.itemsize()),
        (b'u', 1) | (b'f', 2 | 4 | 8)
    );
    if ok {
        Ok(arr)
    } else {
        Err(PyTypeError::new_err(format!(
            "{what} has dtype {}; supported are uint8, float16, float32 and float64",
            dtype_str(&arr)?
        )))
    }
}

fn shape_error(context: &str, reason: PatchError) -> Error {
    Error::Shape {
        context: context.to_owned(),
        reason,
    }
}

/// The array itself when its elements can be read in place as aligned integers from one slice of
/// memory (any order of the axes, negative strides included); otherwise (unaligned data, strides that
/// are not whole elements, or gaps between elements, as in `x[:, 2:5]`) an aligned contiguous copy.
fn readable(arr: Bound<'_, PyUntypedArray>) -> PyResult<Bound<'_, PyUntypedArray>> {
    let item = arr.dtype().itemsize() as isize;
    let (shape, strides) = (arr.shape(), arr.strides());
    if arr.is_aligned() && strides.iter().all(|s| s % item == 0) && dense(shape, strides, item) {
        Ok(arr)
    } else {
        ascontiguous(&arr)
    }
}

/// Whether the elements fill their span of memory with no gaps, whatever the order of the axes.
fn dense(shape: &[usize], strides: &[isize], item: isize) -> bool {
    if shape.contains(&0) {
        return true;
    }
    let mut axes: Vec<(usize, usize)> = shape
        .iter()
        .zip(strides)
        .filter(|&(&n, _)| n > 1)
        .map(|(&n, &s)| (s.unsigned_abs(), n))
        .collect();
    axes.sort_unstable();
    let mut step = item.unsigned_abs();
    for (stride, n) in axes {
        if stride != step {
            return false;
        }
        step *= n;
    }
    true
}

/// Strides in elements; `readable` guarantees they divide exactly.
fn element_strides(arr: &Bound<'_, PyUntypedArray>) -> Vec<isize> {
    let item = arr.dtype().itemsize() as isize;
    arr.strides().iter().map(|s| s / item).collect()
}

fn run<'py>(
    arr: &Bound<'py, PyUntypedArray>,
    op: &Op,
    out_shape: &[usize],
    context: &str,
    out: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let what = match op {
        Op::Patchify { .. } => "patchify: out=",
        Op::Unpatchify { .. } => "unpatchify: out=",
    };
    let out = out
        .map(|out| Ok::<_, PyErr>((out, checked_out(out, what, out_shape, &arr.dtype())?)))
        .transpose()?;
    match arr.dtype().itemsize() {
        1 => run_typed::<u8>(arr, op, out_shape, context, what, out),
        2 => run_typed::<u16>(arr, op, out_shape, context, what, out),
        4 => run_typed::<u32>(arr, op, out_shape, context, what, out),
        _ => run_typed::<u64>(arr, op, out_shape, context, what, out),
    }
}

/// `arr` seen as an array of `T` (the same bytes: `T` is the unsigned integer of its item size).
fn view_as<'py, T: Element>(arr: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyArrayDyn<T>>> {
    let py = arr.py();
    Ok(arr
        .call_method1(intern!(py, "view"), (numpy::dtype::<T>(py),))?
        .cast_into::<PyArrayDyn<T>>()?)
}

fn run_typed<'py, T: Element + Copy + Send + Sync>(
    arr: &Bound<'py, PyUntypedArray>,
    op: &Op,
    out_shape: &[usize],
    context: &str,
    what: &str,
    given: Option<(&Bound<'py, PyAny>, Bound<'py, PyUntypedArray>)>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = arr.py();
    let src = view_as::<T>(arr)?;
    let src = src
        .try_readonly()
        .map_err(|e| PyValueError::new_err(format!("{context}: the input cannot be read: {e}")))?;
    let src_view = src.as_array();
    // `readable` made the elements one dense slice of memory, in some order of the axes.
    let data = src_view.as_slice_memory_order().ok_or_else(|| {
        PyValueError::new_err(format!("{context}: the input is not one block of memory"))
    })?;
    // The first element's index in that slice: a distance between two addresses, no dereference.
    let offset = (src_view.as_ptr() as usize - data.as_ptr() as usize) / size_of::<T>().max(1);
    let out = match &given {
        Some((_, checked)) => view_as::<T>(checked.as_any())?,
        // numpy allocates the output (zeroed lazily by calloc) so it gets numpy's transparent-huge-page
        // hint: with 4 KiB pages, first-touch page faults made a fresh 50 MB output ~5x slower to fill.
        None => PyArrayDyn::<T>::zeros(py, out_shape, false),
    };
    let mut guard = out.try_readwrite().map_err(|e| match e {
        BorrowError::AlreadyBorrowed => PyValueError::new_err(format!(
            "{what} shares memory with the input; pass a separate array"
        )),
        _ => PyValueError::new_err(format!("{context}: out= cannot be written: {e}")),
    })?;
    let out_slice = guard.as_slice_mut()?;
    let source_error = |reason| shape_error(context, reason);
    match *op {
        Op::Patchify { shape, strides, p } => {
            let view = Strided::new(data, offset, shape, strides).map_err(source_error)?;
            copy_in_chunks(py, shape[0], out_slice, context, |rows, out| {
                core_tokens::patchify(&view.rows(rows)?, p, out)
            })?;
        }
        Op::Unpatchify {
            shape,
            strides,
            p,
            height,
            width,
            channels_last,
        } => {
            let view = Strided::new(data, offset, shape, strides).map_err(source_error)?;
            copy_in_chunks(py, shape[0], out_slice, context, |rows, out| {
                core_tokens::unpatchify(&view.rows(rows)?, p, height, width, channels_last, out)
                    .map(|_channels| ())
            })?;
        }
    }
    drop(guard);
    match given {
        Some((caller, _)) => Ok(caller.clone()),
        // A view is metadata only: the integer array becomes the input's dtype (float16, '>f4', ...).
        None => out.call_method1(intern!(py, "view"), (arr.dtype(),)),
    }
}

/// Runs `copy(items, out)` over the batch in chunks of about `CHUNK_BYTES` of output, each on the
/// worker pool with the GIL released; `out` is the whole output, `batch` items of equal size.
fn copy_in_chunks<T: Send>(
    py: Python<'_>,
    batch: usize,
    out: &mut [T],
    context: &str,
    copy: impl Fn(Range<usize>, &mut [T]) -> Result<(), PatchError> + Sync,
) -> PyResult<()> {
    let pool = pool(None)?;
    let per_item = out.len() / batch.max(1);
    let chunk = CHUNK_BYTES / (per_item * size_of::<T>()).max(1);
    detach_in_chunks(py, batch, chunk, |items| {
        let out = &mut out[items.start * per_item..items.end * per_item];
        pool.install(|| copy(items, out))
            .map_err(|reason| shape_error(context, reason))?;
        Ok(true)
    })
}
