"""``vislang curate metadata|match|balance|dedup|filter|capfilt|export|video``: the curation stages
(parsers and thin calls into :mod:`vislang.curate`)."""

from __future__ import annotations

import argparse
import sys

from vislang.cli.common import non_negative_int, positive_int

ENGINE_HELP = "local (a process pool) or ray (Ray Data; RAY_ADDRESS or a local Ray); same outputs"
WORDNET = "/usr/share/wordnet"
POOL_HELP = "webdataset .tar shards, parquet tables (uid, caption, image) or folders"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "curate",
        help="curate an image-text pool: MetaCLIP metadata, matching, balancing",
        description="Curation stages over a pool of parquet / JSONL / webdataset files, on a local process "
        "pool or Ray.",
    )
    stages = p.add_subparsers(dest="curate_command", required=True, metavar="STAGE")
    add_metadata_parser(stages)
    add_match_parser(stages)
    add_balance_parser(stages)
    add_dedup_parser(stages)
    add_filter_parser(stages)
    add_capfilt_parser(stages)
    add_export_parser(stages)
    add_video_parser(stages)


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--engine", choices=["local", "ray"], default="local", help=ENGINE_HELP)
    parser.add_argument("--processes", type=positive_int, default=1, help="worker processes (default 1)")


# -- parsers ---------------------------------------------------------------------------------


def add_metadata_parser(stages: argparse._SubParsersAction) -> None:
    m = stages.add_parser(
        "metadata",
        help="build a MetaCLIP-style entry list",
        description="Write the sorted union of WordNet synset names (WordNet 3.0 data files), the entries of "
        "the given lists (one per line: Wikipedia unigrams, bigrams, titles, ...) and '0'..'99' as a JSON "
        "list; ids are positions, so the same inputs give the same file. A released MetaCLIP metadata.json "
        "can be used by 'curate match' directly.",
    )
    m.add_argument("--out", required=True, help="metadata JSON to write")
    m.add_argument("--wordnet", default=WORDNET, help=f"WordNet data folder (default {WORDNET})")
    m.add_argument("--no-wordnet", action="store_true", help="lists only")
    m.add_argument("--list", action="append", default=[], metavar="FILE", help="an entry list (repeatable)")
    m.add_argument("--no-numbers", action="store_true", help="leave out '0'..'99'")
    m.set_defaults(func=run_metadata)


def add_match_parser(stages: argparse._SubParsersAction) -> None:
    m = stages.add_parser(
        "match",
        help="match every text of a pool against the metadata (MetaCLIP's substring rule)",
        description="Per pool file: matches/NAME.parquet (uid, text_index, n_texts, entries) for every text "
        "that matches an entry, and counts/NAME.npy; for the pool: entry_counts.npy and match.json.",
    )
    m.add_argument("inputs", nargs="+", help="pool files, folders or brace patterns (.parquet, .jsonl, .tar)")
    m.add_argument("--metadata", required=True, help="metadata JSON list (or text file, one entry per line)")
    m.add_argument("--out", required=True, help="output folder")
    m.add_argument("--id-column", default="uid", help="tables: the image id column (default uid)")
    m.add_argument("--text-columns", default="caption", help="tables: comma-separated text columns (default caption)")
    add_engine_arguments(m)
    m.set_defaults(func=run_match)


def add_balance_parser(stages: argparse._SubParsersAction) -> None:
    m = stages.add_parser(
        "balance",
        help="balance matched texts over the entries (MetaCLIP: p_e = t / max(count_e, t))",
        description="Keep each matched text with probability 1 - prod(1 - p_e) over its entries, seeded by "
        "its id (the same kept set on any engine or sharding). Writes kept/NAME.parquet (uid, text_index), "
        "balance.json and entry_counts.png.",
    )
    m.add_argument("matched", help="output folder of 'curate match'")
    m.add_argument("--out", required=True, help="output folder")
    threshold = m.add_mutually_exclusive_group(required=True)
    threshold.add_argument("--t", type=float, help="the per-entry threshold (MetaCLIP: 20000 for 400M pairs)")
    threshold.add_argument(
        "--tail-share", type=float, help="choose t so that entries below it hold this share of matches"
    )
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--one-text-per-image", action="store_true", help="MetaCLIP 2: one random text per image first")
    add_engine_arguments(m)
    m.set_defaults(func=run_balance)


