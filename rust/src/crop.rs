//! The ADM center crop (ADM, DiT, EDM2, official JiT), bit-exact with Pillow:
//!
//! ```text
//! while min(w, h) >= 2*size: img = img.resize((w//2, h//2), Image.BOX)
//! scale = size / min(w, h)
//! img = img.resize((round(w*scale), round(h*scale)), Image.BICUBIC)
//! crop size×size at ((H'-size)//2, (W'-size)//2)
//! ```
//!
//! Only the pixels the crop keeps are computed: the kept output ranges are walked back through the
//! resize steps to find the input rectangle each step needs (see `resample`).

use crate::decode::Window;
use crate::resample::{horizontal, vertical, vertical_first, AxisTaps, Column, Filter, Plane};

/// The taps of one resize of the ADM chain, for the outputs that later steps use.
#[derive(Default)]
struct StepTaps {
    columns: AxisTaps,
    rows: AxisTaps,
}

/// Buffers reused between calls on one thread, so a batch allocates once per worker.
#[derive(Default)]
pub struct Scratch {
    steps: Vec<StepTaps>,
    /// Horizontal-pass output of the current step.
    between: Vec<u8>,
    /// Output of the previous step and of the current one.
    current: Vec<u8>,
    next: Vec<u8>,
    block: Vec<Column>,
    acc: Vec<i32>,
}

/// The image sizes of the ADM chain for a `width`×`height` image: `(width, height, filter)` of each
/// resize target, in order. The BICUBIC step is left out when it would keep the size (Pillow copies then).
pub fn adm_resizes(width: usize, height: usize, size: usize) -> Vec<(usize, usize, Filter)> {
    let mut resizes = Vec::new();
    let (mut w, mut h) = (width, height);
    while w.min(h) >= size.saturating_mul(2) {
        (w, h) = (w / 2, h / 2);
        resizes.push((w, h, Filter::Box));
    }
    // Python: `size / min(w, h)` is a double; `round()` rounds half to even.
    let scale = size as f64 / w.min(h) as f64;
    let target = (
        (w as f64 * scale).round_ties_even() as usize,
        (h as f64 * scale).round_ties_even() as usize,
    );
    if target != (w, h) {
        resizes.push((target.0, target.1, Filter::Bicubic));
    }
    resizes
}

/// The source pixels the ADM crop of a `width`×`height` image to `size` reads (the same flipped or
/// not): the kept output square walked back through every resize with the filters' support. The taps
/// it builds stay in `scratch` for [`center_crop_window_into`] with the same arguments.
pub fn source_window(
    width: usize,
    height: usize,
    size: usize,
    flip: bool,
    scratch: &mut Scratch,
) -> Window {
    plan(width, height, size, flip, scratch).1
}

/// Builds the taps of every resize of the chain for the kept outputs; returns the resizes and the
/// source columns and rows they read.
fn plan(
    width: usize,
    height: usize,
    size: usize,
    flip: bool,
    scratch: &mut Scratch,
) -> (Vec<(usize, usize, Filter)>, Window) {
    let resizes = adm_resizes(width, height, size);
    let n_steps = resizes.len();
    if scratch.steps.len() < n_steps {
        scratch.steps.resize_with(n_steps, StepTaps::default);
    }
    let steps = &mut scratch.steps[..n_steps];

    // Walk the kept rectangle back to the source. Flipping reverses the kept columns of the last
    // resize, so its passes write the mirror image directly.
    let (w, h) = resizes.last().map_or((width, height), |&(w, h, _)| (w, h));
    let (x0, y0) = ((w - size) / 2, (h - size) / 2);
    let (mut kept_x, mut kept_y) = (x0..x0 + size, y0..y0 + size);
    for (i, step) in steps.iter_mut().enumerate().rev() {
        let (in_width, in_height) = if i == 0 {
            (width, height)
        } else {
            (resizes[i - 1].0, resizes[i - 1].1)
        };
        let (out_width, out_height, filter) = resizes[i];
        let reversed = flip && i + 1 == n_steps;
        step.columns
            .build(in_width, out_width, filter, kept_x.clone(), reversed);
        step.rows
            .build(in_height, out_height, filter, kept_y.clone(), false);
        kept_x = step.columns.lo()..step.columns.hi();
        kept_y = step.rows.lo()..step.rows.hi();
    }
    (
        resizes,
        Window {
            x: kept_x,
            y: kept_y,
        },
    )
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
    scratch: &mut Scratch,
) {
    let window = Window::full(width, height);
    center_crop_window_into(src, &window, width, height, size, flip, out, scratch);
}

