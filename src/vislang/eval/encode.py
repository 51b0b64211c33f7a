"""Feature extraction for evaluators: images decoded by loader workers, encoded in batches, and
cached for one model state so that a suite encodes each image once.

Every evaluator is called as ``evaluator(objective, features)``; ``features`` is the
:class:`FeatureCache` of that one :func:`vislang.eval.evaluate` call. Two tasks on the same
images (zero-shot and retrieval on one set, three probes on one split) share one encoding.

Under torchrun every rank encodes its contiguous share of the rows and the shares are gathered
in rank order, so every rank holds all features (and computes the same metrics) after encoding
about 1/world of them: evaluation keeps every rank busy instead of parking ranks at a barrier.
"""

from __future__ import annotations

import contextlib
import hashlib
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from vislang.data.benchmark.base import ArrayImages, ImageSet
from vislang.data.transforms import ImageTransform, to_tensor
from vislang.errors import DataError, VislangError
from vislang.objectives.base import Objective

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class ImagePipeline:
    """How evaluation images reach the model: the model's own eval preprocessing (resize, crop,
    normalise), the batch size, loader workers, a progress bar and the autocast precision."""

    transform: ImageTransform
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    batch_size: int = 256
    workers: int = 0
    progress: bool = False
    precision: str = "fp32"

    def key(self) -> str:
        t = self.transform
        return f"{t.size}:{t.resize_mode}:{t.interpolation}:{t.pil_resize}:{t.fill}:{self.mean}:{self.std}:{self.precision}"


def device_of(objective: Objective) -> torch.device:
    return next(objective.parameters()).device


def autocast(objective: Objective, precision: str) -> contextlib.AbstractContextManager:
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_of(objective).type, dtype=dtype)


