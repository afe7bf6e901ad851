r"""The report of a sweep: tables over seeds, the paper's PE ranking, and plots.

  python -m lenggen.report runs/cpu_mini            # -> runs/cpu_mini/report/
  python -m lenggen.report runs/paper --out=reports/paper

Reads every results.json under the runs directory (lenggen/results.py) and writes, side by side:
report.md (tables: OOD test accuracy and in-distribution accuracy, tasks x PEs, mean ± std over
seeds; the mean reciprocal rank of the paper's PEs, and of every PE when runs beyond the paper
(FIRE, KERPLE, `<pe>+randomized`, `rotary+<scaling>`) are present, in columns after the
paper's five; the paper's numbers; exact match per length),
report.json (the same numbers for scripts), summary.png and plots/<task>.png (exact match vs
length, one line per PE with a ±1 std band, training lengths shaded). Only results files are
read: no checkpoint, no JAX.
"""

from lenggen.report.build import build_report
from lenggen.report.collect import ReportError, RunResult, collect

__all__ = ["ReportError", "RunResult", "build_report", "collect"]
