"""mypy over the package as it installs: common/, requestor/ and worker/ as reqrep.common, ...

mypy names a file's module after the folders it sits in, so it would check ``common/errors.py``
as ``common.errors``, a module nobody imports, and find no ``reqrep.common`` at all: the folders
are mapped into ``reqrep`` by pyproject's ``package-dir``, which only packaging tools read. This
script reads that mapping and hands mypy every file under the module name it installs as, plus
the tests and tools, with the options of ``[tool.mypy]``. Each module is checked once, and
errors name the files in the checkout.

    python scripts/typecheck.py        # what scripts/test.sh runs
"""

from __future__ import annotations

import sys
from pathlib import Path

from mypy import build
from mypy.main import process_options
from mypy.modulefinder import BuildSource

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
EXTRA = ("tests", "bench", "scripts")  # checked under their own names
THIRD_PARTY = "third_party"  # a folder of other projects' code (tests/third_party/): not checked


def package_dirs() -> dict[str, Path]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    mapping = config["tool"]["setuptools"]["package-dir"]
    return {package: ROOT / folder for package, folder in mapping.items()}


def module_name(path: Path, package: str, folder: Path) -> str:
    parts = path.relative_to(folder).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join((package, *parts))


def sources() -> list[BuildSource]:
    found: dict[str, BuildSource] = {}
    mapping = package_dirs()
    for package, folder in mapping.items():
        for path in sorted(folder.rglob("*.py")):
            # A folder mapped to a package of its own (reqrep/ holds no link to common/ now,
            # but a nested mapping would) is left to that mapping.
            if any(
                other != folder and folder in other.parents and other in path.parents
                for other in mapping.values()
            ):
                continue
            name = module_name(path, package, folder)
            found[name] = BuildSource(str(path.relative_to(ROOT)), name, None, str(ROOT))
    for extra in EXTRA:
        for path in sorted((ROOT / extra).rglob("*.py")):
            if THIRD_PARTY in path.relative_to(ROOT).parts:
                continue  # other projects' code, kept as it came
            name = module_name(path, extra, ROOT / extra)
            found[name] = BuildSource(str(path.relative_to(ROOT)), name, None, str(ROOT))
    return list(found.values())


def main() -> int:
    # The options of [tool.mypy] (pyproject.toml), as the mypy command would read them; the
    # file list is ours. Passing a file keeps mypy from asking for targets.
    _targets, options = process_options(["scripts/typecheck.py"])
    result = build.build(sources(), options)
    for line in result.errors:
        print(line)
    checked = len(sources())
    if result.errors:
        files = len({line.split(":")[0] for line in result.errors})
        print(f"Found errors in {files} files (checked {checked} source files)")
        return 1
    print(f"Success: no issues found in {checked} source files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