def add_dedup_parser(stages: argparse._SubParsersAction) -> None:
    m = stages.add_parser(
        "dedup",
        help="remove exact and near duplicates, and images near an evaluation set",
        description="Describe every image (sha256 of the bytes, a 64-bit perceptual hash, or a model's "
        "embedding), find pairs within the threshold with a k-NN range search (faiss), group them by connected "
        "components and keep the first of each group; with --against also drop images near an evaluation set. "
        "Writes dedup.parquet (uid, group, keep, duplicate, near_eval) and dedup.json.",
    )
    m.add_argument("inputs", nargs="+", help="image folders, webdataset .tar shards or parquet tables (uid, image)")
    m.add_argument("--out", required=True, help="output folder")
    m.add_argument("--method", choices=["sha256", "phash", "embedding"], default="phash")
    m.add_argument(
        "--threshold",
        type=float,
        help="phash: max Hamming distance in bits (default 6); embedding: min cosine similarity (required: it "
        "belongs to the model, e.g. 0.6 for SSCD-style copy descriptors)",
    )
    m.add_argument("--against", nargs="+", help="evaluation images (same kinds of inputs) to keep out of the pool")
    m.add_argument("--against-threshold", type=float, help="threshold against the evaluation set (default --threshold)")
    m.add_argument("--checkpoint", help="--method embedding: any model vislang.load opens")
    add_engine_arguments(m)
    m.set_defaults(func=run_dedup)


def add_filter_parser(stages: argparse._SubParsersAction) -> None:
    m = stages.add_parser(
        "filter",
        help="DataComp's filters: basic rules, CLIP score, text synsets, image clusters (their intersection)",
        description="Keep the samples that pass every chosen filter; write subset.txt (sorted uids), DataComp's "
        "u8,u8 subset.npy when uids are 32 hex digits, and filter.json with per-filter counts. Choose filters "
        "with the flags below or with --filters FILE.yaml.",
    )
    m.add_argument("inputs", nargs="+", help=POOL_HELP)
    m.add_argument("--out", required=True, help="output folder")
    m.add_argument(
        "--filters",
        metavar="FILE.yaml",
        help="instead of the filter flags: a YAML mapping of filter name (vislang.curate.filters.FILTERS) to its "
        "options, e.g. {basic: {}, clip_score: {fraction: 0.3}, text: {synsets: wnids.txt}}",
    )
    m.add_argument("--basic", action="store_true", help="English, > 2 words, > 5 characters, side >= 200, aspect <= 3")
    m.add_argument("--checkpoint", help="the model for CLIP scores and image embeddings (any vislang.load opens)")
    score = m.add_mutually_exclusive_group()
    score.add_argument("--clip-threshold", type=float, help="keep CLIP scores >= this")
    score.add_argument("--clip-fraction", type=float, help="keep this top fraction by CLIP score (e.g. 0.3)")
    m.add_argument("--synsets", help="text-based: a file of WordNet noun wnids (e.g. ImageNet's n01440764 ...)")
    m.add_argument("--wordnet", default=WORDNET, help="WordNet dict folder for --synsets")
    m.add_argument("--target", nargs="+", help="image-based: target images (folders, shards or tables)")
    m.add_argument("--clusters", type=non_negative_int, help="image-based: k-means clusters of the pool")
    m.add_argument("--seed", type=int, default=0)
    add_engine_arguments(m)
    m.set_defaults(func=run_filter)


def add_capfilt_parser(stages: argparse._SubParsersAction) -> None:
    m = stages.add_parser(
        "capfilt",
        help="BLIP's CapFilt: caption every image, score original and generated captions, keep the better",
        description="A captioner (cap, cappa or coca checkpoint) writes a caption per image; a contrastive model "
        "scores both captions against the image. Without --threshold the better caption is kept; with it, every "
        "caption scoring at least the threshold. Writes NAME.parquet per pool file and capfilt.json.",
    )
    m.add_argument("inputs", nargs="+", help=POOL_HELP)
    m.add_argument("--out", required=True, help="output folder")
    m.add_argument("--captioner", required=True, help="cap, cappa or coca checkpoint")
    m.add_argument("--scorer", required=True, help="contrastive checkpoint (anything vislang.load opens)")
    m.add_argument("--threshold", type=float, help="keep every caption with a score >= this (default: the better one)")
    m.add_argument("--method", choices=["greedy", "beam"], default="greedy")
    m.add_argument("--beam-size", type=positive_int, default=4)
    add_engine_arguments(m)
    m.set_defaults(func=run_capfilt)


