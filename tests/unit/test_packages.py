"""packages: the presence check (run by a real interpreter) and reading pip's/apt's verdict."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import packaging
import pytest

from handy_colab.packages import (
    PackageResult,
    failure_reason,
    install_packages,
    python_presence,
    redact,
)

PIP_VERSION = subprocess.run(
    [sys.executable, "-c", "import importlib.metadata as m; print(m.version('pip'))"],
    capture_output=True,
    text=True,
    check=True,
).stdout.strip()


# -- presence, judged by this interpreter (which has `packaging`) --------------------------


@pytest.mark.parametrize(
    ("spec", "present"),
    [
        ("pip", True),
        ("PIP", True),  # names compare normalised
        ("pip>=1", True),
        ("pip<1", False),
        (f"pip=={PIP_VERSION}", True),
        ('pip; python_version < "3"', True),  # the marker rules it out: nothing to do
        ('pip<1; python_version >= "3"', False),  # the marker applies, the version does not
        ("git+https://example.invalid/x/y", False),
        ("pip @ https://example.invalid/pip.whl", False),  # a URL always goes to pip
        ("./some/local/dir", False),
        ("!!not a requirement", False),
        ("hc-no-such-distribution", False),
    ],
)
def test_presence_against_this_interpreter(spec: str, present: bool) -> None:
    got = python_presence(sys.executable, [spec])[spec]
    assert got.present is present, got


def test_presence_reports_the_installed_version_even_when_unsatisfied() -> None:
    got = python_presence(sys.executable, ["pip", "pip<1", 'pip; python_version < "3"'])
    assert got["pip"].version == PIP_VERSION
    assert got["pip<1"].version == PIP_VERSION and not got["pip<1"].present
    assert got['pip; python_version < "3"'].note.startswith("marker does not apply")


def test_presence_with_an_extra_checks_the_extras_dependencies(tmp_path: Path) -> None:
    """An extra whose dependency is missing means pip has work to do."""
    site = _bare_venv(tmp_path / "venv")
    _dist_info(
        site,
        "hcx-core",
        "1.0",
        ["Provides-Extra: more", 'Requires-Dist: hcx-extra-dep>=1.9; extra == "more"'],
    )
    py = str(tmp_path / "venv" / "bin" / "python")
    # This venv has neither packaging nor pip; give it this interpreter's packaging.
    (site / "packaging").symlink_to(Path(str(packaging.__file__)).parent)
    assert not python_presence(py, ["hcx-core[more]"])["hcx-core[more]"].present
    _dist_info(site, "hcx-extra-dep", "1.5", [])
    assert not python_presence(py, ["hcx-core[more]"])["hcx-core[more]"].present  # too old
    _dist_info(site, "hcx-extra-dep", "2.0rc1", [])
    # A prerelease that is installed counts for a plain specifier.
    got = python_presence(py, ["hcx-core[more]", "hcx-extra-dep>=1.9"])
    assert got["hcx-core[more]"].present and got["hcx-extra-dep>=1.9"].present
    assert got["hcx-core[more]"].version == "1.0"


def test_presence_without_any_requirement_parser_compares_names_only(tmp_path: Path) -> None:
    """An interpreter with neither packaging nor pip: bare names are checked, the rest go
    to pip."""
    site = _bare_venv(tmp_path / "venv")
    _dist_info(site, "hcx-thing", "3.1", [])
    py = str(tmp_path / "venv" / "bin" / "python")
    probe = subprocess.run([py, "-c", "import pip"], capture_output=True)
    assert probe.returncode != 0, "the bare venv must not have pip"
    specs = ["hcx-thing", "HCX_Thing", "hcx-thing>=1", "pip", "nope"]
    got = python_presence(py, specs)
    assert got["hcx-thing"].present and got["hcx-thing"].version == "3.1"
    assert got["HCX_Thing"].present
    assert not got["hcx-thing>=1"].present
    assert not got["pip"].present
    assert not got["nope"].present


def test_presence_when_the_interpreter_cannot_run() -> None:
    got = python_presence("/nonexistent/python3", ["pip"])
    assert got["pip"].present is False


def test_specs_with_credentials_stay_off_the_command_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    spec = "pkg @ git+https://user:s3cr3t-token@example.invalid/x.git"
    with caplog.at_level("DEBUG"):
        got = python_presence(sys.executable, [spec, "pip"])
    assert not got[spec].present and got[spec].name == "pkg"
    assert got["pip"].present
    assert "s3cr3t-token" not in caplog.text
    assert redact(spec) == "pkg @ git+https://****@example.invalid/x.git"


# -- install_packages without installing anything ------------------------------------------


def test_everything_present_runs_no_install() -> None:
    lines: list[str] = []
    specs = ["pip", 'pip>=1; python_version < "3"']
    got = install_packages(specs, [], python=sys.executable, progress=lines.append)
    assert got == [
        PackageResult("python", "pip", "present", PIP_VERSION),
        PackageResult(
            "python",
            'pip>=1; python_version < "3"',
            "present",
            'marker does not apply here: python_version < "3"',
        ),
    ]
    assert lines[0] == "checking 2 python packages"
    assert lines[1] == f"python package pip: already present ({PIP_VERSION})"
    assert not any("installing" in line for line in lines), lines


def test_options_and_bad_os_names_are_refused_by_name() -> None:
    got = install_packages(["-U"], ["tmux; rm -rf /", "-y"], python=sys.executable)
    assert [r.status for r in got] == ["failed", "failed", "failed"]
    assert "python_packages" in got[0].detail
    assert "not a Debian package name" in got[1].detail and "os_packages" in got[1].detail
    assert all("\n" not in r.detail for r in got)


def test_a_timeout_is_that_packages_failure() -> None:
    got = install_packages(["hc-no-such-dist"], [], python=sys.executable, timeout=0.01)
    assert [(r.status, r.detail.split(" Fix:")[0]) for r in got] == [
        ("failed", "pip did not finish within 0.01 s.")
    ]


def test_nothing_to_do() -> None:
    assert install_packages([], [], python=sys.executable) == []


# -- the reason of a failure ---------------------------------------------------------------

PIP_NOT_FOUND = """\
Looking in links: /tmp/wheels
WARNING: Location '/tmp/empty' is ignored: it is either a non-existing path or lacks a \
specific scheme.
ERROR: Could not find a version that satisfies the requirement nosuchpkg (from versions: none)
ERROR: No matching distribution found for nosuchpkg
"""

PIP_EXTERNALLY_MANAGED = """\
error: externally-managed-environment

