"""What every benchmark records: the machine it ran on, the command, a table, a results file.

A benchmark prints its table and writes the same text, with the machine and the exact command,
to `benchmarks/results/<name>.md`, so a committed result says where and how it was measured.
"""

import datetime
import os
import pathlib
import platform
import sys

import jax

RESULTS_DIR = pathlib.Path(__file__).parent / "results"


def machine() -> str:
    """One line: CPU model, cores and load, JAX backend and device, JAX version."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            names = [line.split(":", 1)[1].strip() for line in cpuinfo if "model name" in line]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    device = jax.devices()[0]
    # A shared machine's timings depend on its load: record it next to them.
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{cpu}, {os.cpu_count()} cores visible (1-min load average {load:.1f} at the end of "
        f"the run); JAX {jax.__version__} on {jax.default_backend()} ({device.device_kind}, "
        f"{jax.device_count()} device(s))"
    )


def table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def write(name: str, title: str, body: str, command: str | None = None) -> pathlib.Path:
    """Prints `body` and writes it, headed by the machine and the command (default: this
    process's), to results/name.md."""
    command = command or " ".join(
        ["python -m", f"benchmarks.{pathlib.Path(sys.argv[0]).stem}", *sys.argv[1:]]
    )
    text = (
        f"# {title}\n\n"
        f"- Machine: {machine()}\n"
        f"- Command: `{command}`\n"
        f"- Date: {datetime.date.today().isoformat()}\n\n"
        f"{body}\n"
    )
    print(text)
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"{name}.md"
    path.write_text(text)
    return path
