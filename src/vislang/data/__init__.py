"""Training data: sources, the world, evaluation sets, and the loader the training loop uses."""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from vislang.config import DataConfig, SourceConfig, TrainConfig, VisionConfig, WorldConfig
from vislang.data.batches import Batches, Tokenize
from vislang.data.decode import BadSample, SampleDecoder
from vislang.data.labelled import LabelledSource, LabelledSourceConfig, build_labelled
from vislang.data.samples import FolderSamples, TableSamples, WorldSamples
from vislang.data.shards import ShardSamples, is_remote
from vislang.data.source import RandomAccessSource, Source, StreamedSource
from vislang.data.stream import ShardStream
from vislang.data.texts import TextsSource
from vislang.data.transforms import ImageTransform, to_tensor
from vislang.data.video import ClipDecoder
from vislang.data.world import World
from vislang.data.world_motion import MotionSamples, MotionWorld
from vislang.data.world_tasks import RetrievalSet
from vislang.errors import DataError

__all__ = [
    "RandomAccessSource",
    "SampleDecoder",
    "Source",
    "StreamedSource",
    "build_batches",
    "build_source",
    "build_sources",
    "build_world",
    "drawn_batch_size",
    "first_pass",
    "labelled_batches",
    "source_retrieval_set",
    "tokenizer_corpus",
    "train_loader",
]


def build_world(world: WorldConfig, image_size: int) -> World:
    """The built-in world of ``data.world`` at the model's image size (drawn at that size, or at
    ``data.world.render_size`` and resized to it)."""
    return World(
        image_size,
        world.seed,
        world.two_object_prob,
        world.partial_caption_prob,
        world.distinct_colors,
        world.reading_order,
        rendering=world.rendering,
        render_size=world.render_size,
    )


def build_sources(
    data: DataConfig, image_size: int, seed: int, train: bool = True, check: bool = True
) -> dict[str, Source]:
    """The configured training sources by name (as the logs name them). Built once per run:
    opening a source reads a table or indexes shards, which the tokenizer and the loader share.
    With ``check``, each must hold a usable sample."""
    alone = len(data.sources) == 1
    if len({s.kind == "texts" for s in data.sources}) > 1:
        raise DataError("data.sources: texts sources have no images and cannot be mixed with image sources")
    return {
        s.label(i, alone): build_source(data, s, image_size, seed, train, check) for i, s in enumerate(data.sources)
    }


def build_source(
    data: DataConfig,
    source: SourceConfig | LabelledSourceConfig,
    image_size: int,
    seed: int,
    train: bool = True,
    check: bool = True,
) -> Source:
    """One source of any kind (training or held out). ``train`` applies ``data.random_crop``;
    ``seed`` orders the rows and lanes. ``data`` gives what all sources share: how images are
    resized and cropped and the pixel limit."""
    s = source
    if s.kind == "texts":  # no images: batches of tokens only (vislang.data.texts)
        return TextsSource(s.path, s.caption_columns[0], seed, resampled=s.resampled, shuffle=s.shuffle)
    transform = ImageTransform(
        image_size, data.resize_mode, data.random_crop and train, data.crop_scale, interpolation=data.interpolation
    )
    if s.kind == "world":
        world = build_world(data.world, image_size)
        if data.world.motion:
            return MotionSamples(MotionWorld(world, data.world.motion_frames))
        return WorldSamples(world, transform if transform.random_crop else None)
    if isinstance(s, LabelledSourceConfig):
        built = build_labelled(s, build_world(data.world, image_size), transform, data.max_image_pixels, seed)
        if check:
            _check_usable(built, f"data source {s.label(0, True)}")
        return built
    decoder = SampleDecoder(transform, data.max_image_pixels, s.caption_pick)
    if data.frames > 1:  # clips of T frames (vislang.data.video)
        decoder = ClipDecoder(transform, data.max_image_pixels, s.caption_pick, data.frames, data.frame_sampling)
    built: Source
    if s.kind == "shards" and _streamed(s):
        if not s.shuffle:
            raise DataError(
                f"data source {s.name or s.path}: shuffle: false needs random access (local shards); "
                "a stream keeps its order with shuffle_buffer: 0"
            )
        built = ShardStream(s.path, decoder, seed, resampled=s.resampled, shuffle_buffer=s.shuffle_buffer)
    elif s.kind == "shards":
        built = ShardSamples(s.path, decoder, seed, resampled=s.resampled, shuffle=s.shuffle)
    elif s.kind == "table":
        built = TableSamples(
            s.path,
            s.image_column,
            s.caption_columns,
            decoder,
            seed,
            resampled=s.resampled,
            shuffle=s.shuffle,
            label_column=s.label_column,
        )
    else:
        built = FolderSamples(s.path, decoder, seed, resampled=s.resampled, shuffle=s.shuffle)
    if check:
        _check_usable(built, f"data source {s.name or s.kind} ({s.path})")
    return built


