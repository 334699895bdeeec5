"""Evaluation of reconstructions: geometric mouth metrics, lip-reading scores, reports and plots.

``spectre.evaluate.metrics`` is numpy-only and safe to import anywhere; the other modules
(lipreading, plots) import their heavy dependencies lazily.
"""
