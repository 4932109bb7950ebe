"""Read the Dockerfile into stages, so tests can follow its steps without a Docker engine.

Enough of the format for wasp's own Dockerfile: comments, line continuations,
`ARG`, `FROM ... AS`, `ENV k=v ...`, `WORKDIR`, `COPY`, `RUN` (with `--mount`
flags), `USER`, `ENTRYPOINT`, `CMD`, `EXPOSE`.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [i.args for i in self.instructions if i.keyword == keyword]

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for args in self.all("ENV"):
            for pair in shlex.split(args):
                key, _, value = pair.partition("=")
                values[key] = value
        return values

    def workdir(self) -> str:
        dirs = self.all("WORKDIR")
        return dirs[-1] if dirs else "/"

    def runs(self) -> list[str]:
        """RUN commands without their BuildKit flags (`--mount=...`)."""
        commands = []
        for args in self.all("RUN"):
            words = args.split(" ")
            while words and words[0].startswith("--"):
                words.pop(0)
            commands.append(" ".join(words).strip())
        return commands

    def json_form(self, keyword: str) -> list[str]:
        values = self.all(keyword)
        parsed: list[str] = json.loads(values[-1]) if values else []
        return parsed


def logical_lines(text: str) -> list[str]:
    """Instructions one per line: comments dropped, continuations joined."""
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or not stripped:
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1].strip() + " "
            continue
        lines.append((current + stripped).strip())
        current = ""
    if current:
        lines.append(current.strip())
    return lines


def parse(path: Path) -> tuple[dict[str, str], list[Stage]]:
    """The global ARGs (with defaults) and the stages, in order."""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical_lines(path.read_text()):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = rest.split()
            base = words[0]
            for name, value in args.items():
                base = base.replace("${" + name + "}", value)
            named = len(words) == 3 and words[1].upper() == "AS"
            stages.append(Stage(base=base, name=words[2] if named else None))
        elif keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        else:
            stages[-1].instructions.append(Instruction(keyword, rest))
    return args, stages
