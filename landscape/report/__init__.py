"""Reports linking sharpness to the SRCC generalisation gap.

- :mod:`.collect`: read a sweep's stored results (training, Hessian, sharpness, slices, plan)
  into one row per run, without recomputing anything; missing analyses are listed.
- :mod:`.analysis`: per-configuration mean +- std over seeds and the statistics.
- :mod:`.stats`: rank correlations, granulated Kendall, Holm, seed aggregation and spread tests.
- :mod:`.tables`: the rows of the report's tables (rendered by :mod:`landscape.formatting`).
- :mod:`.build`: figures, HTML index and the ``landscape report`` entry point.
"""
