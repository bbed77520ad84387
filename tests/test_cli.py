"""The command line: one clear error line for bad input, tables for results."""
import os
import subprocess
import sys

from click.testing import CliRunner

from aim.cli import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(*args):
    """The command in a fresh process, with none of the quieting an in-process CLI call sets here."""
    env = {k: v for k, v in os.environ.items() if k not in ("TRANSFORMERS_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS")}
    return subprocess.run([sys.executable, os.path.join(ROOT, "cli.py"), *args], capture_output=True, text=True,
                          env=dict(env, HF_HUB_OFFLINE="1"), timeout=300)


def one_error_line(proc):
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def test_unknown_backbone_name():
    line = one_error_line(run_cli("answer", "--backbone", "no-such-model", "--limit", "1"))
    assert "no-such-model" in line and "pocket" in line


def test_folder_that_is_not_a_model(tmp_path):
    line = one_error_line(run_cli("answer", "--backbone", str(tmp_path), "--limit", "1"))
    assert str(tmp_path) in line and "config.json" in line


def test_missing_and_corrupt_image(tmp_path):
    line = one_error_line(run_cli("ask", str(tmp_path / "missing.jpg"), "what is it?"))
    assert "missing.jpg" in line and "not found" in line
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    line = one_error_line(run_cli("ask", str(bad), "what is it?"))
    assert "broken.png" in line and "corrupt" in line


def test_unknown_dataset():
    line = one_error_line(run_cli("answer", "--dataset", "coco:val", "--limit", "1"))
    assert "coco:val" in line and "easy-vqa:test" in line


def test_a_bad_training_setting_is_one_line_before_anything_loads(tmp_path):
    line = one_error_line(run_cli("train", "fuser", "--out", str(tmp_path / "run"), "--batch-size", "3",
                                  "--grad-accum", "2"))
    assert line == "error: --batch-size 3 must be a multiple of --grad-accum 2"
    line = one_error_line(run_cli("train", "fuser", "--out", str(tmp_path / "run"), "--residual-mode", "prepend",
                                  "--residual-tokens", "0"))
    assert "residual_mode='prepend' needs residual_tokens" in line and "--residual-tokens N" in line
    assert not (tmp_path / "run").exists()


def test_the_main_job_is_quiet_unless_verbose():
    result = run_cli("answer", "--dataset", "easy-vqa:test", "--limit", "1")
    assert result.returncode == 0, result.stderr
    noise = [line for line in result.stderr.replace("\r", "\n").splitlines()
             if line.strip() and not line.startswith("answering")]
    assert noise == [], noise  # no warnings, no weight-loading bars: aim's own bar and the table only
    verbose = run_cli("-v", "answer", "--dataset", "easy-vqa:test", "--limit", "1")
    assert verbose.returncode == 0 and "Loading weights" in verbose.stderr  # the libraries' own output, with -v


def test_help_lists_commands():
    out = CliRunner().invoke(cli, ["--help"]).output
    for command in ("answer", "ask", "info", "train"):
        assert command in out


def test_answer_prints_a_table():
    result = CliRunner().invoke(cli, ["answer", "--dataset", "easy-vqa:test", "--limit", "3"])
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if line.startswith("| test-")]
    assert len(rows) == 3
    assert "VQA accuracy" in result.output
