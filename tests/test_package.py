"""The package as users get it: a wheel that carries every module and the pocket's checkpoints, and
a lazy top level (``import aim`` and ``aim --help`` load no torch, transformers or FAISS).
``make wheel-check`` (run by CI) goes further: it installs the wheel into a fresh environment and
answers questions from outside the checkout."""
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

import aim

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEAVY = ("torch", "transformers", "faiss", "numpy", "accelerate", "peft")


def loaded_after(code: str) -> list[str]:
    """The heavy modules a fresh interpreter has imported after running ``code``."""
    probe = f"{code}\nimport sys\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_import_aim_and_the_help_load_nothing_heavy():
    assert loaded_after("import aim") == []
    assert loaded_after("import aim.cli, contextlib, io\n"
                        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
                        "    aim.cli.cli(['train', 'fuser', '--help'])") == []


def test_public_names_load_on_first_use():
    from aim.api import FewShot

    assert aim.FewShot is FewShot
    assert {"FewShot", "DemoBank", "Fuser", "load_backbone", "load_records"} <= set(dir(aim))
    with pytest.raises(AttributeError, match="has no attribute 'Nothing'"):
        aim.Nothing  # noqa: B018


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The wheel's file list, built from this checkout with the test environment's setuptools (no
    network); what setuptools leaves in the checkout is removed."""
    out = tmp_path_factory.mktemp("dist")
    left = [os.path.join(ROOT, name) for name in ("build", "aim_icl.egg-info")
            if not os.path.exists(os.path.join(ROOT, name))]
    try:
        build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                                "-w", str(out), ROOT], capture_output=True, text=True, timeout=600)
    finally:
        for path in left:
            shutil.rmtree(path, ignore_errors=True)
    assert build.returncode == 0, build.stderr
    (path,) = out.glob("aim_icl-*.whl")
    return zipfile.ZipFile(path).namelist()


def test_the_wheel_carries_every_module_and_the_shipped_checkpoints(wheel):
    sources = {os.path.relpath(os.path.join(folder, name), ROOT)
               for folder, _, names in os.walk(os.path.join(ROOT, "aim")) if "__pycache__" not in folder
               for name in names if name.endswith(".py")}
    assert sources - set(wheel) == set()
    checkpoints = os.path.join(ROOT, "aim", "backbones", "pocket", "checkpoints")
    files = {os.path.relpath(os.path.join(folder, name), ROOT)
             for folder, _, names in os.walk(checkpoints) for name in names}
    # next*/: a backbone still in training, kept in the repository between sessions, never shipped
    pending = {f for f in files if os.path.relpath(f, os.path.relpath(checkpoints, ROOT)).startswith("next")}
    shipped = files - pending
    assert len(shipped) == 8 and shipped - set(wheel) == set() and not pending & set(wheel)
    assert not [n for n in wheel if n.startswith(("tests/", "benchmarks/", "docs/"))]
