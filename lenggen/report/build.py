"""Builds the report of a runs directory: report.json, report.md and the plots, side by side."""

import os

from lenggen import provenance, results
from lenggen.report import aggregate, markdown, paper, plots
from lenggen.report.collect import ReportError, collect
from lenggen.rundir import storage

JSON_FILE = "report.json"
MARKDOWN_FILE = "report.md"
STD_NOTE = "1 sample standard deviation over seeds (ddof=1; – with one seed)"
TIES_NOTE = "tied PEs share the average of the ranks they span"


def _keyed_by_string(table: dict) -> dict:
    """JSON object keys are strings: `{task: {pe: {length: cell}}}` with str lengths."""
    return {
        task: {pe: {str(length): cell for length, cell in by.items()} for pe, by in pes.items()}
        for task, pes in table.items()
    }


def build_report(runs_dir: str, out_dir: str | None = None) -> dict:
    """Aggregates every results.json under `runs_dir` into `out_dir` (default
    RUNS_DIR/report): report.json, report.md, summary.png and plots/<task>.png.

    Returns the report.json payload.

    Raises:
      collect.ReportError: no results, or results that cannot be aggregated together.
    """
    out_dir = out_dir or os.path.join(runs_dir, "report")
    if storage.is_gcs(out_dir):
        raise ReportError(
            f"The report is written to a local directory, not {out_dir}: pass "
            "--out=DIR (the runs themselves may be on gs://)."
        )
    runs = collect(runs_dir)
    tasks, pes = aggregate.tasks_of(runs), aggregate.pes_of(runs)
    by_length = aggregate.by_length_table(runs)
    train_max_length = {run.task: run.train_max_length for run in runs}
    # The paper ranks its five PEs: "mrr" ranks those found (comparable with its numbers);
    # "mrr_all" ranks every PE found, those beyond the paper (FIRE, randomized) included.
    paper_pes = [pe for pe in pes if pe in paper.PAPER_PE_ORDER] or pes
    mrr = aggregate.mean_reciprocal_rank(runs, paper_pes)
    payload = {
        "runs_dir": provenance.portable_path(runs_dir),
        "num_runs": len(runs),
        "tasks": tasks,
        "pes": pes,
        "seeds": {task: sorted({r.seed for r in runs if r.task == task}) for task in tasks},
        "train_max_length": train_max_length,
        "metric": {task: sorted({str(r.metric) for r in runs if r.task == task}) for task in tasks},
        "std": STD_NOTE,
        "ood_test": aggregate.overall_table(runs, "test"),
        "in_distribution": aggregate.overall_table(runs, "validation"),
        "by_length": _keyed_by_string(by_length),
        "mrr": {**mrr, "pes": paper_pes, "ties": TIES_NOTE},
        "paper": {
            "ood_test": {task: paper.HEADLINE[task] for task in tasks if task in paper.HEADLINE},
            "mrr": paper.MRR,
        },
        "runs": sorted(os.path.relpath(run.path, runs_dir) for run in runs),
    }
    if len(paper_pes) < len(pes):
        payload["mrr_all"] = {
            **aggregate.mean_reciprocal_rank(runs, pes),
            "pes": pes,
            "ties": TIES_NOTE,
        }
    os.makedirs(out_dir, exist_ok=True)
    payload["plots"] = plots.write_plots(
        out_dir, {task: by_length[task] for task in tasks}, train_max_length, pes
    )
    results.write_json_atomic(os.path.join(out_dir, JSON_FILE), payload)
    with open(os.path.join(out_dir, MARKDOWN_FILE), "w") as handle:
        handle.write(markdown.render(payload))
    return payload
