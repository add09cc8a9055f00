"""Signal processing: the window cutter, spectrograms, conditioning, augmentation and device shifts.
Pure functions and small settings objects; never reads params."""
