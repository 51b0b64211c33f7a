"""``vislang search``: query an embedding index (``vislang index``) from the command line."""

from __future__ import annotations

import argparse
import json

from vislang.cli.common import positive_int

EPILOG = """examples:
  vislang search runs/index "a red circle"                 text -> images
  vislang search runs/index --image query.png -k 5         image -> images
  vislang search runs/index --image query.png --to text    image -> captions (captions indexed)
  vislang search runs/index "a red circle" --json          one JSON object per line"""

MAX_QUERY_PIXELS = 64_000_000


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "search",
        help="search an embedding index by text or by image",
        description="Find the indexed images nearest to a text or an image (or the indexed captions nearest to "
        "an image), with the model the index was built with.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("index", metavar="INDEX", help="an index directory written by vislang index")
    p.add_argument("query", nargs="?", metavar="TEXT", help="the text to search for")
    p.add_argument("--image", metavar="IMG", help="search with this image instead of a text")
    p.add_argument("--to", choices=["image", "text"], default="image", help="what to find (default image)")
    p.add_argument("-k", type=positive_int, default=10, help="results (default 10)")
    p.add_argument("--json", action="store_true", help="one JSON object per result instead of a table")
    p.add_argument("--model", help="the model, where it is no longer at the path the index recorded")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vislang.errors import ConfigError
    from vislang.search.searcher import SearchIndex, open_query_image

    if (args.query is None) == (args.image is None):
        raise ConfigError("give a TEXT or --image IMG (one of the two)")
    if args.to == "text" and args.image is None:
        raise ConfigError("--to text searches captions with an image: give --image IMG")
    index = SearchIndex(args.index, model_path=args.model)
    if args.image is not None:
        image = open_query_image(args.image, MAX_QUERY_PIXELS)
        hits = index.image_to_texts(image, args.k) if args.to == "text" else index.image_to_images(image, args.k)
    else:
        hits = index.text_to_images(args.query, args.k)
    for rank, hit in enumerate(hits, 1):
        if args.json:
            print(json.dumps({"rank": rank, **hit.as_dict()}, ensure_ascii=False))
        else:
            caption = f"  {hit.caption}" if hit.caption else ""
            print(f"{rank:>3}  {hit.score:.4f}  {hit.key}{caption}")
    return 0
