"""Ship the user docs in the package: docs/*.md become handy_colab/docs/*.md in the build, so
`handy-colab help TOPIC` works from a wheel. The pages stay in one place (docs/) in the source;
everything else about the package is in pyproject.toml."""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

DOCS = Path(__file__).resolve().parent / "docs"


class BuildPyWithDocs(build_py):
    def _doc_targets(self) -> list[tuple[Path, Path]]:
        dest = Path(self.build_lib) / "handy_colab" / "docs"
        return [(page, dest / page.name) for page in sorted(DOCS.glob("*.md"))]

    def run(self) -> None:
        super().run()
        # An editable install reads the checkout's docs/ directly (handy_colab/userdocs.py).
        if getattr(self, "editable_mode", False):
            return
        targets = self._doc_targets()
        if not targets:
            # A wheel without its help pages would only fail later, at `handy-colab help`.
            raise SystemExit(f"{DOCS}: no *.md pages to ship (is the sdist missing docs/?)")
        for src, dst in targets:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs: list[str] = super().get_outputs(include_bytecode)
        if not getattr(self, "editable_mode", False):
            outputs += [str(dst) for _src, dst in self._doc_targets()]
        return outputs


setup(cmdclass={"build_py": BuildPyWithDocs})
