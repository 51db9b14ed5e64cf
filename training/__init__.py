"""The offline jobs behind ``lcs``: datasets (``data/``), training, encoding, evaluation jobs, packing."""
