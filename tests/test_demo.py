"""`defocuskit demo` end to end at a tiny size: ingest, train every method, evaluate by aperture."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from defocuskit.cli.demo import DEMO_MODELS


def test_demo_runs_the_whole_pipeline(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "defocuskit", "demo", "--out", str(out), "--steps-scale", "0.01", "--size", "64",
         "--limit", "6", "--workers", "0"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "1/3 ingest" in proc.stdout and "3/3 eval" in proc.stdout
    report = json.loads((out / "report" / "report.json").read_text())
    methods = {row["method"] for row in report["rows"]}
    trained = {m.name for m in DEMO_MODELS if m.name != "defocus-map"}  # the map estimator feeds RDDM
    assert methods == trained | {"input", "wiener", "prox"}
    # CoC maps come from the demo's own estimator, never the shards' coc.png; HIDD runs its recipe's sampler.
    assert report["protocol"]["coc"]["source"] == "map"
    from defocuskit.methods.recipes import load_recipe

    tiny = load_recipe(Path(__file__).resolve().parents[1] / "recipes" / "hidd-tiny.yaml")
    hidd = report["protocol"]["methods"]["hidd"]
    assert hidd["sampler"]["name"] == tiny.sampler.name
    assert hidd["sampler"]["consistency"] == tiny.sampler.consistency
    f_numbers = {row["f_number"] for row in report["rows"] if row["method"] == "input"}
    assert None in f_numbers and len(f_numbers - {None}) >= 2  # per-aperture rows and the "all" row
    for row in report["rows"]:
        assert row["n"] > 0 and 0.0 < row["ssim"] <= 1.0 and row["psnr"] > 10.0
    assert (out / "report" / "aperture.png").stat().st_size > 0
    for m in DEMO_MODELS:
        assert (out / "runs" / m.name / "model.safetensors").is_file()
    from defocuskit.data.reader import iter_samples
    from defocuskit.data.render import photo_of

    held = {photo_of(s["meta"]["scene"]) for s in iter_samples(out / "shards", "test")}
    seen = {photo_of(s["meta"]["scene"]) for s in iter_samples(out / "shards", "train")}
    assert len(held) >= 2 and not held & seen  # a test split of several photographs, none of them trained on


def _demo(out: Path, preset: str, limit: int) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "defocuskit", "demo", "--preset", preset, "--out", str(out), "--steps-scale", "0.005",
         "--size", "64", "--limit", str(limit), "--workers", "0"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "report" / "report.json").read_text())


def test_misaligned_preset_trains_jdrl_on_moved_references_and_a_second_run_gives_the_same_table(tmp_path: Path):
    from defocuskit.cli.demo import PRESETS, planned_steps
    from defocuskit.data.reader import iter_samples

    out = tmp_path / "demo"
    report = _demo(out, "misaligned", 4)
    again = _demo(tmp_path / "again", "misaligned", 4)  # budgeted in steps: the machine's load changes nothing
    assert [{k: r[k] for k in ("method", "f_number", "psnr", "ssim")} for r in report["rows"]] == \
        [{k: r[k] for k in ("method", "f_number", "psnr", "ssim")} for r in again["rows"]]
    ran = json.loads((out / "demo.json").read_text())["models"]
    assert [(m["name"], m["reached"]) for m in ran] == [(m.name, planned_steps(m, 0.005)) for m in PRESETS["misaligned"]]
    assert {row["method"] for row in report["rows"]} == {m.name for m in PRESETS["misaligned"]} | {"input"}
    moved = next(s for s in iter_samples(out / "shards-misaligned", "train") if s["blur"] is not None)
    assert moved["meta"]["align"]["method"] == "injected"
    assert report["protocol"]["shards"] == str(out / "shards")  # scored on the aligned test split
    for row in report["rows"]:
        assert row["n"] > 0 and row["psnr"] > 10.0


def test_baselines_preset_scores_the_hidd_papers_baselines(tmp_path: Path) -> None:
    report = _demo(tmp_path / "demo", "baselines", 1)  # one pair: HIDD's sampler is the slow part
    assert {row["method"] for row in report["rows"]} == {"dncnn", "ffdnet", "cyclegan", "hidd", "input"}
    assert report["protocol"]["coc"]["source"] == "map"  # FFDNet's level map and HIDD's physics step



def test_demo_never_replaces_a_users_demo_json(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    out.mkdir()
    (out / "demo.json").write_text('{"mine": 1}')
    proc = subprocess.run([sys.executable, "-m", "defocuskit", "--threads", "1", "demo", "--out", str(out),
                           "--steps-scale", "0.005", "--size", "64", "--limit", "2", "--workers", "0"],
                          capture_output=True, text=True, timeout=600)
    said = f"{out / 'demo.json'}: exists and was not written by an earlier `defocuskit demo`"
    assert proc.returncode == 2 and said in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert (out / "demo.json").read_text() == '{"mine": 1}' and [p.name for p in out.iterdir()] == ["demo.json"]
    (out / "demo.json").unlink()
    (out / "runs" / "rddm").mkdir(parents=True)
    (out / "runs" / "rddm" / "model.safetensors").write_bytes(b"mine")  # stops the demo before any work
    proc = subprocess.run([sys.executable, "-m", "defocuskit", "--threads", "1", "demo", "--out", str(out),
                           "--steps-scale", "0.005", "--size", "64", "--limit", "2", "--workers", "0"],
                          capture_output=True, text=True, timeout=600)
    said = f"{out / 'runs' / 'rddm' / 'model.safetensors'}: not written by an earlier `defocuskit train` run"
    assert proc.returncode == 2 and said in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ["runs"] and not (out / "runs" / "nafnet").exists()
    (out / "runs").rename(tmp_path / "runs-of-the-user")
    (out / "report").mkdir()
    (out / "report" / "report.json").write_text('{"mine": 1}')  # stops it before any work too, not after training
    proc = subprocess.run([sys.executable, "-m", "defocuskit", "--threads", "1", "demo", "--out", str(out),
                           "--steps-scale", "0.005", "--size", "64", "--limit", "2", "--workers", "0"],
                          capture_output=True, text=True, timeout=600)
    said = f"{out / 'report' / 'report.json'}: exists and was not written by an earlier evaluation"
    assert proc.returncode == 2 and said in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ["report"]
    assert (out / "report" / "report.json").read_text() == '{"mine": 1}'


def test_demo_refuses_numbers_it_cannot_use_before_any_work(tmp_path: Path) -> None:
    """NaN or inf for --steps-scale or --minutes (a traceback after the ingest, or every model stopped at its first
    steps with exit 0), a --size no synthetic scene has (a traceback or 120 GB asked) and a --limit below 1 (refused
    only after every model had trained): one line naming the option, exit 2, nothing written."""
    from typer.testing import CliRunner

    from defocuskit.cli.app import app

    out = tmp_path / "demo"
    for option, value, said in [("--steps-scale", "nan", "--steps-scale nan: a finite number above 0"),
                                ("--steps-scale", "inf", "--steps-scale inf: a finite number above 0"),
                                ("--minutes", "nan", "--minutes nan: a finite number above 0"),
                                ("--size", "0", "--size 0: the scenes' longer side, 16 to 4096 pixels"),
                                ("--size", "100000", "--size 100000: the scenes' longer side"),
                                ("--limit", "0", "--limit 0: at least 1 test pair")]:
        result = CliRunner().invoke(app, ["demo", "--out", str(out), "--workers", "0", "--device", "cpu",
                                          option, value])
        assert result.exit_code == 2 and said in result.output and "Traceback" not in result.output, result.output
        assert not out.exists()


def test_a_killed_rerun_does_not_leave_the_earlier_runs_demo_json_as_if_finished(tmp_path: Path, monkeypatch) -> None:
    """A rerun stopped after it had replaced some models left the earlier run's demo.json, which named the steps of
    models no longer there, as a finished demo's, and its report of those models; now demo.json says "complete":
    false until a run ends, and the earlier report is removed as the run starts."""
    import io

    from rich.console import Console

    import defocuskit.train.loop as loop
    from defocuskit.cli.demo import run_demo

    out = tmp_path / "demo"
    quiet = Console(file=io.StringIO())
    run_demo(out, steps_scale=0.002, size=32, workers=0, limit=2, console=quiet)
    assert json.loads((out / "demo.json").read_text())["models"]
    real, calls = loop.train, []

    def train_then_stop(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # Ctrl-C while the second model trains: the first is already the rerun's
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "train", train_then_stop)
    try:
        run_demo(out, steps_scale=0.004, size=32, workers=0, limit=2, console=quiet)
    except KeyboardInterrupt:
        pass
    record = json.loads((out / "demo.json").read_text())
    assert record.get("complete") is False and record["steps_scale"] == 0.004 and record["models"] == []
    assert sorted(p.name for p in (out / "report").iterdir() if not p.name.startswith(".")) == []  # no stale report
    monkeypatch.setattr(loop, "train", real)
    run_demo(out, steps_scale=0.004, size=32, workers=0, limit=2, console=quiet)  # the same command again finishes
    record = json.loads((out / "demo.json").read_text())
    assert record["complete"] is True and [m["steps"] for m in record["models"]] == [8, 10, 6, 8]


def test_the_minutes_budget_holds_the_training_of_every_model_or_is_refused(tmp_path: Path, monkeypatch) -> None:
    """At --minutes 1 the first model took the whole minute and every later one its setup and export on top (68.7 s
    of training on the 2-core CPU; 0.2: 22.6 s of 12). Here each model costs 3 s besides its steps (the most measured)
    on a clock of the test's; a budget below what the demo can keep is refused, naming the smallest."""
    import io
    from types import SimpleNamespace

    from rich.console import Console

    import defocuskit.cli.demo as demo
    import defocuskit.data.ingest as ingest
    import defocuskit.eval.evaluate as evaluate
    import defocuskit.train.loop as loop

    clock = SimpleNamespace(now=0.0)
    monkeypatch.setattr(demo, "time", SimpleNamespace(monotonic=lambda: clock.now))
    monkeypatch.setattr(ingest, "run_ingest", lambda *args, **kwargs: None)
    monkeypatch.setattr(evaluate, "evaluate", lambda *args, **kwargs: {})

    def train(recipe, resume=True):  # 3 s of setup and export, then 0.1 s a step until max_minutes (and one more)
        t, out = recipe.train, Path(recipe.output_dir)
        steps = min(t.max_steps, int(t.max_minutes * 600) + 1)
        clock.now += 3.0 + 0.1 * steps
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.jsonl").write_text(json.dumps({"step": steps}) + "\n")
        return out / "model.safetensors"

    monkeypatch.setattr(loop, "train", train)
    quiet = Console(file=io.StringIO())
    for minutes in (1.0, 0.5):  # 0.5: the smallest the default preset keeps
        out = tmp_path / f"demo-{minutes:g}"
        demo.run_demo(out, minutes=minutes, size=32, workers=0, device="cpu", console=quiet)
        record = json.loads((out / "demo.json").read_text())
        assert record["train_s"] <= minutes * 60, record
        assert all(m["reached"] >= 1 for m in record["models"])
    assert demo.smallest_minutes("default") == 0.5
    with pytest.raises(ValueError, match=r"^--minutes 0\.2: below the smallest training budget the default preset "
                                         r"keeps, 0\.5 \(4 models, .*\); give --minutes 0\.5 or more$"):
        demo.run_demo(tmp_path / "small", minutes=0.2, size=32, workers=0, device="cpu", console=quiet)
    assert not (tmp_path / "small").exists()
    demo.run_demo(tmp_path / "default", size=32, workers=0, device="cpu", console=quiet)  # 30 minutes
    record = json.loads((tmp_path / "default" / "demo.json").read_text())
    assert [m["reached"] for m in record["models"]] == [m.steps for m in DEMO_MODELS]  # every model its steps