/// [`center_crop_into`] from only a `window` of the `width`×`height` image: `src` holds the window's
/// pixels (row-major RGB), which must contain [`source_window`]. Every coefficient and position is
/// computed in full-image coordinates, so the crop equals the crop of the whole image.
#[allow(clippy::too_many_arguments)]
pub fn center_crop_window_into(
    src: &[u8],
    window: &Window,
    width: usize,
    height: usize,
    size: usize,
    flip: bool,
    out: &mut [u8],
    scratch: &mut Scratch,
) {
    let (
        resizes,
        Window {
            x: kept_x,
            y: kept_y,
        },
    ) = plan(width, height, size, flip, scratch);
    let n_steps = resizes.len();
    let steps = &scratch.steps[..n_steps];
    debug_assert!(
        window.x.start <= kept_x.start
            && kept_x.end <= window.x.end
            && window.y.start <= kept_y.start
            && kept_y.end <= window.y.end
            && src.len() == window.x.len() * window.y.len() * 3,
        "the window {window:?} does not hold the crop's source {kept_x:?} x {kept_y:?}"
    );

    let stride = window.x.len() * 3;
    let region =
        &src[(kept_y.start - window.y.start) * stride + (kept_x.start - window.x.start) * 3..];
    if n_steps == 0 {
        for (r, out_row) in out.chunks_exact_mut(size * 3).enumerate() {
            let row = &region[r * stride..][..size * 3];
            if flip {
                for (o, px) in out_row.chunks_exact_mut(3).zip(row.chunks_exact(3).rev()) {
                    o.copy_from_slice(px);
                }
            } else {
                out_row.copy_from_slice(row);
            }
        }
        return;
    }

    let Scratch {
        between,
        current,
        next,
        block,
        acc,
        ..
    } = scratch;
    for (i, step) in steps.iter().enumerate() {
        let plane = if i == 0 {
            Plane {
                data: region,
                stride,
                width: kept_x.len(),
                rows: kept_y.len(),
            }
        } else {
            let width = steps[i - 1].columns.len();
            Plane {
                data: current,
                stride: width * 3,
                width,
                rows: steps[i - 1].rows.len(),
            }
        };
        let (in_width, in_height) = if i == 0 {
            (width, height)
        } else {
            (resizes[i - 1].0, resizes[i - 1].1)
        };
        let (out_width, out_height, _) = resizes[i];
        let row_len = step.columns.len() * 3;
        let dst: &mut [u8] = if i + 1 == n_steps {
            out
        } else {
            next.resize(step.rows.len() * row_len, 0);
            next
        };
        if vertical_first(in_width, in_height, out_width, out_height) {
            let mid_len = plane.width * 3;
            between.resize(step.rows.len() * mid_len, 0);
            vertical(
                plane.data,
                plane.stride,
                mid_len,
                &step.rows,
                acc,
                between,
                mid_len,
            );
            let mid = Plane {
                data: between,
                stride: mid_len,
                width: plane.width,
                rows: step.rows.len(),
            };
            horizontal(&mid, &step.columns, block, dst);
        } else {
            between.resize(plane.rows * row_len, 0);
            horizontal(&plane, &step.columns, block, between);
            vertical(between, row_len, row_len, &step.rows, acc, dst, row_len);
        }
        if i + 1 < n_steps {
            std::mem::swap(current, next);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crop(src: &[u8], width: usize, height: usize, size: usize, flip: bool) -> Vec<u8> {
        let mut out = vec![0; size * size * 3];
        center_crop_into(
            src,
            width,
            height,
            size,
            flip,
            &mut out,
            &mut Scratch::default(),
        );
        out
    }

    #[test]
    fn adm_chain_sizes() {
        assert_eq!(
            adm_resizes(500, 375, 256),
            vec![(341, 256, Filter::Bicubic)]
        );
        assert_eq!(adm_resizes(256, 300, 256), vec![]);
        // 2*size exactly halves; 2*size - 1 does not.
        assert_eq!(adm_resizes(64, 80, 32), vec![(32, 40, Filter::Box)]);
        assert_eq!(adm_resizes(63, 80, 32), vec![(32, 41, Filter::Bicubic)]);
        // Two BOX steps (the second from odd sizes), then short side 32 already.
        assert_eq!(
            adm_resizes(131, 140, 32),
            vec![(65, 70, Filter::Box), (32, 35, Filter::Box)]
        );
        // Python's round() is half to even: 6 * 0.75 = 4.5 -> 4, 10 * 0.75 = 7.5 -> 8.
        assert_eq!(adm_resizes(6, 4, 3), vec![(4, 3, Filter::Bicubic)]);
        assert_eq!(adm_resizes(10, 4, 3), vec![(8, 3, Filter::Bicubic)]);
    }

    #[test]
    fn exact_size_is_copied_and_flip_mirrors() {
        let src: Vec<u8> = (0..4 * 4 * 3).map(|i| i as u8).collect();
        assert_eq!(crop(&src, 4, 4, 4, false), src);
        let flipped = crop(&src, 4, 4, 4, true);
        for y in 0..4 {
            for x in 0..4 {
                assert_eq!(
                    flipped[(y * 4 + x) * 3..][..3],
                    src[(y * 4 + 3 - x) * 3..][..3]
                );
            }
        }
    }

    #[test]
    fn taller_image_of_the_right_width_is_cropped_in_the_middle() {
        let src: Vec<u8> = (0..3 * 8 * 3).map(|i| i as u8).collect();
        // No resize (short side is 3): rows (8-3)//2 = 2 ..5.
        assert_eq!(crop(&src, 3, 8, 3, false), src[2 * 9..5 * 9].to_vec());
    }

    #[test]
    fn flat_image_stays_flat() {
        for (w, h, size) in [(1, 1, 1), (1, 1, 7), (9, 5, 2), (64, 17, 4), (300, 1000, 8)] {
            let src: Vec<u8> = [10, 200, 33].repeat(w * h);
            assert_eq!(
                crop(&src, w, h, size, false),
                [10, 200, 33].repeat(size * size),
                "{w}x{h} -> {size}"
            );
        }
    }

    #[test]
    fn even_box_halving_then_no_bicubic() {
        // 4x4 -> size 2: one BOX 2x step to 2x2, BICUBIC keeps the size. Each output is the rounded
        // average of rounded row-pair averages.
        let src: Vec<u8> = (0..16)
            .flat_map(|i| [i as u8 * 10, 255 - i as u8, (i % 2) as u8])
            .collect();
        let out = crop(&src, 4, 4, 2, false);
        let px = |x: usize, y: usize, c: usize| u16::from(src[(y * 4 + x) * 3 + c]);
        for y in 0..2 {
            for x in 0..2 {
                for c in 0..3 {
                    let top = (px(2 * x, 2 * y, c) + px(2 * x + 1, 2 * y, c) + 1) >> 1;
                    let bottom = (px(2 * x, 2 * y + 1, c) + px(2 * x + 1, 2 * y + 1, c) + 1) >> 1;
                    assert_eq!(u16::from(out[(y * 2 + x) * 3 + c]), (top + bottom + 1) >> 1);
                }
            }
        }
        let flipped = crop(&src, 4, 4, 2, true);
        for y in 0..2 {
            assert_eq!(flipped[y * 6..y * 6 + 3], out[y * 6 + 3..y * 6 + 6]);
        }
    }

    #[test]
    fn flip_mirrors_a_resized_crop() {
        let (w, h) = (123, 77);
        let src: Vec<u8> = (0..w * h * 3)
            .map(|i| ((i * 2654435761usize) >> 7) as u8)
            .collect();
        for size in [1, 5, 32, 40, 100] {
            let plain = crop(&src, w, h, size, false);
            let flipped = crop(&src, w, h, size, true);
            for y in 0..size {
                for x in 0..size {
                    let a = &plain[(y * size + x) * 3..][..3];
                    let b = &flipped[(y * size + size - 1 - x) * 3..][..3];
                    assert_eq!(a, b, "size {size} at {x},{y}");
                }
            }
        }
    }

    #[test]
    fn reused_scratch_gives_the_same_crops() {
        let mut scratch = Scratch::default();
        let cases = [
            (123, 77, 32, false),
            (123, 77, 32, true),
            (64, 200, 16, false),
            (500, 375, 40, true),
        ];
        for &(w, h, size, flip) in cases
            .iter()
            .chain(&cases)
            .chain(&[(123, 77, 32, false), (9, 9, 9, false)])
        {
            let src: Vec<u8> = (0..w * h * 3)
                .map(|i| ((i * 2654435761usize) >> 9) as u8)
                .collect();
            let mut reused = vec![0; size * size * 3];
            center_crop_into(&src, w, h, size, flip, &mut reused, &mut scratch);
            assert_eq!(
                reused,
                crop(&src, w, h, size, flip),
                "{w}x{h} -> {size} flip {flip}"
            );
        }
    }
}
