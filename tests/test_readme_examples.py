"""The README's console examples print what the README says they print.

Each fenced block whose lines start with `$ ` is a session: commands, each followed by the lines it printed, `...`
standing for lines left out. The blocks made only of cheap, deterministic commands (`kndnet synth`, `prepare`,
`predict`, `config`, `echo TEXT > FILE`) are run here in a scratch folder beside a link to ../shared, and their
output must match line for line (runs of spaces compared as one). So shipping a new student, or changing what a
command prints, fails here until the README shows the new output. Blocks that read ../shared are realdata tests.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from kndnet.cli import main
from kndnet.cpu import has_int8_dot_product
from tests.conftest import REAL_DATA

README = Path(__file__).resolve().parents[1] / "README.md"
RUNNABLE = ("kndnet synth ", "kndnet prepare ", "kndnet predict ", "kndnet config ", "echo ")
# The parenthesis after the README's int8 example says which kind of x86 CPU printed it: ONNX Runtime's fused int8
# kernels (VNNI) and the QDQ arithmetic run as written (kndnet.cpu, elsewhere) round differently, so the other kind
# is held to the same calls (each line's first class) and probabilities within PERCENT_TOLERANCE points.
MEASURED_ON = re.compile(r"Measured on an x86 CPU (with|without) VNNI")
SCORES = re.compile(r"(\w+ \d+\.\d%)( \w+ \d+\.\d%)*")
PERCENT = re.compile(r"\d+\.\d(?=%)")
PERCENT_TOLERANCE = 2.0


def console_blocks(text: str) -> list[tuple[list[str], str]]:
    """Each fenced block whose first line is a `$ ` command, with the README text that follows it."""
    blocks, lines = [], text.splitlines()
    fences = [i for i, line in enumerate(lines) if line.startswith("```")]
    for start, end in zip(fences[::2], fences[1::2]):
        body = lines[start + 1:end]
        if body and body[0].startswith("$ "):
            blocks.append((body, "\n".join(lines[end + 1:end + 8])))
    return blocks


def sessions(body: list[str]) -> list[tuple[str, list[str]]]:
    """[(command, the lines shown after it)] for one block."""
    steps: list[tuple[str, list[str]]] = []
    for line in body:
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            steps[-1][1].append(line)
    return steps


def _runnable(body: list[str]) -> bool:
    return all(command.startswith(RUNNABLE) for command, _ in sessions(body))


def _squeezed(line: str) -> str:
    return " ".join(line.split())


def _match(expected: list[str], printed: list[str], line_pattern) -> re.Match | None:
    """`printed` against `expected` with each shown line as `line_pattern` makes it, `...` standing for one or more."""
    pattern = "".join(r"(?:[^\n]*\n)+" if line.strip() == "..." else line_pattern(line) + r"\n" for line in expected)
    return re.fullmatch(pattern, "".join(_squeezed(line) + "\n" for line in printed))


def shows(expected: list[str], printed: list[str]) -> bool:
    """Whether `printed` is what `expected` shows: equal lines in order, `...` standing for one or more."""
    return _match(expected, printed, lambda line: re.escape(_squeezed(line))) is not None


def measured_with_vnni(after: str) -> bool:
    """Whether the README's parenthesis after the int8 example says a CPU with VNNI printed it."""
    measured = MEASURED_ON.search(" ".join(after.split()))
    assert measured, "the README no longer says which kind of CPU printed its int8 example"
    return measured.group(1) == "with"


def _loose(line: str) -> str:
    """A regex for a predict line as the other kind of CPU may print it: the text before `|` and the called class
    as written, each probability captured, the runner-up classes free (close ones may swap)."""
    head, bar, scores = _squeezed(line).partition(" | ")
    if not (bar and SCORES.fullmatch(scores)):
        return re.escape(_squeezed(line))
    first, *runners_up = scores.split(" ")[::2]
    return re.escape(head + " | " + first) + r" (\d+\.\d)%" + r" \w+ (\d+\.\d)%" * len(runners_up)


def shows_nearly(expected: list[str], printed: list[str]) -> bool:
    """`shows` with the calls kept and each probability allowed PERCENT_TOLERANCE points."""
    match = _match(expected, printed, _loose)
    if match is None:
        return False
    shown = [float(value) for line in expected if line.strip() != "..." for value in PERCENT.findall(line)]
    return all(abs(a - float(b)) <= PERCENT_TOLERANCE for a, b in zip(shown, match.groups(), strict=True))


