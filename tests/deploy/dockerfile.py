"""A small Dockerfile reader for tests: instructions, build stages and what a build arg selects."""

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

# Instructions whose arguments may be a JSON array (exec form) and are otherwise shell text.
EXEC_FORM = {"RUN", "CMD", "ENTRYPOINT", "SHELL"}
FLAGGED = {"FROM", "COPY", "ADD", "RUN"}  # may start with --name=value options
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, COPY, ...
    flags: dict[str, list[str]]  # leading --name=value options; repeated ones accumulate
    args: list[str]  # exec form: the JSON array; RUN shell form: one string; else shell words
    line: int  # where it starts, 1-based


@dataclass
class Stage:
    base: str  # as written after FROM, build args substituted
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        values = {}
        for instruction in self.of("ENV"):
            for word in instruction.args:
                key, _, value = word.partition("=")
                values[key] = value
        return values

    def of(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def parse(text: str) -> list[Instruction]:
    """The instructions of a Dockerfile: continuation lines joined, comment lines dropped."""
    instructions, pending, start = [], "", 0
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue  # comments and blank lines end nothing, even inside a continuation
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        instructions.append(instruction(pending + stripped, start))
        pending = ""
    if pending:
        raise ValueError(f"line {start}: continuation runs past the end of the file")
    return instructions


def instruction(logical_line: str, line: int) -> Instruction:
    keyword, _, rest = logical_line.partition(" ")
    keyword, rest = keyword.upper(), rest.strip()
    flags: dict[str, list[str]] = {}
    while keyword in FLAGGED and (flag := re.match(r"--([\w-]+)(?:=(\S*))?\s+", rest)):
        flags.setdefault(flag.group(1), []).append(flag.group(2) or "")
        rest = rest[flag.end() :]
    if keyword in EXEC_FORM:
        args = json.loads(rest) if rest.startswith("[") else [rest]
    else:
        args = shlex.split(rest)
    return Instruction(keyword, flags, args, line)


def global_args(instructions: list[Instruction]) -> dict[str, str | None]:
    """ARGs before the first FROM: the only ones a FROM line can use."""
    found = {}
    for item in instructions:
        if item.keyword == "FROM":
            break
        if item.keyword == "ARG":
            for word in item.args:
                key, equals, value = word.partition("=")
                found[key] = value if equals else None
    return found


def stages(
    instructions: list[Instruction], build_args: dict[str, str] | None = None
) -> list[Stage]:
    """The build stages, FROM lines resolved with the global ARG defaults and `build_args`."""
    values = {**global_args(instructions), **(build_args or {})}

    def substitute(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        if values.get(name) is None:
            raise KeyError(f"FROM uses ${name}, which has no default and no build arg")
        return values[name]

    found: list[Stage] = []
    for item in instructions:
        if item.keyword == "FROM":
            base = VARIABLE.sub(substitute, item.args[0])
            name = item.args[2] if len(item.args) == 3 and item.args[1].upper() == "AS" else None
            found.append(Stage(base, name))
        elif found:
            found[-1].instructions.append(item)
    return found


def chain(
    instructions: list[Instruction], target: str | None = None, build_args: dict | None = None
) -> list[Stage]:
    """The stage `target` (default: the last, what a build without --target makes) and the
    stages it is built on, the one FROM an image first."""
    built = stages(instructions, build_args)
    by_name = {stage.name: stage for stage in built if stage.name}
    found = [by_name[target] if target else built[-1]]
    while found[0].base in by_name:
        found.insert(0, by_name[found[0].base])
    return found


def read(path: Path) -> list[Instruction]:
    return parse(path.read_text(encoding="utf-8"))