\u00d7 This environment is externally managed
\u2570\u2500> To install Python packages system-wide, try apt install
    python3-xyz, where xyz is the package you are trying to
    install.

note: If you believe this is a mistake, please contact your Python installation or OS \
distribution provider.
hint: See PEP 668 for the detailed specification.
"""

PIP_CONFLICT = """\
ERROR: Cannot install a==1 and b==2 because these package versions have conflicting \
dependencies.

The conflict is caused by:
    a 1 depends on c<1
    b 2 depends on c>=2

ERROR: ResolutionImpossible: for help visit https://pip.pypa.io/en/latest/topics/x
"""

PIP_BUILD = """\
  error: subprocess-exited-with-error

  \u00d7 python setup.py egg_info did not run successfully.
  \u2502 exit code: 1
  \u2570\u2500> [6 lines of output]
      ModuleNotFoundError: No module named 'numpy'
      [end of output]

  note: This error originates from a subprocess, and is likely not a problem with pip.
error: metadata-generation-failed

\u00d7 Encountered error while generating package metadata.
\u2570\u2500> See above for output.

note: This is an issue with the package mentioned above, not pip.
hint: See above for details.
"""

APT_NOT_FOUND = """\
Reading package lists...
Building dependency tree...
Reading state information...
E: Unable to locate package hc-no-such-package
"""

APT_LOCKED = """\
E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 4242 (apt-get)
N: Be aware that removing the lock file is not a solution and may break your system.
E: Unable to acquire the dpkg frontend lock (/var/lib/dpkg/lock-frontend), is another \
process using it?
"""

NO_PIP = "/usr/bin/python3: No module named pip\n"


@pytest.mark.parametrize(
    ("output", "reason"),
    [
        (PIP_NOT_FOUND, "ERROR: No matching distribution found for nosuchpkg"),
        (
            PIP_EXTERNALLY_MANAGED,
            "error: externally-managed-environment (This environment is externally managed)",
        ),
        (
            PIP_CONFLICT,
            "ERROR: Cannot install a==1 and b==2 because these package versions have "
            "conflicting dependencies.",
        ),
        (
            PIP_BUILD,
            "error: metadata-generation-failed "
            "(Encountered error while generating package metadata.)",
        ),
        (APT_NOT_FOUND, "E: Unable to locate package hc-no-such-package"),
        (
            APT_LOCKED,
            "E: Unable to acquire the dpkg frontend lock (/var/lib/dpkg/lock-frontend), "
            "is another process using it?",
        ),
        (NO_PIP, "/usr/bin/python3: No module named pip"),
        ("\x1b[31mERROR: coloured\x1b[0m\n", "ERROR: coloured"),
    ],
)
def test_failure_reason(output: str, reason: str) -> None:
    assert failure_reason(output, 1) == reason


def test_failure_reason_without_output_names_the_exit_code() -> None:
    assert failure_reason("\n  \n", 100) == "exit code 100"


def test_failure_reason_is_one_bounded_line() -> None:
    got = failure_reason("ERROR: " + "x " * 1000, 1)
    assert "\n" not in got and len(got) <= 300


# -- helpers -------------------------------------------------------------------------------


def _bare_venv(root: Path) -> Path:
    """A venv with nothing in it (no pip, no packaging); returns its site-packages."""
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(root)],
        check=True,
        capture_output=True,
    )
    (site,) = root.glob("lib/python3*/site-packages")
    return site


def _dist_info(site: Path, name: str, version: str, extra: list[str]) -> None:
    for old in site.glob(f"{name.replace('-', '_')}-*.dist-info"):
        for f in old.iterdir():
            f.unlink()
        old.rmdir()
    d = site / f"{name.replace('-', '_')}-{version}.dist-info"
    d.mkdir()
    meta = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}", *extra]
    (d / "METADATA").write_text("\n".join(meta) + "\n")
