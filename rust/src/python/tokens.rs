//! `patchify` / `unpatchify`: numpy in, numpy out, any strides, one rayon pass with the GIL released.
//!
//! The core only moves elements, so each dtype is handled as the unsigned integer of its size and the
//! result is viewed back as the input's dtype (byte order included).

use numpy::{
    Element, PyArrayDescrMethods, PyArrayDyn, PyArrayMethods, PyUntypedArray, PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;

use super::arrays::{ascontiguous, checked_out, dtype_str, numpy_array, shape_str};
use crate::patchify::{self as core_tokens, PatchError, Strided};

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
    core_tokens::check_grid(h, w, p).map_err(|e| shape_error(&context, e))?;
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
        .map_err(|e| shape_error(&context, e))?;
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

fn shape_error(context: &str, e: PatchError) -> PyErr {
    PyValueError::new_err(format!("{context}: {e}"))
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

/// The array itself when its elements can be read as aligned integers; otherwise (unaligned data, or
/// strides that are not whole elements) an aligned contiguous copy.
fn readable(arr: Bound<'_, PyUntypedArray>) -> PyResult<Bound<'_, PyUntypedArray>> {
    let item = arr.dtype().itemsize() as isize;
    if arr.is_aligned() && arr.strides().iter().all(|s| s % item == 0) {
        Ok(arr)
    } else {
        ascontiguous(&arr)
    }
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
    let out = out
        .map(|out| {
            let what = match op {
                Op::Patchify { .. } => "patchify: out=",
                Op::Unpatchify { .. } => "unpatchify: out=",
            };
            let checked = checked_out(out, what, out_shape, &arr.dtype())?;
            if overlaps(byte_span(arr), byte_span(&checked)) {
                return Err(PyValueError::new_err(format!(
                    "{what} shares memory with the input; pass a separate array"
                )));
            }
            Ok((out, checked))
        })
        .transpose()?;
    match arr.dtype().itemsize() {
        1 => run_typed::<u8>(arr, op, out_shape, context, out),
        2 => run_typed::<u16>(arr, op, out_shape, context, out),
        4 => run_typed::<u32>(arr, op, out_shape, context, out),
        _ => run_typed::<u64>(arr, op, out_shape, context, out),
    }
}

fn run_typed<'py, T: Element + Copy + Send + Sync>(
    arr: &Bound<'py, PyUntypedArray>,
    op: &Op,
    out_shape: &[usize],
    context: &str,
    given: Option<(&Bound<'py, PyAny>, Bound<'py, PyUntypedArray>)>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = arr.py();
    let (src, offset) = as_slice::<T>(arr);
    let out = match &given {
        // The caller's array seen as T (same bytes, dtype already checked to match arr's).
        Some((_, checked)) => checked
            .call_method1(intern!(py, "view"), (numpy::dtype::<T>(py),))?
            .cast_into::<PyArrayDyn<T>>()?,
        // numpy allocates the output (zeroed lazily by calloc) so it gets numpy's transparent-huge-page
        // hint: with 4 KiB pages, first-touch page faults made a fresh 50 MB output ~5x slower to fill.
        None => PyArrayDyn::<T>::zeros(py, out_shape, false),
    };
    {
        let mut guard = out.try_readwrite().map_err(|e| {
            PyValueError::new_err(format!("{context}: out= cannot be written: {e}"))
        })?;
        let out_slice = guard.as_slice_mut()?;
        py.detach(|| -> Result<(), PatchError> {
            match *op {
                Op::Patchify { shape, strides, p } => {
                    core_tokens::patchify(&Strided::new(src, offset, shape, strides)?, p, out_slice)
                }
                Op::Unpatchify {
                    shape,
                    strides,
                    p,
                    height,
                    width,
                    channels_last,
                } => {
                    let view = Strided::new(src, offset, shape, strides)?;
                    core_tokens::unpatchify(&view, p, height, width, channels_last, out_slice)
                        .map(|_channels| ())
                }
            }
        })
        .map_err(|e| shape_error(context, e))?;
    }
    match given {
        Some((caller, _)) => Ok(caller.clone()),
        // A view is metadata only: the integer array becomes the input's dtype (float16, '>f4', ...).
        None => out.call_method1(intern!(py, "view"), (arr.dtype(),)),
    }
}

/// The bytes `arr` can reach, as a half-open range of addresses (empty for an empty array).
fn byte_span(arr: &Bound<'_, PyUntypedArray>) -> std::ops::Range<usize> {
    if arr.shape().contains(&0) {
        return 0..0;
    }
    let (mut low, mut high) = (0isize, 0isize);
    for (&n, &s) in arr.shape().iter().zip(arr.strides()) {
        let reach = (n as isize - 1) * s;
        if reach < 0 {
            low += reach;
        } else {
            high += reach;
        }
    }
    // SAFETY: reading the data pointer field of a live array.
    let data = unsafe { (*arr.as_array_ptr()).fields.data } as usize;
    let item = arr.dtype().itemsize();
    data.wrapping_add_signed(low)..data.wrapping_add_signed(high) + item
}

fn overlaps(a: std::ops::Range<usize>, b: std::ops::Range<usize>) -> bool {
    !a.is_empty() && !b.is_empty() && a.start < b.end && b.start < a.end
}

/// The memory `arr` spans as a slice of `T`, and the index of its first element in that slice.
fn as_slice<'a, T>(arr: &'a Bound<'_, PyUntypedArray>) -> (&'a [T], usize) {
    let span = byte_span(arr);
    if span.is_empty() {
        return (&[], 0);
    }
    let item = size_of::<T>();
    // SAFETY: numpy guarantees every element the array's shape and strides reach is inside its
    // allocation, so `span` is readable for as long as `arr` is alive (the returned slice borrows
    // it). `readable` checked that the data is aligned for T (an unsigned integer of the dtype's
    // size, valid for any bit pattern) and that strides are whole elements, so `span` holds a whole
    // number of them and the first element lies a whole number of elements past its start.
    let data = unsafe { (*arr.as_array_ptr()).fields.data } as usize;
    let slice = unsafe { std::slice::from_raw_parts(span.start as *const T, span.len() / item) };
    (slice, (data - span.start) / item)
}
