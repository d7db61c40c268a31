"""Check that every relative link in the repository's Markdown files resolves.

    python scripts/check_links.py [FILE.md ...]      (default: README.md, RESULTS.md, benchmarks/, docs/)

A link [text](target) whose target is not a URL (http:, https:, mailto:) must name a file or
folder that exists relative to the Markdown file; a `#fragment` must match a heading of the target
file (GitHub's anchor rules: lower case, punctuation dropped, spaces to hyphens). Files listed in
ALLOWED_MISSING may be absent (documents written elsewhere and merged later); set
CHECK_LINKS_STRICT=1 to require them too. Exits 1 and lists every broken link.
"""
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ["README.md", "RESULTS.md", "benchmarks/RESULTS.md", "docs"]
ALLOWED_MISSING = {"docs/cuda_emulation.md", "docs/install.md", "docs/gpu_check.md", "docs/preemption.md",
                   "docs/data.md"}
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^\s*```")


def anchors(path: Path) -> set[str]:
    """GitHub-style anchors of the Markdown headings in `path` (code blocks skipped)."""
    found, in_code = set(), False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            slug = re.sub(r"[^\w\- ]", "", title, flags=re.UNICODE).replace(" ", "-")
            found.add(slug)
    return found


def links(path: Path):
    """(line number, target) of every inline link outside code blocks."""
    in_code = False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if FENCE.match(line):
            in_code = not in_code
            continue
        if in_code:
            continue
        for target in LINK.findall(re.sub(r"`[^`]*`", "", line)):
            yield number, target


def broken_links(path: Path, strict: bool) -> list[str]:
    """Descriptions of the links in `path` that do not resolve."""
    problems = []
    for number, target in links(path):
        if re.match(r"^[a-z]+:", target):
            continue
        file_part, _, fragment = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path.resolve()
        relative = os.path.relpath(resolved, ROOT)
        if not resolved.exists():
            if not strict and relative in ALLOWED_MISSING:
                continue
            problems.append(f"{path.relative_to(ROOT)}:{number}: {target} -> {relative} does not exist")
        elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
            problems.append(f"{path.relative_to(ROOT)}:{number}: {target} -> no heading #{fragment} in {relative}")
    return problems


def markdown_files(names: list[str]) -> list[Path]:
    files = []
    for name in names:
        path = (ROOT / name) if not Path(name).is_absolute() else Path(name)
        if path.is_dir():
            files += sorted(path.rglob("*.md"))
        elif path.is_file():
            files.append(path)
        else:
            raise SystemExit(f"check_links: {name} does not exist")
    return files


def main(argv: list[str]) -> int:
    strict = os.environ.get("CHECK_LINKS_STRICT") == "1"
    files = markdown_files(argv or DEFAULT)
    problems = [p for f in files for p in broken_links(f, strict)]
    for problem in problems:
        print(problem)
    print(f"check_links: {len(files)} files, {len(problems)} broken links")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
