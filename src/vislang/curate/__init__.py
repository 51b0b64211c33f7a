"""Data curation over image–text pools (``vislang curate``).

MetaCLIP's recipe as commands over a user's own pool: build the metadata entry list
(:mod:`~vislang.curate.metadata`), match every text against it by substring
(:mod:`~vislang.curate.match`, one Aho–Corasick automaton), then balance the texts over the
entries (:mod:`~vislang.curate.balance`). :mod:`~vislang.curate.pipeline` runs the stages
file by file on a local process pool or Ray (:mod:`~vislang.curate.engine`) with identical
outputs; :mod:`~vislang.curate.texts` reads the texts of parquet, JSONL and webdataset files.
"""
