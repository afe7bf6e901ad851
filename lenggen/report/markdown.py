"""report.md from the report's JSON payload (so the two never disagree)."""

from collections.abc import Mapping, Sequence

from lenggen.report.paper import pe_label, task_label


def format_cell(cell: Mapping | None, *, show_n: bool) -> str:
    """`0.973 ± 0.012` (`± –` for one seed), `(n=2)` appended when seed counts differ."""
    if cell is None:
        return "–"
    std = "–" if cell["std"] is None else f"{cell['std']:.3f}"
    return f"{cell['mean']:.3f} ± {std}" + (f" (n={cell['n']})" if show_n else "")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _cells_table(table: Mapping[str, Mapping[str, Mapping]], tasks, pes) -> list[str]:
    counts = {cell["n"] for row in table.values() for cell in row.values()}
    rows = [
        [task_label(task)]
        + [format_cell(table.get(task, {}).get(pe), show_n=len(counts) > 1) for pe in pes]
        for task in tasks
    ]
    return _table(["task"] + [pe_label(pe) for pe in pes], rows)


def _mrr_lines(mrr: Mapping, paper_mrr: Mapping[str, float]) -> list[str]:
    """The MRR table of one ranking (`aggregate.mean_reciprocal_rank` plus "ties")."""
    if not mrr["mrr"]:
        lines = ["No (task, seed) group has a result for every PE: nothing to rank."]
    else:
        ranked = sorted(mrr["mrr"].items(), key=lambda item: -item[1])
        lines = [
            f"For each (task, seed) the PEs are ranked by OOD test accuracy; {mrr['ties']}. "
            f"Averaged over {len(mrr['groups'])} (task, seed) group(s).",
            "",
            *_table(
                ["PE", "MRR", "paper"],
                [
                    [
                        pe_label(pe),
                        f"{value:.3f}",
                        f"{paper_mrr[pe]:.3f}" if pe in paper_mrr else "–",
                    ]
                    for pe, value in ranked
                ],
            ),
        ]
    if mrr["incomplete"]:
        lines += [
            "",
            "Left out (missing PEs): "
            + "; ".join(
                f"{task_label(task)} seed {seed} ({', '.join(missing)})"
                for task, seed, missing in mrr["incomplete"]
            )
            + ".",
        ]
    return lines


def render(report: Mapping) -> str:
    """The markdown report: OOD and in-distribution tables, MRR, the paper's numbers, the
    per-length tables and the plots."""
    tasks, pes = report["tasks"], report["pes"]
    lines = [
        "# Length generalisation report",
        "",
        f"{report['num_runs']} runs from `{report['runs_dir']}`: {len(tasks)} task(s) x "
        f"{len(pes)} PE(s); seeds per task: "
        + ", ".join(f"{task_label(t)} {len(report['seeds'][t])}" for t in tasks)
        + ".",
        f"Every cell is the mean ± {report['std']}. Exact match: "
        + "; ".join(f"{task_label(t)} {'/'.join(report['metric'][t])}" for t in tasks)
        + " (`exact`: the paper's greedy exact match of the parsed answer; `teacher_forced`: "
        "equal to it where the whole target is the answer).",
        "",
        "![exact match vs length](" + report["plots"]["summary"] + ")",
        "",
        "## Out-of-distribution test accuracy",
        "",
        "Exact match micro-averaged over the test split (lengths beyond training), as in the "
        "paper's headline table.",
        "",
        *_cells_table(report["ood_test"], tasks, pes),
        "",
        "## In-distribution accuracy (validation split, training lengths)",
        "",
        *_cells_table(report["in_distribution"], tasks, pes),
        "",
        "## Mean reciprocal rank of the PEs",
        "",
    ]
    lines += _mrr_lines(report["mrr"], report["paper"]["mrr"])
    if "mrr_all" in report:
        lines += [
            "",
            "### Including the PEs beyond the paper",
            "",
            "The same ranking over every PE found: "
            + ", ".join(pe_label(pe) for pe in report["mrr_all"]["pes"])
            + ".",
            "",
        ]
        lines += _mrr_lines(report["mrr_all"], report["paper"]["mrr"])
    headline = report["paper"]["ood_test"]
    if headline:
        lines += ["", "## The paper's OOD test accuracy (Kazemnejad et al. 2023, 3 seeds)", ""]
        lines += _table(
            ["task"] + [pe_label(pe) for pe in pes],
            [
                [task_label(task)]
                + [f"{headline[task][pe]:.3f}" if pe in headline[task] else "–" for pe in pes]
                for task in tasks
                if task in headline
            ],
        )
    lines += ["", "## Exact match per length", "", "`*` marks training lengths (in distribution)."]
    for task in tasks:
        curves = report["by_length"][task]
        lengths = sorted({int(length) for by in curves.values() for length in by})
        counts = {cell["n"] for by in curves.values() for cell in by.values()}
        rows = [
            [f"{length}{'*' if length <= report['train_max_length'][task] else ''}"]
            + [
                format_cell(curves.get(pe, {}).get(str(length)), show_n=len(counts) > 1)
                for pe in pes
            ]
            for length in lengths
        ]
        lines += ["", f"### {task_label(task)}", "", f"![{task}]({report['plots'][task]})", ""]
        lines += _table(["length"] + [pe_label(pe) for pe in pes], rows)
    return "\n".join(lines) + "\n"