def _run(command: str, capsys) -> list[str]:
    """Run one README command here; returns what it printed. `kndnet` exits non-zero only where a line says ERROR
    (predict's bad file), as the README says."""
    if command.startswith("echo "):
        text, _, target = command[len("echo "):].rpartition(" > ")
        Path(target.strip()).write_text(" ".join(shlex.split(text)) + "\n")
        return []
    capsys.readouterr()
    code = main(shlex.split(command)[1:])
    printed = capsys.readouterr().out.splitlines()
    assert code == (1 if any(": ERROR " in line for line in printed) else 0), f"`{command}` exited {code}"
    return printed


def _params() -> list:
    blocks = [(body, after) for body, after in console_blocks(README.read_text()) if _runnable(body)]
    return [pytest.param(body, after, id=sessions(body)[-1][0].split()[1] + f"-{number}",
                         marks=[pytest.mark.realdata] if "../shared/" in "\n".join(body) else [])
            for number, (body, after) in enumerate(blocks)]


def test_the_readme_has_runnable_examples_of_each_kind():
    commands = [command for body, _ in console_blocks(README.read_text()) if _runnable(body)
                for command, _ in sessions(body)]
    for kind in ("kndnet synth ", "kndnet prepare ", "kndnet predict "):
        assert any(command.startswith(kind) for command in commands), kind


def test_the_readme_says_which_cpu_printed_the_int8_example():
    """Checked on every CPU, so a run on one kind cannot drop the note the other kind needs."""
    _, after = next((body, after) for body, after in console_blocks(README.read_text())
                    if any("kndnet-student-int8" in command for command, _ in sessions(body)))
    assert MEASURED_ON.search(" ".join(after.split())), "the README's int8 example no longer says which CPU printed it"


def test_shows_nearly_allows_close_probabilities_but_not_other_calls():
    expected = ["a.jpg: Dermatofibroma | df 51.9% bcc 17.7%", "...", "z.jpg: ERROR x"]
    assert shows_nearly(expected, ["a.jpg: Dermatofibroma | df 52.6% bcc 16.9%", "b.jpg: y", "z.jpg: ERROR x"])
    assert not shows_nearly(expected, ["a.jpg: Dermatofibroma | df 55.0% bcc 16.9%", "b.jpg: y", "z.jpg: ERROR x"])
    assert not shows_nearly(expected, ["a.jpg: Dermatofibroma | bcc 51.9% df 17.7%", "b.jpg: y", "z.jpg: ERROR x"])
    assert not shows_nearly(expected, ["a.jpg: Dermatofibroma | df 51.9% bcc 17.7%", "z.jpg: ERROR x"])
    assert shows_nearly(expected, ["a.jpg: Dermatofibroma | df 51.9% nv 17.0%", "b.jpg: y", "z.jpg: ERROR x"])
    assert not shows_nearly(["acc 50.0%", "b | c"], ["acc 51.0%", "b | c"])  # no scores after `|`: exact
    twins = ["a.jpg: Melanoma | mel 50.0%", "a.jpg: Melanoma | mel 60.0%"]
    assert shows_nearly(twins, ["a.jpg: Melanoma | mel 51.0%", "a.jpg: Melanoma | mel 59.0%"])


def test_shows_matches_lines_and_elisions():
    assert shows(["a  b", "...", "z"], ["a b", "c", "d", "z"]) and shows(["a", "  ...", "z"], ["a", "b", "z"])
    assert not shows(["a", "...", "z"], ["a", "z"])  # ... stands for at least one line
    assert not shows(["a"], ["a", "b"]) and not shows([], ["a"]) and shows([], [])
    assert not shows(["x 1.0%"], ["x 1.5%"])


@pytest.mark.parametrize("body,after", _params())
def test_a_readme_example_prints_what_the_readme_shows(body, after, tmp_path, monkeypatch, capsys, request):
    if "../shared/" in "\n".join(body):
        request.getfixturevalue("real_data")  # fails, naming the folder, where CI's copy is missing
    (tmp_path / "shared").symlink_to(REAL_DATA.parents[1], target_is_directory=True)
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    for command, expected in sessions(body):
        printed = _run(command, capsys)
        other_cpu = "int8" in command and has_int8_dot_product() != measured_with_vnni(after)
        match = shows_nearly if other_cpu else shows
        assert match(expected, printed), f"README.md's `{command}` shows\n" + "\n".join(expected) + \
            "\nbut it printed\n" + "\n".join(printed)
