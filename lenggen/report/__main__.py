"""`python -m lenggen.report RUNS_DIR [--out=DIR]`: see lenggen/report/__init__.py."""

import os
import sys

from absl import app, flags

from lenggen.report import ReportError, build_report
from lenggen.report.build import MARKDOWN_FILE

_OUT = flags.DEFINE_string("out", None, "Output directory (default: RUNS_DIR/report).")


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        raise app.UsageError(
            f"Expected one runs directory, got {argv[1:]}: "
            "python -m lenggen.report RUNS_DIR [--out=DIR]."
        )
    runs_dir = argv[1]
    out_dir = _OUT.value or os.path.join(runs_dir, "report")
    try:
        report = build_report(runs_dir, out_dir)
    except ReportError as error:
        print(f"lenggen.report: {error}", file=sys.stderr)
        return 2
    print(
        f"Report of {report['num_runs']} runs ({len(report['tasks'])} tasks x "
        f"{len(report['pes'])} PEs): {os.path.join(out_dir, MARKDOWN_FILE)}"
    )
    return 0


if __name__ == "__main__":
    app.run(main)