def add_export_parser(stages: argparse._SubParsersAction) -> None:
    m = stages.add_parser(
        "export",
        help="write the samples every stage kept as webdataset shards (the curated training set)",
        description="Intersect the keep lists (subset.txt / subset.npy from filter, dedup.parquet, a balance or "
        "capfilt output folder) and write the pool's samples in all of them as shards (img2dataset layout, "
        "sizes.json); CapFilt's chosen caption replaces the original.",
    )
    m.add_argument("inputs", nargs="+", help="the pool: webdataset .tar shards, parquet tables or folders")
    m.add_argument("--keep", action="append", default=[], metavar="STAGE_OUTPUT", help="a keep list (repeatable)")
    m.add_argument("--out", required=True, help="folder for the shards (must hold no .tar files)")
    m.add_argument("--shard-size", type=positive_int, default=10000)
    m.set_defaults(func=run_export)


def add_video_parser(stages: argparse._SubParsersAction) -> None:
    m = stages.add_parser(
        "video",
        help="narrated videos -> image-text shards: scene-change keyframes paired with their narration",
        description="Choose keyframes of each video by scene change, pair each with the subtitle cues around it, "
        "filter the narration (fillers, minimum words/characters) and write webdataset shards (KEY.jpg, KEY.txt, "
        "KEY.json) that 'vislang train' reads, with video.json (the summary). Subtitles go with videos by file "
        "stem (lecture.mp4 and lecture.srt), else in the given order. docs/curate_video.md",
    )
    m.add_argument("videos", nargs="+", help="video files or folders of .mp4 / .webm (folders: recursively, sorted)")
    m.add_argument("--subtitles", nargs="+", required=True, help=".srt / .vtt files or folders")
    m.add_argument("--out", required=True, help="folder for the shards (must hold no .tar files)")
    m.add_argument(
        "--pair-by", choices=["auto", "stem", "order"], default="auto", help="auto: stem when every video has one"
    )
    m.add_argument("--score", choices=["histogram", "grey"], default="histogram", help="scene-change score")
    m.add_argument(
        "--threshold",
        type=float,
        help="score against the last keyframe for a new one (default histogram 0.3, grey 0.1)",
    )
    m.add_argument("--min-gap", type=float, default=1.0, help="seconds at least between keyframes (default 1)")
    m.add_argument("--max-keyframes", type=non_negative_int, default=0, help="per video, the best-scoring (0: all)")
    m.add_argument("--before", type=float, default=2.0, help="seconds of narration before a keyframe (default 2)")
    m.add_argument("--after", type=float, default=6.0, help="seconds of narration after a keyframe (default 6)")
    m.add_argument(
        "--rules", metavar="FILE.yaml", help="narration rules (YAML/JSON): fillers, strip_fillers, min_words, min_chars"
    )
    m.add_argument("--min-words", type=non_negative_int, help="drop narration with fewer words (default 3)")
    m.add_argument("--min-chars", type=non_negative_int, help="drop narration with fewer characters (default 10)")
    m.add_argument("--fillers", help="comma-separated filler phrases replacing the list ('' for none)")
    m.add_argument("--keep-fillers", action="store_true", help="leave filler words in the kept text")
    m.add_argument("--jpeg-quality", type=positive_int, default=90)
    m.add_argument("--shard-size", type=positive_int, default=10000)
    m.set_defaults(func=run_video)


# -- commands --------------------------------------------------------------------------------


def run_metadata(args: argparse.Namespace) -> int:
    from vislang.curate.metadata import build_metadata, write_metadata

    wordnet = None if args.no_wordnet else args.wordnet
    entries = build_metadata(wordnet, args.list, numbers=not args.no_numbers)
    write_metadata(entries, args.out)
    print(f"{len(entries)} entries -> {args.out}")
    return 0


def run_match(args: argparse.Namespace) -> int:
    from vislang.curate.pipeline import match_pool

    s = match_pool(
        args.inputs, args.metadata, args.out, args.id_column, tuple(args.text_columns.split(",")), args.engine,
        args.processes,
    )  # fmt: skip
    rate = s["texts"] / s["seconds"] if s["seconds"] else float("nan")
    print(
        f"{s['texts']} texts of {s['images']} images: {s['matched_texts']} matched ({s['matches']} matches, "
        f"{s['entries_matched']} of {s['entries']} entries); {rate:.0f} texts/s -> {args.out}"
    )
    return 0


def run_balance(args: argparse.Namespace) -> int:
    from vislang.curate.pipeline import balance_pool

    s = balance_pool(
        args.matched, args.out, args.t, args.tail_share, args.seed, args.one_text_per_image, args.engine,
        args.processes,
    )  # fmt: skip
    print(
        f"t = {s['t']:g} (tail share {s['tail_share_before']:.3f}): kept {s['kept_texts']} of "
        f"{s['matched_texts']} matched texts; largest entry {s['largest_entry_before']} -> "
        f"{s['largest_entry_after']}; plot {args.out}/entry_counts.png"
    )
    return 0


