"""The curation walk-through of docs/curation.md, runnable: a generated raw pool -> balanced,
filtered, deduplicated training shards, through the ``vislang curate`` commands.

    python docs/curation_walkthrough.py --out /tmp/curation   # about 2 minutes on 2 cores

The pool is generated (no downloads): 6,000 photo-like JPEGs with English captions whose nouns
follow a Zipf law (a few concepts dominate, as on the web), plus what a crawl brings along:
German captions, too-short captions, small images and 600 near-copies (resized or re-encoded) of
other pool images.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from vislang.data.photos import encode, photo

NOUNS = """dog cat car tree house beach mountain flower bird horse boat city street river sky cake pizza
chair table laptop phone book bicycle train airplane bridge lake forest garden kitchen window door
shoe dress guitar piano clock lamp cup bottle apple banana orange sandwich bus truck motorcycle
elephant giraffe zebra sheep cow bear kite umbrella""".split()
ADJECTIVES = "red blue green old new small large white black yellow wooden sunny empty busy".split()
TEMPLATES = ["a photo of a {a} {n}", "a {n} in the {m}", "the {n} next to a {m}", "a {n} and a {m}"]
GERMAN = ["ein Hund am Strand", "eine rote Blume im Garten", "ein altes Haus in der Stadt"]


def make_pool(out: Path, n: int = 6000, copies: int = 600, seed: int = 0) -> None:
    from vislang.data.make_shards import write_shards

    rng = np.random.default_rng(seed)
    zipf = 1.0 / np.arange(1, len(NOUNS) + 1) ** 1.3
    zipf /= zipf.sum()
    records, originals = [], []
    for i in range(n):
        side = 160 if rng.random() < 0.05 else 320
        image = photo(rng, side, side * 3 // 4)
        roll = rng.random()
        if roll < 0.05:
            caption = GERMAN[rng.integers(len(GERMAN))]
        elif roll < 0.10:
            caption = f"IMG {i}"
        else:
            nouns = rng.choice(NOUNS, 2, p=zipf)
            template = TEMPLATES[rng.integers(len(TEMPLATES))]
            caption = template.format(a=ADJECTIVES[rng.integers(len(ADJECTIVES))], n=nouns[0], m=nouns[1])
        records.append((f"{i:06d}", encode(image, "JPEG", quality=85), "jpg", [caption], {"uid": f"{i:032x}"}))
        originals.append(image)
    sources = {}
    for j in range(copies):  # near-copies of earlier images under new uids and captions
        i = int(rng.integers(n))
        sources[f"{n + j:032x}"] = f"{i:032x}"
        image = originals[i]
        if j % 2:
            image = image.resize((image.width // 2, image.height // 2), Image.BICUBIC)
        data = encode(image, "JPEG", quality=int(rng.choice([40, 60, 90])))
        records.append((f"{n + j:06d}", data, "jpg", [records[i][3][0]], {"uid": f"{n + j:032x}"}))
    (out.parent / "injected_copies.json").write_text(json.dumps(sources))
    order = rng.permutation(len(records))
    write_shards([records[k] for k in order], out, 2200)
    (out.parent / "words.txt").write_text("\n".join(NOUNS + ADJECTIVES + [f"{a} {n}" for a in ADJECTIVES[:6]
                                                                         for n in NOUNS[:10]]) + "\n")  # fmt: skip


def run(command: str) -> None:
    print(f"$ {command}", flush=True)
    result = subprocess.run([sys.executable, "-m", "vislang.cli", *shlex.split(command)[1:]], text=True,
                            capture_output=True)  # fmt: skip
    print((result.stdout + result.stderr).strip(), flush=True)
    if result.returncode:
        sys.exit(result.returncode)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="/tmp/curation")
    args = parser.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    make_pool(out / "pool")
    pool = f"{out}/pool/{{00000..00002}}.tar"
    run(f"vislang curate metadata --no-wordnet --list {out}/words.txt --out {out}/metadata.json")
    run(f"vislang curate match '{pool}' --metadata {out}/metadata.json --out {out}/matched --processes 2")
    run(f"vislang curate balance {out}/matched --tail-share 0.2 --out {out}/balanced")
    run(f"vislang curate dedup '{pool}' --out {out}/dedup --processes 2")
    run(f"vislang curate filter '{pool}' --basic --out {out}/filtered --processes 2")
    run(f"vislang curate export '{pool}' --keep {out}/balanced --keep {out}/dedup "
        f"--keep {out}/filtered/subset.txt --out {out}/curated")  # fmt: skip
    run(f"vislang data inspect shards '{out}/curated/{{00000..00000}}.tar' --n 200")
    dedup_quality(out)


def dedup_quality(out: Path) -> None:
    """How the perceptual hash did on the injected copies (every other pool image is distinct)."""
    import pyarrow.parquet as pq

    table = pq.read_table(out / "dedup" / "dedup.parquet").to_pydict()
    group = dict(zip(table["uid"], table["group"]))
    copies = json.loads((out / "injected_copies.json").read_text())
    found = sum(group[c] == group[s] for c, s in copies.items())
    originals = [u for u in group if u not in copies]
    members: dict[int, int] = {}
    for u in originals:
        members[group[u]] = members.get(group[u], 0) + 1
    merged = sum(k - 1 for k in members.values() if k > 1)
    print(f"dedup: {found} of {len(copies)} injected copies grouped with their source; "
          f"{merged} of {len(originals)} distinct images wrongly merged")  # fmt: skip


if __name__ == "__main__":
    main()
