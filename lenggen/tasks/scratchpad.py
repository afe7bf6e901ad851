"""The paper's unified scratchpad: one format that every maths task feeds its steps to.

docs/paper.md "Scratchpads": each step has up to five parts (input, computation, output,
intermediate variables, remaining input); steps are joined by " # " and wrapped as "Thinking
step by step: ... . Thus, " before the answer sentence.

The format, as the official code renders it (McGill-NLP/length-generalization,
src/data/data_instance_processor/data_instance_processor.py, `create_scratchpad_str` and
`__call__`, with the markers of configs/data/minimal_template.jsonnet that every maths task's
data config imports: step_separator " # ", markers "in", "comp", "out", "[" "]", "re"):

  step    = "in <input> comp <computation> out <output> [ <var>, <var> ] re <remaining> "
  target  = "Thinking step by step:  " + " # ".join(steps) + " . Thus,  " + <answer sentence>

with a part and its marker left out when the configuration excludes it. Here every text is a
sequence of whitespace-separated words (one token each in the word-level vocabulary), so the
mapping from the official strings is: the words are the same, runs of spaces are one space, and
"," "." "?" glued to a word are their own words ("7, 8" -> "7 , 8", "Thus," -> "Thus ,",
"5 6 5." -> "5 6 5 ."); ":" stays on its word ("step:", "carry:"), as in "Copy:" and "Solve:".

Configurations (docs/paper.md: the paper's eight, and the official code's ninth; names of the
official configs/data/unified_scratchpad_configs files in brackets, i=input c=computation
o=output v=intermediate variables r=remaining input):
  none             no scratchpad: the target is the answer sentence alone
  full             every part                      [i1_c1_o1_v1_r1]
  minimal          computation and output only     [i0_c1_o1_v0_r0]
  no_input         all but the input               [i0_c1_o1_v1_r1]
  no_computation   all but the computation         [i1_c0_o1_v1_r1]
  no_output        all but the output              [i1_c1_o0_v1_r1]
  no_intermediate  all but the intermediate vars   [i1_c1_o1_v0_r1]
  no_remaining     all but the remaining input     [i1_c1_o1_v1_r0]
  all_parts_off    the wrapping and one empty step per step, no part [i0_c0_o0_v0_r0]: the
                   official runs trained it on every maths task (scripts/scratchpad_stats.json
                   lists it for each), and the official renderer still writes the wrapping and
                   the separators, so the target is "Thinking step by step: # # . Thus , <answer>"
                   (one "#" between consecutive steps): a scratchpad that only counts the steps.
Sorting and LEGO steps have no intermediate variables (the official processors refuse
include_intermediate_variables for them, and scripts/scratchpad_stats.json lists no v1 run for
them), so for those tasks "full" is i1_c1_o1_v0_r1 and "no_intermediate" is refused as a
duplicate of "full".
"""

from collections.abc import Sequence
from typing import NamedTuple

from lenggen.tasks import options

PARTS = ("input", "computation", "output", "intermediate", "remaining")

# Configuration name -> the parts it shows (module doc).
CONFIGURATIONS: dict[str, tuple[str, ...]] = {
    "none": (),
    "full": PARTS,
    "minimal": ("computation", "output"),
    **{f"no_{part}": tuple(p for p in PARTS if p != part) for part in PARTS},
    "all_parts_off": (),
}
NAMES = tuple(CONFIGURATIONS)

# configs/data/minimal_template.jsonnet; the intermediate variables sit between "[" and "]".
MARKERS = {"input": "in", "computation": "comp", "output": "out", "remaining": "re"}
BEGIN = "Thinking step by step:"
END = ". Thus ,"
STEP_SEPARATOR = "#"
VARIABLE_SEPARATOR = ","

# Every word the wrapping and the markers can add to a target.
WORDS = frozenset(
    (*BEGIN.split(), *END.split(), STEP_SEPARATOR, VARIABLE_SEPARATOR, "[", "]", *MARKERS.values())
)


class Step(NamedTuple):
    """One step of a scratchpad; every part is a string of words separated by single spaces.

    Attributes:
      input: what the step reads ("7 , 8": the two digits of a column).
      computation: what it computes ("7 + 8 + carry = 15 + 0 = 15"); may be empty.
      output: what it writes ("5").
      remaining: the input still to be processed ("5 3 + 2"); may be empty.
      intermediate: the variables carried to the next step (("carry: 1",)), or None for tasks
        whose steps have none (sorting, LEGO).
    """

    input: str
    computation: str
    output: str
    remaining: str
    intermediate: tuple[str, ...] | None = None


def check(task, has_intermediate: bool = True) -> None:
    """Raises TaskOptionError unless `task.scratchpad` names a configuration the task can use."""
    valid = NAMES if has_intermediate else tuple(n for n in NAMES if n != "no_intermediate")
    if task.scratchpad not in valid:
        because = ""
        if task.scratchpad == "no_intermediate":
            because = (
                f" ({task.name} steps have no intermediate variables, so 'no_intermediate' "
                "would repeat 'full')"
            )
        raise options.TaskOptionError(
            f"Task {task.name!r}: option scratchpad={task.scratchpad!r} is not a scratchpad "
            f"configuration{because}; expected one of {', '.join(valid)}."
        )


def render(name: str, steps: Sequence[Step]) -> str:
    """The scratchpad text of configuration `name` ("" for "none"), words separated by spaces."""
    if name == "none":
        return ""
    shown = CONFIGURATIONS[name]
    rendered = []
    for step in steps:
        words = []
        for part in shown:
            if part == "intermediate":
                if step.intermediate is not None:
                    words += ["[", f" {VARIABLE_SEPARATOR} ".join(step.intermediate), "]"]
            else:
                words.append(MARKERS[part])
                text = getattr(step, part)
                if text:  # An empty part (a LEGO step's computation) leaves no extra space.
                    words.append(text)
        rendered.append(" ".join(words))
    # Single spaces between words: empty steps (all_parts_off) leave only their separators.
    return " ".join(f"{BEGIN} {f' {STEP_SEPARATOR} '.join(rendered)} {END}".split())


def target(name: str, steps: Sequence[Step], answer: str) -> str:
    """`answer` (the final sentence) after the scratchpad of configuration `name`."""
    pad = render(name, steps)
    return f"{pad} {answer}" if pad else answer
