"""The training loader: images (files, shard byte ranges, parquet bytes) -> jitrs.load_batch (Rust, rayon, GIL
released) -> pinned host buffers -> device.

No Python worker processes. Background threads decode whole batches into a small ring of pinned buffers (bounded
memory, bounded queue) while the device trains; the main thread copies a batch to the device asynchronously and
scales it there to [-1, 1]. The order of images is a pure function of (seed, epoch), so a run can start at any
step and see exactly the batches an uninterrupted run would have seen.

Sharding: an optimiser step consumes one global batch of `global_batch = micro_batch · accum · world_size`
consecutive positions of the epoch's permutation. Sub-batch m = a · world_size + rank (a = accumulation index)
takes positions [m · micro_batch, (m + 1) · micro_batch) of it, so the ranks' shards are disjoint, every image is
used once per epoch across all ranks, and the same global batch is split into the same sub-batches whatever the
mix of GPUs and accumulation. The tail of an epoch that does not fill a global batch is dropped.

Unreadable images: load_batch(on_error="skip") zeroes a bad slot; the loader refills it with a copy of another
good image of the same batch (with that image's label), so the batch keeps its shape and no zero image is ever
trained on. Each bad image is appended once to the log file and counted in `Loader.bad_files`, under its index
name (a path, `SHARD.tar:MEMBER`, `FILE.parquet:row R`), as is each member the index left out (`index.skipped`).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import jitrs
from jitrs.dataset import ImageIndex
from jitrs.errors import UserError

_POLL_S = 0.1  # how often blocked threads look at the stop flag


@dataclass(frozen=True)
class Plan:
    """Which images (and flips) each rank decodes for each micro-batch of each optimiser step."""

    num_images: int
    micro_batch: int
    accum: int = 1
    world_size: int = 1
    rank: int = 0
    seed: int = 0
    flip: bool = True  # random horizontal flips (p = 0.5); off for data that mirroring changes, like digits

    def __post_init__(self) -> None:
        if min(self.micro_batch, self.accum, self.world_size) < 1 or not 0 <= self.rank < self.world_size:
            raise ValueError(f"invalid plan {self}")

    @property
    def global_batch(self) -> int:
        return self.micro_batch * self.accum * self.world_size

    @property
    def steps_per_epoch(self) -> int:
        """Optimiser steps per epoch (drop_last)."""
        return self.num_images // self.global_batch

    def epoch_order(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(permutation of all image ids (N,) int64, horizontal flip per position (N,) bool) for an epoch."""
        rng = np.random.default_rng([self.seed, epoch])
        return rng.permutation(self.num_images), (rng.random(self.num_images) < 0.5) & self.flip

    def sub_batch(self, step: int, accum_index: int) -> int:
        """m = a · world_size + rank: this rank's sub-batch number inside the global batch of a step."""
        return accum_index * self.world_size + self.rank

    def positions(self, step: int, accum_index: int) -> tuple[int, slice]:
        """(epoch, slice of that epoch's permutation) that this rank decodes for (step, accum_index)."""
        epoch, k = divmod(step, self.steps_per_epoch)
        start = k * self.global_batch + self.sub_batch(step, accum_index) * self.micro_batch
        return epoch, slice(start, start + self.micro_batch)


@dataclass
class Batch:
    """One micro-batch on the device: x (B, 3, S, S) float32 in [-1, 1], y (B,) int64."""

    x: torch.Tensor
    y: torch.Tensor
    step: int
    accum_index: int
    epoch: int


@dataclass
class _Slot:
    """One pinned ring buffer: images (B, S, S, 3) uint8 and labels (B,) int64, plus the copy that reads it."""

    images: torch.Tensor
    labels: torch.Tensor
    copied: torch.cuda.Event | None = None