def first_pass(source: Source) -> Iterator[Callable[[np.random.Generator], tuple]]:
    """One pass over a source, as ``read(rng) -> (image, caption)`` calls that may raise
    :class:`BadSample`: random-access sources in their epoch-0 order, streams in shard order."""
    if source.streaming:
        for sample in source.one_pass():
            yield lambda rng, sample=sample: source.decode(sample, rng)
    else:  # the world has no end: its positions count on
        for position in itertools.count() if source.size is None else range(source.size):
            yield lambda rng, p=position: source.get(p, rng)


def labelled_batches(
    source: LabelledSource, mean, std, n: int, batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The first ``n`` usable samples of a labelled source (its first-epoch order; fewer when it
    is smaller) as (normalised images, labels) batches of at most ``batch_size``: what a probe
    fitted before fine-tuning (LP-FT) sees."""
    total = n if source.size is None else min(n, source.size)
    images, labels = [], []
    for position in range(total):
        try:
            image, label = source.get(position, np.random.default_rng([0, 303, position]))
        except BadSample:
            continue
        images.append(image)
        labels.append(label)
        if len(images) == batch_size:
            yield to_tensor(np.stack(images), mean, std), torch.tensor(labels)
            images, labels = [], []
    if images:
        yield to_tensor(np.stack(images), mean, std), torch.tensor(labels)


def source_retrieval_set(source: Source, n: int | None, seed: int) -> RetrievalSet:
    """The first ``n`` usable samples of a source (one pass; ``None``: all of them) as a
    retrieval set: image i with its caption i."""
    images, texts = [], []
    rng = np.random.default_rng(seed)
    for read in first_pass(source):
        try:
            image, caption = read(rng)
        except BadSample:
            continue
        images.append(image)
        texts.append(caption)
        if len(images) == n:
            break
    if not images:
        raise DataError(f"{source.describe()}: no usable image-caption pair for retrieval")
    return RetrievalSet(np.stack(images), texts, np.arange(len(images)))


def _streamed(s: SourceConfig) -> bool:
    if s.access != "auto":
        return s.access == "stream"
    return any(is_remote(url) for url in s.path.split("::"))


def _check_usable(source: Source, what: str) -> None:
    """Stop with an error naming the source when none of its samples decodes (reads up to the
    first one that does, so a healthy source costs one sample)."""
    rng = np.random.default_rng(0)
    for read in first_pass(source):
        try:
            read(rng)
            return
        except BadSample:
            continue
    raise DataError(f"{what}: no usable sample in it (check with vislang data inspect)")


def tokenizer_corpus(sources: dict[str, Source], n_texts: int) -> list[str]:
    """Captions to train a run's BPE on: ``n_texts`` of them (``tokenizer.train_texts``), shared
    evenly among the sources so that each one's vocabulary is represented."""
    found = list(sources.values())
    per_source = -(-n_texts // len(found))
    return [caption for source in found for caption in source.captions(per_source)]


def drawn_batch_size(data: DataConfig, batch_size: int) -> int:
    """Samples drawn per step and rank: ``batch_size``, or more when CiT selects from them."""
    cit = data.cit
    return batch_size if cit is None else math.ceil(batch_size / cit.keep)


def build_batches(
    data: DataConfig,
    vision: VisionConfig,
    batch_size: int,
    seed: int,
    tokenizer: Tokenize,
    sources: dict[str, Source],
    rank: int = 0,
    world: int = 1,
) -> Batches:
    """Rank ``rank``'s batches of ``batch_size`` (per rank; more drawn under CiT) from ``sources``,
    normalised for the image tower ``vision``; ``seed`` draws the mixing and the negatives."""
    return Batches(
        sources,
        [s.weight for s in data.sources],
        tokenizer,
        drawn_batch_size(data, batch_size),
        vision.image_mean,
        vision.image_std,
        seed,
        data.hard_negatives,
        rank=rank,
        world=world,
        lanes=data.num_workers,
    )


def train_loader(
    data: DataConfig,
    vision: VisionConfig,
    train: TrainConfig,
    tokenizer: Tokenize,
    start_step: int,
    pin_memory: bool = False,
    sources: dict[str, Source] | None = None,
) -> tuple[Iterator[dict], str]:
    """This rank's batches ``start_step .. train.steps - 1`` in order, built in
    ``data.num_workers`` processes, and a one-line description of the sources for the log.
    ``train.batch_size`` is the batch of one rank (the global batch is world x that)."""
    workers = data.num_workers
    if workers:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # workers fork after the BPE trained
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    sources = sources or build_sources(data, vision.image_size, train.seed)
    batches = build_batches(data, vision, train.batch_size, train.seed, tokenizer, sources, rank, world)
    loader = DataLoader(
        batches,
        batch_size=None,
        # Batch b goes to worker (b - start) mod workers (the loader hands out indices in turn),
        # so each worker reads one lane of every streamed source.
        sampler=range(start_step, train.steps),
        num_workers=workers,
        pin_memory=pin_memory,
        prefetch_factor=4 if workers else None,
        worker_init_fn=_one_thread,
        # Its own generator: drawing the workers' base seed must not advance the global RNG,
        # or a resumed run would consume the stream differently from an uninterrupted one.
        generator=torch.Generator().manual_seed(train.seed),
    )
    return iter(loader), batches.describe()


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)
