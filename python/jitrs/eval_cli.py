"""`jitrs eval`: FID / Inception Score of samples against reference statistics, and making those statistics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from jitrs.atomic import atomic_write_text
from jitrs.builtin import builtin_name
from jitrs.errors import UserError

LABELS = {
    "images": "images",
    "accuracy": "recognised as their class",
    "fd": "Fréchet distance (classifier features)",
    "fd_real": "  real held-out digits: FD",
    "fd_blobs": "  class-mean blobs: FD",
    "accuracy_blobs": "  class-mean blobs: recognised",
    "classifier_accuracy": "classifier on held-out real digits",
    "fid": "FID",
    "inception_score": "Inception Score",
    "inception_score_std": "IS std",
    "precision": "precision",
    "recall": "recall",
    "fd_dinov2": "FD_DINOv2",
}
METRICS_HELP = "Comma-separated: fid, is (Inception Score), prc (precision/recall), fd-dinov2."
INCEPTION_HELP = "Inception weights pt_inception-2015-12-05-6726825d.pth (or $JITRS_INCEPTION_WEIGHTS)."
DINOV2_HELP = "DINOv2 weights dinov2_vitl14_pretrain.pth for fd-dinov2 (or $JITRS_DINOV2_WEIGHTS)."


def warn_if_few(results: dict[str, float]) -> None:
    """A Fréchet distance of fewer images than feature dimensions is far above its 50K-image value."""
    from jitrs.metrics import FEATURE_DIM

    if "fid" in results and results["images"] < FEATURE_DIM:
        Console(stderr=True).print(
            f"[yellow]warning:[/] FID of {results['images']:.0f} images: with fewer images than the "
            f"{FEATURE_DIM} feature dimensions it is biased far above the 50K-image value the paper reports"
        )


def print_results(results: dict[str, float]) -> None:
    table = Table("metric", "value")
    for key, value in results.items():
        table.add_row(LABELS.get(key, key), f"{value:.0f}" if key == "images" else f"{value:.4f}")
    Console().print(table)


def eval_command(
    samples: Annotated[
        Path | None, typer.Option(help="Generated images: a folder of PNGs or an npz with arr_0.")
    ] = None,
    ref: Annotated[
        Path | None,
        typer.Option(
            help="Reference: stats npz (mu/sigma), image npz (arr_0) or folder; or builtin:mnist / builtin:digits "
            "for the built-in quality score (recognised %, Fréchet distance in a digit classifier's features)."
        ),
    ] = None,
    make_ref: Annotated[
        Path | None,
        typer.Option(
            help="Compute reference statistics of this image folder instead (Inception, and DINOv2 when --metrics "
            "has fd-dinov2)."
        ),
    ] = None,
    res: Annotated[int, typer.Option(help="--make-ref: ADM center-crop size.")] = 256,
    out: Annotated[Path | None, typer.Option(help="--make-ref: where to write the stats npz.")] = None,
    metrics: Annotated[str, typer.Option(help=METRICS_HELP)] = "fid,is",
    inception_weights: Annotated[Path | None, typer.Option(help=INCEPTION_HELP)] = None,
    dinov2_weights: Annotated[Path | None, typer.Option(help=DINOV2_HELP)] = None,
    batch_size: Annotated[int, typer.Option(help="Images per Inception batch.")] = 100,
    device: Annotated[str | None, typer.Option(help="torch device (default: cuda if available, else cpu).")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the metrics to this JSON file.")] = None,
) -> None:
    """FID, IS, precision/recall (torch-fidelity) and FD_DINOv2; weights from local files, never downloaded."""
    from jitrs import scoring

    if batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {batch_size}")
    if make_ref is not None:
        if out is None:
            raise UserError("--make-ref needs --out STATS.npz")
        if samples is not None or ref is not None:
            raise UserError("--make-ref computes statistics only: drop --samples/--ref")
        count, skipped = scoring.make_reference(
            make_ref, res, out, metrics, inception_weights, dinov2_weights, batch_size, device
        )
        console = Console(markup=False, highlight=False, soft_wrap=True)
        if skipped:
            console.print(f"skipped {len(skipped)} unreadable image(s), e.g. {skipped[0][0]}: {skipped[0][1]}")
        console.print(f"wrote reference statistics of {count} images of {make_ref} at {res} px to {out}")
        return
    if samples is None or ref is None:
        raise UserError("give --samples and --ref (or --make-ref DATA_DIR --out STATS.npz)")
    builtin = builtin_name(str(ref))
    if builtin is not None:
        from jitrs.quality import Judge, read_samples

        score = Judge(builtin).score(*read_samples(samples))
        Console().print(escape(f"builtin:{builtin} quality: {score.summary()}"), highlight=False)
        results = {k: float(v) for k, v in score.to_dict().items()}
    else:
        results = scoring.evaluate(
            samples, ref, metrics, inception_weights, dinov2_weights, batch_size=batch_size, device=device
        )
        warn_if_few(results)
    print_results(results)
    if json_out is not None:
        atomic_write_text(json_out, json.dumps(results, indent=2) + "\n")
