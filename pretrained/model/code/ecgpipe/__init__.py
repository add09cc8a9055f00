"""ecgpipe: a tracked, reproducible pipeline for AF detection on PhysioNet/CinC 2017 ECGs."""

__version__ = "0.1.0"
