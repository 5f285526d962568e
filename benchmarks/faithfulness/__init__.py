"""Faithfulness evaluation of PoundNet's maps against planted ground truth.

``python -m benchmarks.faithfulness`` (``--quick`` for the small version, ``--artifact`` for the
planted artifact) generates the data, trains (or loads the cached) detector, compares the maps,
runs the sanity checks and writes tables and figures. See docs/faithfulness.md.
"""