class Loader:
    """Iterate micro-batches from optimiser step `start_step` on, forever (the caller stops).

    `workers` threads each decode every `workers`-th micro-batch (jitrs.load_batch with `threads` rayon threads)
    into their own ring of `depth` buffers; batches are delivered strictly in order.
    """

    def __init__(
        self,
        index: ImageIndex,
        size: int,
        plan: Plan,
        device: torch.device,
        start_step: int = 0,
        threads: int | None = None,
        workers: int = 2,
        depth: int = 2,
        bad_log: Path | None = None,
    ) -> None:
        if plan.num_images != len(index):
            raise ValueError(f"plan is for {plan.num_images} images, the index holds {len(index)}")
        if plan.steps_per_epoch < 1:
            raise UserError(
                f"a global batch of {plan.global_batch} images is larger than the dataset "
                f"({len(index)} images in {index.root})",
                param="batch_size",
            )
        self.index, self.size, self.plan, self.device = index, size, plan, device
        self.threads, self.bad_log = threads, bad_log
        self.bad_files: dict[str, str] = {}
        if bad_log is not None and bad_log.is_file():  # a resumed run: each bad file is listed once
            for line in bad_log.read_text(errors="replace").splitlines():
                path, _, reason = line.partition("\t")
                self.bad_files.setdefault(path, reason)
        self._orders: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._lock = threading.Lock()
        for name, reason in index.skipped:
            self._report(name, reason)
        self._stop = threading.Event()
        self._start = start_step * plan.accum
        pin = device.type == "cuda"
        self._free: list[queue.Queue[_Slot]] = []
        self._ready: list[queue.Queue[tuple[_Slot, int, BaseException | None]]] = []
        for _ in range(workers):
            free: queue.Queue[_Slot] = queue.Queue()
            for _ in range(depth):
                free.put(
                    _Slot(
                        torch.empty((plan.micro_batch, size, size, 3), dtype=torch.uint8, pin_memory=pin),
                        torch.empty((plan.micro_batch,), dtype=torch.int64, pin_memory=pin),
                    )
                )
            self._free.append(free)
            self._ready.append(queue.Queue(maxsize=depth))
        self._threads = [
            threading.Thread(target=self._work, args=(w, workers), name=f"jitrs-loader-{w}", daemon=True)
            for w in range(workers)
        ]
        for t in self._threads:
            t.start()

    # ------------------------------------------------------------------ producer side (background threads)
    def _order(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            if epoch not in self._orders:
                self._orders = {e: o for e, o in self._orders.items() if e >= epoch - 1}
                self._orders[epoch] = self.plan.epoch_order(epoch)
            return self._orders[epoch]

    def _get(self, q: queue.Queue):
        """The next item of q, or None once close() was called."""
        while not self._stop.is_set():
            try:
                return q.get(timeout=_POLL_S)
            except queue.Empty:
                continue
        return None

    def _work(self, worker: int, workers: int) -> None:
        counter = self._start + worker
        while not self._stop.is_set():
            slot = self._get(self._free[worker])
            if slot is None:
                return
            if slot.copied is not None:
                slot.copied.synchronize()  # the device copy that read this buffer last has finished
            error: BaseException | None = None
            try:
                self._fill(slot, counter)
            except BaseException as e:  # handed to the consumer, which re-raises it in the training loop
                error = e
            while not self._stop.is_set():
                try:
                    self._ready[worker].put((slot, counter, error), timeout=_POLL_S)
                    break
                except queue.Full:
                    continue
            if error is not None:
                return
            counter += workers

    def _fill(self, slot: _Slot, counter: int) -> None:
        step, a = divmod(counter, self.plan.accum)
        epoch, where = self.plan.positions(step, a)
        perm, flips = self._order(epoch)
        ids = perm[where]
        labels = self.index.labels[ids]
        out = slot.images.numpy()
        names = self.index.names(ids)
        _, errors = jitrs.load_batch(
            self.index.sources(ids),
            self.size,
            flip=flips[where].tolist(),
            threads=self.threads,
            out=out,
            on_error="skip",
            names=names,
        )
        if errors:
            bad = {i for i, _ in errors}
            good = [i for i in range(len(ids)) if i not in bad]
            for i, reason in errors:
                self._report(names[i], reason)
            if not good:
                raise UserError(
                    f"every image of a batch failed to decode (e.g. {names[errors[0][0]]}: {errors[0][1]})",
                    param="data",
                )
            for k, i in enumerate(sorted(bad)):
                j = good[k % len(good)]
                out[i] = out[j]
                labels[i] = labels[j]
        slot.labels.numpy()[:] = labels

    def _report(self, name: str, reason: str) -> None:
        with self._lock:
            if name in self.bad_files:
                return
            self.bad_files[name] = reason
            if self.bad_log is not None:
                with open(self.bad_log, "a") as f:
                    f.write(f"{name}\t{reason}\n")

    # ------------------------------------------------------------------ consumer side (training loop)
    def __iter__(self) -> Iterator[Batch]:
        counter = self._start
        workers = len(self._threads)
        while True:
            worker = (counter - self._start) % workers
            item = self._get(self._ready[worker])
            if item is None:
                return
            slot, got, error = item
            if error is not None:
                self.close()
                raise error
            assert got == counter, "loader workers out of order"
            x = slot.images.to(self.device, non_blocking=True)
            y = slot.labels.to(self.device, non_blocking=True)
            if self.device.type == "cuda":
                slot.copied = torch.cuda.Event()
                slot.copied.record(torch.cuda.current_stream(self.device))  # the stream the copies were queued on
            # x/255·2 − 1 on the device, NHWC uint8 -> NCHW float32. The result keeps NHWC memory order
            # (channels_last): one contiguous conversion pass instead of a strided uint8 transpose first.
            x = x.permute(0, 3, 1, 2).float().mul_(2.0 / 255.0).sub_(1.0)
            if self.device.type != "cuda":
                y = y.clone()  # on the host .to() aliases the ring buffer, which is about to be refilled
            self._free[worker].put(slot)
            step, a = divmod(counter, self.plan.accum)
            yield Batch(x, y, step, a, step // self.plan.steps_per_epoch)
            counter += 1

    def close(self) -> None:
        """Stop the background threads (idempotent)."""
        self._stop.set()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join()

    def __enter__(self) -> Loader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
