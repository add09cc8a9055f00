"""Data: the archive, its records, the stores the data stages write, split, balance. Plain functions."""
