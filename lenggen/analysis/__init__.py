"""Analyses of the paper and beyond: the theorems built by hand in this Decoder, and measurements
on trained runs (attention similarity across PEs, attention maps). They read workdirs and
checkpoints; nothing here is imported by training."""
