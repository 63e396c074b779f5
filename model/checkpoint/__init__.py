"""Checkpoint directories: what a config's checkpoint holds, its tensor-name layouts and FP8/FP4
formats, reading (a rank's slices only, if asked), loading, saving, and whether it fits GPUs."""
