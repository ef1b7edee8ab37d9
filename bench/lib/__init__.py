"""The benchmark suite's library: sessions to run, how they run, statistics, report and plots.

``bench/qoe.py`` and ``loki bench`` are thin command lines over :func:`bench.lib.runner.run`.
"""
