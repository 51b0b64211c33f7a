"""Texts/s of MetaCLIP substring matching: vislang's matcher against the single-automaton
pyahocorasick approach of MetaCLIP's repository, in the same run.

The reference is rebuilt here from its description: the spacing rule applied with one
``str.replace`` per character, an automaton (default storage) whose value for each " entry " is
the tuple (entry id, spaced entry), and the ids collected from ``automaton.iter``. vislang's
matcher spaces with one ``str.translate`` and stores plain integer ids.

Entries and captions are synthetic (no downloads): a Zipf-distributed vocabulary of pseudo-words,
unigram, bigram and title entries (>= 500,000), captions of 3-25 words with punctuation. Both
matchers must return the same ids for every caption (checked). Then the pool pipeline
(``vislang.curate.pipeline.match_pool``: read parquet, match, write matches) runs with 1 and 2
processes over the same captions split in files.

    python bench/curation_throughput.py [--entries 500000] [--texts 100000]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import tempfile
import time
from pathlib import Path

import numpy as np


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def synthetic(n_entries: int, n_texts: int, seed: int = 0) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    vocab = sorted({"".join(rng.choice(letters, rng.integers(2, 10))) for _ in range(300_000)})
    vocab = [w.capitalize() if i % 7 == 0 else w for i, w in enumerate(vocab)]
    zipf = 1.0 / np.arange(1, len(vocab) + 1) ** 1.05
    zipf /= zipf.sum()
    order = rng.permutation(len(vocab))

    draws = iter(order[rng.choice(len(vocab), 40 * (n_entries + n_texts), p=zipf)].tolist())

    def words(k: int) -> list[str]:
        return [vocab[next(draws)] for _ in range(k)]

    entries = set(vocab[: n_entries // 3])
    while len(entries) < n_entries:
        entries.add(" ".join(words(int(rng.integers(2, 5)))))
    puncts = ["", "", "", ",", ".", "!", "?", ":", ";"]
    texts = []
    for _ in range(n_texts):
        k = int(rng.integers(3, 26))
        texts.append(" ".join(w + puncts[int(rng.integers(len(puncts)))] for w in words(k)))
    return sorted(entries), texts


# -- the reference: MetaCLIP's single-automaton approach, rebuilt from its description -----------


def reference_spacing(text: str) -> str:
    spaced = f" {text} "
    for punct in [",", ".", ";", ":", "?", "!", "`"]:
        spaced = spaced.replace(punct, f" {punct} ")
    for char in ["\t", "\n", "\r"]:
        spaced = spaced.replace(char, " ")
    return spaced


def reference_automaton(entries: list[str]):
    import ahocorasick

    automaton = ahocorasick.Automaton()
    for entry_id, entry in enumerate(entries):
        key = f" {entry} "
        automaton.add_word(key, (entry_id, key))
    automaton.make_automaton()
    return automaton


def reference_match(automaton, text: str) -> list[int]:
    return sorted({entry_id for _, (entry_id, _) in automaton.iter(reference_spacing(text))})


_REF = None


def _reference_chunk(texts: list[str]) -> int:
    return sum(len(reference_match(_REF, t)) for t in texts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=500_000)
    parser.add_argument("--texts", type=int, default=100_000)
    parser.add_argument("--files", type=int, default=8)
    args = parser.parse_args()
    global _REF

    from vislang.curate import pipeline
    from vislang.curate.match import EntryMatcher
    from vislang.curate.metadata import write_metadata

    t0 = time.perf_counter()
    entries, texts = synthetic(args.entries, args.texts)
    print(f"{len(entries)} entries, {len(texts)} captions (generated in {time.perf_counter() - t0:.1f} s)")

    rows = []
    base = rss_mib()
    t0 = time.perf_counter()
    _REF = reference_automaton(entries)
    ref_build, ref_mem = time.perf_counter() - t0, rss_mib() - base
    base = rss_mib()
    t0 = time.perf_counter()
    ours = EntryMatcher(entries)
    our_build, our_mem = time.perf_counter() - t0, rss_mib() - base

    t0 = time.perf_counter()
    ref_ids = [reference_match(_REF, t) for t in texts]
    ref_rate = len(texts) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    our_ids = [ours(t) for t in texts]
    our_rate = len(texts) / (time.perf_counter() - t0)
    assert our_ids == ref_ids, "the matchers disagree"
    matched = sum(bool(i) for i in our_ids)
    print(f"{matched / len(texts):.1%} of captions match; {sum(map(len, our_ids)) / len(texts):.2f} entries each")
    rows.append(("reference, 1 process", ref_rate, ref_build, ref_mem))
    rows.append(("vislang matcher, 1 process", our_rate, our_build, our_mem))

    # reference on 2 processes (fork, the automaton shared), chunks of the captions
    chunks = [texts[i::2] for i in range(2)]
    t0 = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(2) as pool:
        pool.map(_reference_chunk, chunks)
    rows.append(("reference, 2 processes", len(texts) / (time.perf_counter() - t0), ref_build, ref_mem))
    del _REF

    # the pool pipeline: parquet in, matches out
    import pyarrow as pa
    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "pool").mkdir()
        for f in range(args.files):
            part = texts[f :: args.files]
            uids = [f"{f}-{i}" for i in range(len(part))]
            pq.write_table(pa.table({"uid": uids, "caption": part}), tmp / "pool" / f"{f:05d}.parquet")
        write_metadata(entries, tmp / "metadata.json")
        metadata = str((tmp / "metadata.json").resolve())
        t0 = time.perf_counter()
        pipeline._matcher(metadata)  # built once, before the workers fork
        build = time.perf_counter() - t0
        for processes in (1, 2):
            summary = pipeline.match_pool([str(tmp / "pool")], metadata, tmp / f"out{processes}", processes=processes)
            rows.append(
                (f"vislang match_pool, {processes} process(es)", len(texts) / summary["seconds"], build, our_mem)
            )
        same = [
            pq.read_table(tmp / "out1" / "matches" / f"{f:05d}.parquet").equals(
                pq.read_table(tmp / "out2" / "matches" / f"{f:05d}.parquet")
            )
            for f in range(args.files)
        ]
        assert all(same), "1 and 2 processes wrote different matches"

    print("\n| matcher | texts/s | vs reference (1 process) | automaton build | automaton memory |")
    print("|---|---|---|---|---|")
    for name, rate, build_s, mem in rows:
        print(f"| {name} | {rate:,.0f} | {rate / ref_rate:.2f}× | {build_s:.1f} s | {mem:.0f} MiB |")
    print(json.dumps({name: round(rate) for name, rate, _, _ in rows}))


if __name__ == "__main__":
    main()
