"""``vislang tokenizer stats``: how long tokenizers make a corpus's texts, against a byte-level BPE."""

from __future__ import annotations

import argparse
from pathlib import Path

from vislang.cli.common import positive_int


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("tokenizer", help="measure tokenizers", description="Measure tokenizers on a corpus.")
    sub = p.add_subparsers(dest="tokenizer_command", required=True, metavar="SUBCOMMAND")
    s = sub.add_parser(
        "stats",
        help="tokens per text and truncation of each config's tokenizer, against a byte-level BPE",
        description="Train (or load) each config's tokenizer on CORPUS and report tokens per text (mean, median, "
        "p95, max) and the texts cut at the context length, beside a plain byte-level BPE of the same "
        "vocabulary size. Prints a markdown table; with --out writes stats.json and lengths.png.",
    )
    s.add_argument("corpus", help="a text file (one text per line) or a .csv/.tsv/.parquet table")
    s.add_argument("--config", action="append", required=True, help="a run config whose tokenizer is measured "
                   "(repeatable)")  # fmt: skip
    s.add_argument("--column", default="caption", help="the table column holding the texts (default caption)")
    s.add_argument("--context-length", type=positive_int, help="default: the first config's model.text.context_length")
    s.add_argument("--out", help="folder for stats.json and lengths.png")
    s.set_defaults(func=run_stats)


def run_stats(args: argparse.Namespace) -> int:
    from vislang.config import TokenizerConfig
    from vislang.experiment import load_config
    from vislang.tokenizer_stats import build_from_section, compare, markdown_table, read_corpus, write_report

    texts = read_corpus(args.corpus, args.column)
    configs = [(Path(path), load_config(path)) for path in args.config]
    context = args.context_length or configs[0][1].model.text.context_length
    tokenizers = {}
    for path, cfg in configs:
        section = cfg.tokenizer
        corpus = texts[: section.train_texts]
        baseline = f"byte-level BPE (vocab {section.vocab_size})"
        if baseline not in tokenizers and section.kind != "openai":
            tokenizers[baseline] = build_from_section(TokenizerConfig(vocab_size=section.vocab_size), corpus, context)
        tokenizers[f"{path.name} ({section.kind})"] = build_from_section(section, corpus, context)
    stats, counts = compare(tokenizers, texts, context)
    print(markdown_table(stats, context))
    if args.out:
        write_report(stats, counts, context, args.out)
        print(f"wrote {Path(args.out) / 'stats.json'} and {Path(args.out) / 'lengths.png'}")
    return 0
