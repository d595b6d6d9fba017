//! The ADM center crop (ADM, DiT, EDM2, official JiT), bit-exact with Pillow.
//!
//! PLACEHOLDER: nearest-neighbour stand-in with the final signature, to be replaced by the Pillow-exact
//! BOX/BICUBIC resampler (resample.rs).

/// Buffers reused between calls on one thread, so a batch allocates once per worker.
#[derive(Default)]
pub struct Scratch {
    #[allow(dead_code)]
    buf: Vec<u8>,
}

/// ADM center crop of an interleaved RGB image (`width`×`height`×3 bytes, row-major) to
/// `size`×`size`×3 bytes in `out`, mirrored left-right when `flip`.
///
/// Callers guarantee `src.len() == width*height*3`, `out.len() == size*size*3`, all sizes >= 1.
pub fn center_crop_into(
    src: &[u8],
    width: usize,
    height: usize,
    size: usize,
    flip: bool,
    out: &mut [u8],
    _scratch: &mut Scratch,
) {
    let short = width.min(height);
    let (x0, y0) = ((width - short) / 2, (height - short) / 2);
    for y in 0..size {
        for x in 0..size {
            let sx = x0 + x * short / size;
            let sy = y0 + y * short / size;
            let dx = if flip { size - 1 - x } else { x };
            let s = (sy * width + sx) * 3;
            let d = (y * size + dx) * 3;
            out[d..d + 3].copy_from_slice(&src[s..s + 3]);
        }
    }
}
