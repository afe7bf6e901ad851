"""The paper's grid and published numbers, to build its runs and set a reproduction beside.

Kazemnejad et al. (NeurIPS 2023; docs/paper.md, "Headline results"): its five PEs and eighteen
tasks, out-of-distribution test exact match, mean of 3 seeds, and the mean reciprocal rank of
the PEs (no scratchpad). Their five MRRs sum to 1 + 1/2 + ... + 1/5 =
2.283, so ties (e.g. two PEs at 0.000) were broken, not averaged as this report does.
"""

# The paper's five PEs, in the column order of its table and figures; registered PE names.
PAPER_PE_ORDER = ("nope", "t5", "alibi", "rotary", "ape")
PE_LABELS = {
    "nope": "NoPE",
    "t5": "T5",
    "alibi": "ALiBi",
    "rotary": "Rotary",
    "ape": "APE",
    "fire": "FIRE",
    "kerple": "KERPLE",
    "cope": "CoPE",
    "abacus": "Abacus",
    "coupling": "Coupling",
}

# The headline table's rows (and the main figure's panels), by their registered names.
MAIN_TASKS = (
    "copy_repeat",
    "copy_repeat_2x",
    "copy_repeat_change",
    "copy",
    "copy_2x",
    "reverse",
    "reverse_2x",
    "reverse_copy",
    "scan",
    "pcfg",
)
# The maths and reasoning tasks (trained on lengths <= 8, tested on 9-16).
MATHS_TASKS = (
    "addition",
    "polynomial",
    "sort_single_token",
    "sort_multi_digit",
    "summation",
    "parity",
    "lego",
    "lego_shuffled",
)
# Row order of every table and figure: the headline table's tasks, then the maths tasks.
PAPER_TASK_ORDER = MAIN_TASKS + MATHS_TASKS
TASK_LABELS = {
    "copy_repeat": "Copy-Repeat",
    "copy_repeat_2x": "Copy-Repeat 2x",
    "copy_repeat_change": "Copy-Repeat+Change",
    "copy": "Copy",
    "copy_2x": "Copy 2x",
    "reverse": "Reverse",
    "reverse_2x": "Reverse 2x",
    "reverse_copy": "Reverse+Copy",
    "scan": "SCAN",
    "pcfg": "PCFG",
    "addition": "Addition",
    "long_addition": "Long addition",
    "polynomial": "Polynomial",
    "sort_single_token": "Sorting (single token)",
    "sort_multi_digit": "Sorting (multi digit)",
    "summation": "Summation",
    "parity": "Parity",
    "lego": "LEGO",
    "lego_shuffled": "LEGO (shuffled)",
}

# OOD test accuracy (docs/paper.md, "Headline results"), columns in PAPER_PE_ORDER.
_HEADLINE_ROWS = {
    "copy_repeat": (0.986, 0.771, 0.289, 0.000, 0.000),
    "copy_repeat_2x": (0.973, 0.558, 0.194, 0.0, 0.0),
    "copy_repeat_change": (0.967, 0.939, 0.170, 0.016, 0.0),
    "copy": (0.305, 0.420, 0.331, 0.011, 0.028),
    "copy_2x": (0.431, 0.524, 0.569, 0.043, 0.040),
    "reverse": (0.230, 0.242, 0.171, 0.077, 0.023),
    "reverse_2x": (0.473, 0.448, 0.195, 0.053, 0.011),
    "reverse_copy": (0.182, 0.140, 0.115, 0.0, 0.000),
    "scan": (0.797, 0.799, 0.438, 0.283, 0.057),
    "pcfg": (0.433, 0.439, 0.428, 0.439, 0.366),
}
HEADLINE = {
    task: dict(zip(PAPER_PE_ORDER, row, strict=True)) for task, row in _HEADLINE_ROWS.items()
}
MRR = {"nope": 0.687, "t5": 0.549, "alibi": 0.502, "rotary": 0.330, "ape": 0.215}


def task_label(task: str) -> str:
    return TASK_LABELS.get(task, task)


def pe_label(pe: str) -> str:
    """`rotary` -> `Rotary`; a variant `rotary+randomized` -> `Rotary+randomized`."""
    name, plus, variant = pe.partition("+")
    return PE_LABELS.get(name, name) + plus + variant
