"""``vislang serve``: the search page and its JSON API over an embedding index (``app.create_app``).

Imports FastAPI only in ``app``, so the package can be named without the ``search`` extra.
"""