def run_dedup(args: argparse.Namespace) -> int:
    from vislang.curate.dedup import dedup_pool

    s = dedup_pool(
        args.inputs, args.out, args.method, args.threshold, args.against, args.against_threshold, args.checkpoint,
        args.engine, args.processes,
    )  # fmt: skip
    print(
        f"{s['images']} images ({s['skipped_unreadable']} unreadable): {s['removed_duplicates']} duplicates in "
        f"{s['duplicate_groups']} groups, {s['removed_near_eval']} near the evaluation set; kept {s['kept']} "
        f"-> {args.out}/dedup.parquet"
    )
    return 0


def run_filter(args: argparse.Namespace) -> int:
    from vislang.curate.filters import filter_pool, read_filters
    from vislang.errors import ConfigError

    filters = filters_from_flags(args)
    if args.filters is not None:
        if filters:
            raise ConfigError(
                "--filters FILE.yaml replaces --basic, --clip-threshold/--clip-fraction, --synsets and --target: "
                "give one or the other"
            )
        filters = read_filters(args.filters)
    elif not filters:
        raise ConfigError(
            "choose at least one filter: --basic, --clip-threshold/--clip-fraction, --synsets, --target, or "
            "--filters FILE.yaml"
        )
    s = filter_pool(args.inputs, args.out, filters, args.checkpoint, args.engine, args.processes)
    passed = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in s["passed"].items())
    print(f"{s['samples']} samples; passed: {passed}; kept {s['kept']} -> {args.out}/{' and '.join(s['files'])}")
    return 0


def filters_from_flags(args: argparse.Namespace) -> dict[str, dict]:
    """The ``{name: options}`` mapping the filter flags choose (validated by the filters)."""
    filters: dict[str, dict] = {}
    if args.basic:
        filters["basic"] = {}
    if args.clip_threshold is not None:  # the two flags are mutually exclusive
        filters["clip_score"] = {"threshold": args.clip_threshold}
    elif args.clip_fraction is not None:
        filters["clip_score"] = {"fraction": args.clip_fraction}
    if args.synsets:
        filters["text"] = {"synsets": args.synsets, "wordnet": args.wordnet}
    if args.target:
        clusters = {} if args.clusters is None else {"clusters": args.clusters}
        filters["image"] = {"target": args.target, **clusters, "seed": args.seed}
    return filters


def run_capfilt(args: argparse.Namespace) -> int:
    from vislang.curate.capfilt import capfilt_pool

    s = capfilt_pool(
        args.inputs, args.out, args.captioner, args.scorer, args.threshold, args.method, args.beam_size, args.engine,
        args.processes,
    )  # fmt: skip
    print(
        f"{s['images']} images ({s['skipped']} unreadable): kept {s['kept_original']} original and "
        f"{s['kept_generated']} generated captions, {s['dropped']} images left without one -> {args.out}"
    )
    return 0


def run_export(args: argparse.Namespace) -> int:
    from vislang.curate.export import export_subset

    sizes = export_subset(args.inputs, args.keep, args.out, args.shard_size)
    print(f"wrote {sum(sizes.values())} samples in {len(sizes)} shards to {args.out}")
    return 0


def run_video(args: argparse.Namespace) -> int:
    from vislang.config.base import build_section
    from vislang.curate.subtitles import read_rules
    from vislang.curate.video import VideoCurationOptions, curate_videos

    flags = {"min_words": args.min_words, "min_chars": args.min_chars}
    if args.fillers is not None:
        flags["fillers"] = [f.strip() for f in args.fillers.split(",") if f.strip()]
    if args.keep_fillers:
        flags["strip_fillers"] = False
    rules = read_rules(args.rules, {k: v for k, v in flags.items() if v is not None})
    fields = ("score", "threshold", "min_gap", "max_keyframes", "before", "after", "jpeg_quality")
    options = build_section(VideoCurationOptions, {k: getattr(args, k) for k in fields}, [], "curate video")
    options.rules = rules
    s = curate_videos(args.videos, args.subtitles, args.out, options, args.pair_by, args.shard_size)
    dropped = ", ".join(f"{n} {reason}" for reason, n in s["dropped"].items()) or "none"
    print(
        f"{s['videos']} videos ({s['videos_corrupt']} corrupt, skipped; {s['videos_truncated']} truncated): "
        f"{s['keyframes']} keyframes, {s['pairs']} pairs kept; dropped: {dropped} -> {args.out} "
        f"({len(s['shards'])} shards)"
    )
    for video in s["corrupt"]:
        print(f"curate video: skipped corrupt video {video}", file=sys.stderr)
    return 0
