"""tools/gpu_check.py in its --cpu-tiny mode: every row it promises is measured with positive, finite figures, and a
failed row or an unknown --only name is one line of error with a nonzero exit status (the GPU rows themselves need a
GPU; this keeps the script from rotting)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[1] / "tools" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    path = list(sys.path)
    spec = importlib.util.spec_from_file_location("gpu_check", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module
    spec.loader.exec_module(module)  # puts tools/ on sys.path for its helper module
    yield module
    sys.path[:] = path
    for name in ("gpu_check", "gpu_check_rows"):
        sys.modules.pop(name, None)


@pytest.fixture(autouse=True)
def cpu_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACCELERATE_USE_CPU", "1")  # restored after the test (the tool sets it for its run)
    monkeypatch.setenv("DEFOCUSKIT_THREADS", "1")


MAIN_FIGURE = {"train": "images_per_s", "eval": "s_per_image", "rddm": "s_per_image", "hidd": "nfe_per_s"}


def test_cpu_tiny_measures_every_row(gpu_check, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "tiny.json"
    assert gpu_check.main(["--cpu-tiny", "--out", str(out), "--work", str(tmp_path / "work")]) == 0
    printed = capsys.readouterr()
    report = json.loads(out.read_text())
    tiny = sorted(p.stem for p in (TOOL.parents[1] / "defocuskit" / "recipes").glob("*-tiny.yaml"))
    promised = [f"train/{n}" for n in tiny] + ["eval/whole", "eval/tile32", "rddm/latency", "hidd/fast", "hidd/released"]
    rows = {r["name"]: r for r in report["rows"]}
    assert sorted(rows) == sorted(promised)
    for name, row in rows.items():
        assert row["error"] is None, (name, row["error"])
        main = row["figures"][MAIN_FIGURE[name.split("/")[0]]]
        assert math.isfinite(main) and main > 0, (name, row["figures"])
        assert all(math.isfinite(v) and v >= 0 for v in row["figures"].values()), (name, row["figures"])
        assert row["peak_mib"] is None  # no GPU: nothing is claimed
        line = next(ln for ln in printed.out.splitlines() if ln.startswith(f"| {name} |"))
        assert "n/a (cpu)" in line and "FAILED" not in line
    for name, nfe in (("hidd/fast", 10), ("hidd/released", 40)):  # fast: 10 steps; released: 10 steps x 4 NFE
        figures = rows[name]["figures"]
        assert figures["nfe"] == nfe and figures["s_per_image"] > 0
    assert rows["train/nafnet-tiny"]["figures"]["measured_s"] > 0
    assert "whole" in rows["eval/whole"]["what"] and "tiles 32x32" in rows["eval/tile32"]["what"]
    assert report["mode"] == "cpu-tiny" and report["machine"]["torch"] and report["machine"]["date"]
    assert printed.out.startswith("machine: cpu;") and "\ncommand: python tools/gpu_check.py --cpu-tiny" in printed.out
    assert "error" not in printed.err


def test_a_failed_row_is_one_line_and_the_others_still_run(gpu_check, tmp_path: Path, capsys: pytest.CaptureFixture,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(ctx, row) -> None:
        raise RuntimeError("CUDA out of memory\nsecond line of the message")

    monkeypatch.setattr(gpu_check, "rddm_row", broken)
    out = tmp_path / "failed.json"
    assert gpu_check.main(["--cpu-tiny", "--only", "rddm,hidd/fast", "--out", str(out),
                           "--work", str(tmp_path / "work")]) == 1
    printed = capsys.readouterr()
    errors = [ln for ln in printed.err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: rddm/latency: RuntimeError: CUDA out of memory (log: ")
    assert "second line" not in printed.err
    assert "traceback" in (tmp_path / "work" / "logs" / "rddm_latency.log").read_text().lower()
    rows = {r["name"]: r for r in json.loads(out.read_text())["rows"]}
    assert sorted(rows) == ["hidd/fast", "rddm/latency"]
    assert rows["hidd/fast"]["error"] is None and rows["hidd/fast"]["figures"]["nfe_per_s"] > 0
    assert "| rddm/latency |  | FAILED: RuntimeError: CUDA out of memory |" in printed.out


def test_unknown_only_name_is_a_one_line_usage_error(gpu_check, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert gpu_check.main(["--cpu-tiny", "--only", "train/nafnet-tiny,warp-drive", "--work", str(tmp_path / "w")]) == 2
    printed = capsys.readouterr()
    assert printed.err.count("\n") == 1 and printed.err.startswith("error: --only warp-drive: no such row")
    assert printed.out == "" and not (tmp_path / "w").exists()  # nothing ran


def test_an_out_or_work_it_cannot_use_is_refused_before_any_row(gpu_check, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "notes.json").write_text("my precious notes")  # written over after the first row, before
    (tmp_path / "adir").mkdir()
    (tmp_path / "wfile").write_text("x")
    for args, said in ((["--out", str(tmp_path / "notes.json")], "exists and was not written by gpu_check"),
                       (["--out", str(tmp_path / "adir")], "is a folder; give a JSON file name"),
                       (["--work", str(tmp_path / "wfile")], "is a file; give a folder")):
        assert gpu_check.main(["--cpu-tiny", "--only", "eval/whole", *args]) == 2
        printed = capsys.readouterr()
        assert printed.err.count("\n") == 1 and said in printed.err and printed.out == "", printed.err
    assert (tmp_path / "notes.json").read_text() == "my precious notes"


@pytest.mark.parametrize("name", ["drbnet-finetune", "restormer-finetune"])
def test_fine_tuning_recipes_start_from_a_random_export_that_fits(gpu_check, tmp_path: Path, name: str) -> None:
    """The GPU plan trains the fine-tuning recipes too: their `train.init_from` (a released model the check does not
    have) is pointed at an export of the recipe's own network, which the loop's checks accept."""
    import gpu_check_rows as rows
    import torch

    from defocuskit.methods import get_method
    from defocuskit.methods.recipes import load_recipe
    from defocuskit.train.init import init_provenance, load_initial_weights

    recipe = load_recipe(name)
    method = get_method(recipe.method)
    ctx = rows.Context(gpu_check.make_plan(gpu_check.argparse.Namespace(
        cpu_tiny=False, warmup=None, steps=None, hidd_steps=None, tile=32)), tmp_path)
    links = rows.weight_links(ctx, name, method, recipe)
    init = [x.split("=", 1)[1] for x in links if x.startswith("train.init_from=")]
    assert len(init) == 1 and Path(init[0]).is_file()
    linked = load_recipe(name, rows.offline(recipe) + links)
    model_file, provenance = init_provenance(linked.train.init_from)
    net = method.build(linked.model, linked.objective, False)
    torch.nn.init.zeros_(next(iter(net.parameters())))
    load_initial_weights(net, model_file, method.name, linked.train.init_from)
    assert next(iter(net.parameters())).abs().sum() > 0 and provenance["init_from"] == init[0]
