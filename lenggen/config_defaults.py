"""What a config key means when a run's config.json predates it: the value those runs used.

One home for these values, imported without JAX: the model reads them to build an old run's
model, and the workdir check (lenggen/rundir/files.py) to compare an old run's config with a
new one without importing the model.
"""

# config.model keys added after the first runs: those trained at full float32 ('highest', the
# CPU's only matmul precision) with unrolled blocks.
MODEL = {"precision": "highest", "scan_layers": False}

# config.model.pe.rotary's context-extension options (docs/methods/rotary_scaling.md), at the
# values that mean no extension: the paper's rotary, which runs from before them used.
ROTARY_SCALING = {
    "scaling": "none",
    "scaling_factor": 1.0,
    "original_max_position": 0,
    "beta_fast": 32.0,
    "beta_slow": 1.0,
}
