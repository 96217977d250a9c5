"""Shared code of *The Third Pillar, Tested*.

Data flow, one module per stage (see STYLE in the project notes)::

    manifest -> fetch -> panels (build) -> schemas (validate) -> estimation -> report -> chapters
"""

__version__ = "0.1.0"