def sharded(n: int, encode: Callable[[int, int], torch.Tensor]) -> torch.Tensor:
    """``encode(start, stop)`` of rows ``0..n``: this rank's share, gathered from all ranks in order
    (one process, or fewer rows than ranks: all rows here)."""
    world = dist.get_world_size() if dist.is_initialized() else 1
    if world == 1 or n < world:
        return encode(0, n)
    bounds = [n * r // world for r in range(world + 1)]
    rank = dist.get_rank()
    failure: VislangError | None = None
    try:
        mine = encode(bounds[rank], bounds[rank + 1])
    except VislangError as error:  # every rank must learn of it, or the others wait in all_gather
        failure, mine = error, None
    failed = torch.tensor([0 if failure is None else 1], device=_collective_device())
    dist.all_reduce(failed, op=dist.ReduceOp.MAX)
    if failed.item():
        raise failure if failure is not None else DataError("evaluation stopped: another rank's data failed")
    longest = max(b - a for a, b in zip(bounds[:-1], bounds[1:]))
    padded = torch.cat([mine, mine.new_zeros(longest - len(mine), *mine.shape[1:])])
    gathered = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(gathered, padded.contiguous())
    return torch.cat([g[: b - a] for g, a, b in zip(gathered, bounds[:-1], bounds[1:])])


def _collective_device() -> torch.device:
    """Where a collective's tensors live: the current CUDA device under NCCL, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


class _Decoded(torch.utils.data.Dataset):
    """Rows ``start..stop`` of an image set, decoded and resized (in a loader worker). A bad
    image comes back as its error message, raised in the main process as one line (an error
    raised inside a worker would reach the user as the worker's traceback)."""

    def __init__(self, images: ImageSet, transform: ImageTransform, start: int, stop: int) -> None:
        self.images, self.transform, self.start, self.stop = images, transform, start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, i: int) -> np.ndarray | str:
        try:
            image = self.images.read(self.start + i)
        except VislangError as error:
            return str(error)
        return image if isinstance(image, np.ndarray) else self.transform(image)


def _stack(rows: list[np.ndarray | str]) -> torch.Tensor | str:
    """A batch of decoded images, or the first row's error message."""
    failed = next((row for row in rows if isinstance(row, str)), None)
    return failed if failed is not None else torch.from_numpy(np.stack(rows))


def image_batches(
    images: ImageSet, pipeline: ImagePipeline, start: int = 0, stop: int | None = None
) -> Iterator[torch.Tensor]:
    """Normalised [B, 3, S, S] float batches of rows ``start..stop``, in order."""
    stop = len(images) if stop is None else stop
    size = pipeline.batch_size
    if isinstance(images, ArrayImages):  # already decoded at the model's size
        for i in range(start, stop, size):
            yield to_tensor(images.images[i : min(i + size, stop)], pipeline.mean, pipeline.std)
        return
    loader = torch.utils.data.DataLoader(
        _Decoded(images, pipeline.transform, start, stop),
        batch_size=size,
        num_workers=pipeline.workers,
        collate_fn=_stack,
        persistent_workers=False,
    )
    for batch in loader:
        if isinstance(batch, str):
            raise DataError(batch)
        yield to_tensor(batch, pipeline.mean, pipeline.std)


@torch.no_grad()
def encode_images(
    objective: Objective, images: ImageSet, pipeline: ImagePipeline, what: str = "images"
) -> torch.Tensor:
    """The objective's image features of every image, in order (float32 where floating)."""
    device = device_of(objective)

    def encode(start: int, stop: int) -> torch.Tensor:
        bar = tqdm(total=stop - start, desc=f"encode {what}", unit="img", disable=not pipeline.progress, leave=False)
        chunks = []
        for batch in image_batches(images, pipeline, start, stop):
            with autocast(objective, pipeline.precision):
                chunks.append(_float(objective.image_features(batch.to(device))))
            bar.update(len(batch))
        bar.close()
        return torch.cat(chunks)

    return sharded(len(images), encode)


@torch.no_grad()
def text_features(
    objective: Objective, tokens: torch.Tensor, batch_size: int, precision: str = "fp32", pad_id: int | None = None
) -> torch.Tensor:
    """Features of [N, L] tokens, in their order. With ``pad_id``, texts are encoded in order of
    length, so each batch (which the text tower cuts after its longest text) holds texts of
    similar length."""
    device = device_of(objective)
    order = None
    if pad_id is not None and len(tokens) > batch_size:
        lengths = (tokens != pad_id).flip(1).int().cummax(dim=1).values.sum(dim=1)
        order = torch.argsort(lengths, stable=True)
        tokens = tokens[order]

    def encode(start: int, stop: int) -> torch.Tensor:
        chunks = []
        for i in range(start, stop, batch_size):
            with autocast(objective, precision):
                chunks.append(_float(objective.text_features(tokens[i : min(i + batch_size, stop)].to(device))))
        return torch.cat(chunks)

    features = sharded(len(tokens), encode)
    if order is None:
        return features
    out = torch.empty_like(features)
    out[order.to(features.device)] = features
    return out


def image_features(
    objective: Objective, images: np.ndarray, mean: Sequence[float], std: Sequence[float], batch_size: int
) -> torch.Tensor:
    """Features of images that are already decoded at the model's size ([N, S, S, 3] uint8)."""
    pipeline = ImagePipeline(ImageTransform(images.shape[1]), tuple(mean), tuple(std), batch_size)
    return encode_images(objective, ArrayImages(images, "array"), pipeline)


def _float(x: torch.Tensor) -> torch.Tensor:
    return x.float() if x.is_floating_point() else x


class FeatureCache:
    """Features of one model state, each image set and each text list encoded once.

    Made fresh by every :func:`vislang.eval.evaluate` call (the model changes between calls in
    training). Keys are the image set's identity and the preprocessing, or the texts themselves."""

    def __init__(self) -> None:
        self._store: dict[tuple, torch.Tensor] = {}
        self._owner: weakref.ref | None = None
        self.encoded_images = 0  # images actually encoded (not served from the cache)

    def _for(self, objective: Objective) -> None:
        """Features belong to one objective: another one (or a new object at a reused address)
        starts the cache afresh."""
        if self._owner is None or self._owner() is not objective:
            self._store.clear()
            self._owner = weakref.ref(objective)

    def images(
        self, objective: Objective, images: ImageSet, pipeline: ImagePipeline, what: str = "images"
    ) -> torch.Tensor:
        self._for(objective)
        key = ("images", images.key(), pipeline.key())
        if key not in self._store:
            self._store[key] = encode_images(objective, images, pipeline, what)
            self.encoded_images += len(images)
        return self._store[key]

    def texts(
        self, objective: Objective, texts: Sequence[str], tokenizer: Callable, batch_size: int, precision: str = "fp32"
    ) -> torch.Tensor:
        self._for(objective)
        digest = hashlib.sha1("\0".join(texts).encode()).hexdigest()
        key = ("texts", id(tokenizer), len(texts), digest, precision)
        if key not in self._store:
            # each distinct text once: real caption sets repeat captions, and a repeated caption
            # must get bit-identical features (its ties with itself are what ranking conventions decide)
            distinct = list(dict.fromkeys(texts))
            where = {text: i for i, text in enumerate(distinct)}
            pad_id = getattr(tokenizer, "pad_id", None)  # a plain callable tokenizer: encoded in order
            features = text_features(objective, tokenizer(distinct), batch_size, precision, pad_id)
            index = torch.tensor([where[text] for text in texts], dtype=torch.long, device=features.device)
            self._store[key] = features[index]
        return self._store[key]
