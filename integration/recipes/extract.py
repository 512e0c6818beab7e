"""Extracts the README's checked recipes.

A recipe block is a fenced code block right after a marker line
`<!-- check: NAME KIND [PATH] -->`: KIND `file` writes the block to PATH in
the recipe's project, `run` is a shell script run there, `dep` and
`Dockerfile` are read by the runner as they are. In a `run` block, a trailing
`# prints TEXT` (with `\\n` for line breaks) is output the script must print,
in that order.

    python3 extract.py README.md OUTDIR

writes OUTDIR/NAME/{files/PATH, run.sh, expected, dep, Dockerfile}.
"""
import os
import re
import sys

MARKER = re.compile(r"^<!-- check: (\S+) (\S+)(?: (\S+))? -->$")
PRINTS = re.compile(r"#\s*prints\s+(.*)$")


def blocks(lines):
    for i, line in enumerate(lines):
        match = MARKER.match(line.strip())
        if not match:
            continue
        fence = lines[i + 1].strip()
        if not fence.startswith("```"):
            sys.exit(f"README line {i + 2}: a check marker must precede a code block")
        end = next(j for j in range(i + 2, len(lines)) if lines[j].strip() == "```")
        yield match.groups(), "".join(lines[i + 2 : end])


def main(readme, out):
    text = open(readme, encoding="utf-8").read()
    lines = text.splitlines(keepends=True)
    count = 0
    for (name, kind, path), body in blocks(lines):
        base = os.path.join(out, name)
        os.makedirs(base, exist_ok=True)
        if kind == "file":
            target = os.path.join(base, "files", path)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            open(target, "w", encoding="utf-8").write(body)
        elif kind == "run":
            open(os.path.join(base, "run.sh"), "a", encoding="utf-8").write(body)
            expected = [
                m.group(1).encode().decode("unicode_escape")
                for m in map(PRINTS.search, body.splitlines())
                if m
            ]
            with open(os.path.join(base, "expected"), "a", encoding="utf-8") as f:
                for text_ in expected:
                    f.write(text_.replace("\n", "\\n") + "\n")
        else:
            open(os.path.join(base, kind), "w", encoding="utf-8").write(body)
        count += 1
    print(f"{count} checked blocks in {readme}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
