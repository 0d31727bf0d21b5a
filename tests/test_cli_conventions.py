"""CLI conventions: choices as enums (exit 2 naming them), --version, --workers as PyTorch's num_workers,
--device auto everywhere with a one-line error for an unavailable device, folders and globs for deblur."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import defocuskit
from defocuskit.cli import options as cli
from defocuskit.cli.app import app
from defocuskit.inference.files import deblur_files
from defocuskit.inference.inputs import expand_inputs
from defocuskit.io.devices import resolve_device
from defocuskit.io.formats import ImageError
from defocuskit.io.images import write_image

runner = CliRunner()


def _invoke(*args: str):
    return runner.invoke(app, list(args))


# ------------------------------------------------------------------------------------------------ choices


@pytest.mark.parametrize("args, option, choices", [
    (["ingest", "--out", "o", "--synthetic", "builtin", "--register", "sift"], "--register", ["ecc", "homography", "none"]),
    (["ingest", "--out", "o", "--synthetic", "builtin", "--split-by", "foo"], "--split-by", ["scene", "train", "test"]),
    (["ingest", "--out", "o", "--synthetic", "builtin", "--bit-depth", "12"], "--bit-depth", ["auto", "8", "16"]),
    (["ingest", "--out", "o", "--vabd", "v", "--bracket-fit", "subjct"], "--bracket-fit", ["frame", "subject"]),
    (["ingest", "--out", "o", "--cuhk-blur", "c", "--cuhk-white-is", "grey"], "--cuhk-white-is", ["auto", "blurred", "sharp"]),
    (["eval", "--baseline", "input", "--baseline", "bm3d"], "--baseline", ["input", "wiener", "prox"]),
    (["eval", "--align", "--align-by", "sift"], "--align-by", ["ecc", "flow"]),
    (["eval", "--ssim", "gauss"], "--ssim", ["uniform7", "gaussian11"]),
    (["eval", "--coc", "depth"], "--coc", ["map", "oracle", "fnumber"]),
    (["deblur", "a.png", "--checkpoint", "m", "--out", "o", "--coc", "oracle"], "--coc", ["map", "fnumber"]),
    (["demo", "--preset", "fast"], "--preset", ["default", "misaligned", "baselines"]),
])
def test_a_bad_choice_exits_2_naming_the_choices(args, option, choices, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = _invoke(*args)
    assert result.exit_code == 2, result.output
    assert option in result.output
    for choice in choices:
        assert f"'{choice}'" in result.output
    assert not (tmp_path / "o").exists()  # refused before any work


def test_eval_align_by_without_align_is_refused(tmp_path, monkeypatch):
    """--align-by flow without --align scored the outputs unregistered and exited 0."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "shards").mkdir()
    result = _invoke("eval", "--shards", "shards", "--baseline", "input", "--align-by", "flow", "--report", "rep")
    assert result.exit_code == 2, result.output
    assert result.output == "error: --align-by flow: how --align registers; without --align it would not be used\n"
    assert not (tmp_path / "rep").exists()


def test_choices_come_from_where_the_code_defines_them():
    from defocuskit.cli.demo import PRESETS
    from defocuskit.data.pairs import REGISTER_CHOICES
    from defocuskit.data.sample import CUHK_WHITE_IS
    from defocuskit.data.sources.cuhk_blur import WHITE_IS
    from defocuskit.eval.baselines import BASELINES
    from defocuskit.eval.metrics import SSIM_VARIANTS
    from defocuskit.eval.scoring import ALIGN_MODES
    from defocuskit.inference.coc_source import COC_SOURCES

    def values(enum):
        return [e.value for e in enum]

    assert values(cli.Register) == list(REGISTER_CHOICES) and values(cli.Baseline) == list(BASELINES)
    assert values(cli.EvalCoc) == list(COC_SOURCES) and values(cli.DeblurCoc) == [c for c in COC_SOURCES if c != "oracle"]
    assert values(cli.AlignBy) == list(ALIGN_MODES) and values(cli.Ssim) == list(SSIM_VARIANTS)
    assert values(cli.Preset) == list(PRESETS)
    assert values(cli.CuhkWhiteIs) == list(WHITE_IS) == list(CUHK_WHITE_IS)  # the CUHK source checks its own copy


def test_choices_reach_the_code_as_plain_strings(tmp_path, monkeypatch):
    import defocuskit.data.ingest as ingest
    import defocuskit.eval.evaluate as evaluate

    seen = {}

    def fake_ingest(sources, opts, **kw):
        seen["opts"] = opts
        raise ingest.IngestError("stop here")

    def fake_evaluate(*args, **kw):
        seen["eval"] = (args, kw)

    monkeypatch.setattr(ingest, "run_ingest", fake_ingest)
    monkeypatch.setattr(evaluate, "evaluate", fake_evaluate)
    result = _invoke("ingest", "--out", str(tmp_path / "o"), "--synthetic", "builtin", "--register", "homography",
                     "--bit-depth", "16", "--split-by", "test", "--cuhk-white-is", "sharp")
    assert result.exit_code == 1 and "stop here" in result.output
    opts = seen["opts"]
    assert (opts.register, opts.bit_depth, opts.split_by, opts.cuhk_white_is) == ("homography", "16", "test", "sharp")
    assert all(type(v) is str for v in (opts.register, opts.bit_depth, opts.split_by, opts.cuhk_white_is))
    assert opts.workers is None  # no --workers: ingest's default

    result = _invoke("eval", "--shards", str(tmp_path), "--baseline", "prox", "--baseline", "input", "--align",
                     "--align-by", "flow", "--ssim", "gaussian11", "--coc", "oracle")
    assert result.exit_code == 0, result.output
    args, _ = seen["eval"]
    assert args[2] == ["prox", "input"] and all(type(b) is str for b in args[2])
    kw = dataclasses.asdict(args[3])  # the EvalConfig
    assert (kw["align"], kw["ssim_variant"], kw["coc"], kw["device"]) == ("flow", "gaussian11", "oracle", "auto")
    assert all(type(kw[k]) is str for k in ("align", "ssim_variant", "coc"))


# ------------------------------------------------------------------------------------------------ --version


def test_version_prints_the_version_without_importing_torch():
    code = ("import sys\nfrom defocuskit.cli.app import app\ntry:\n    app(['--version'])\nexcept SystemExit as e:\n"
            "    print('exit', e.code, 'torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    lines = proc.stdout.splitlines()
    assert lines[0] == f"defocuskit {defocuskit.__version__} (torch {torch.__version__})", proc.stderr
    assert lines[1] == "exit 0 False"


# ------------------------------------------------------------------------------------------------ --workers


class _PoolStarted(Exception):
    pass


def _tiny_ingest(tmp_path: Path, name: str, workers):
    from defocuskit.data.ingest import run_ingest
    from defocuskit.data.sample import IngestOptions

    opts = IngestOptions(out=str(tmp_path / name), workers=workers, synthetic_size=32, synthetic_f_numbers=(2.0,))
    return run_ingest({"synthetic": Path("builtin")}, opts, progress=False)


def test_workers_follow_pytorch_num_workers(tmp_path, monkeypatch):
    import defocuskit.data.ingest as ingest
    import defocuskit.data.workers as workers_module

    pools = []

    def pool(n, **kw):
        pools.append(n)
        raise _PoolStarted

    monkeypatch.setattr(workers_module, "ProcessPoolExecutor", pool)
    manifest = _tiny_ingest(tmp_path, "main", 0)  # 0: all the work in the main process, no pool
    assert pools == [] and manifest["run"]["workers"] == 0 and manifest["counts"]["samples"] > 2
    for workers, expected in ((1, 1), (3, 3), (None, 2)):  # N: N processes; default: ingest.default_workers()
        monkeypatch.setattr(ingest, "default_workers", lambda: 2)
        with pytest.raises(_PoolStarted):
            _tiny_ingest(tmp_path, f"w{workers}", workers)
        assert pools[-1] == expected
    assert 1 <= ingest.default_workers() <= ingest.DEFAULT_MAX_WORKERS
    with pytest.raises(ingest.IngestError, match="--workers"):
        _tiny_ingest(tmp_path, "neg", -1)


def _members(tar_path: Path) -> list[tuple[str, bytes]]:
    """A shard's members in order with their bytes (tar headers carry the write time, so whole files differ)."""
    import tarfile

    with tarfile.open(tar_path) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]


def test_cli_workers_one_runs_one_worker_process(tmp_path, monkeypatch):
    """--workers 1 really starts a pool of one process, and its shards hold what --workers 0 writes."""
    import defocuskit.data.workers as workers_module

    real_pool, pools = workers_module.ProcessPoolExecutor, []

    def recording(n, **kw):  # the real pool; its sizes are recorded
        pools.append(n)
        return real_pool(n, **kw)

    monkeypatch.setattr(workers_module, "ProcessPoolExecutor", recording)
    tars = {}
    for workers in ("0", "1"):
        out = tmp_path / f"w{workers}"
        result = _invoke("ingest", "--synthetic", "builtin", "--synthetic-size", "32", "--synthetic-f-numbers", "2",
                         "--out", str(out), "--workers", workers)
        assert result.exit_code == 0, result.output
        tars[workers] = sorted(out.glob("*.tar"))
    assert pools == [1]  # 0: none; 1: one process
    assert [t.name for t in tars["1"]] == [t.name for t in tars["0"]] == ["test-000000.tar", "train-000000.tar"]
    for a, b in zip(tars["0"], tars["1"]):
        members = _members(a)
        assert len(members) > 8 and _members(b) == members


def test_cli_workers_default_and_negative(tmp_path):
    result = _invoke("ingest", "--out", str(tmp_path / "o"), "--synthetic", "builtin", "--workers", "-1")
    assert result.exit_code == 2 and "--workers" in result.output
    result = _invoke("demo", "--out", str(tmp_path / "d"), "--workers", "-2")
    assert result.exit_code == 2 and not (tmp_path / "d").exists()
    import typer

    commands = typer.main.get_command(app).commands
    for command in ("ingest", "demo"):
        (param,) = [p for p in commands[command].params if p.name == "workers"]
        assert param.default is None and "num_workers: 0 = in the main process" in param.help


# ------------------------------------------------------------------------------------------------ --device


def test_resolve_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device() == "cpu" and resolve_device("auto") == "cpu" and resolve_device("cpu") == "cpu"
    monkeypatch.setattr(torch.version, "cuda", None)
    with pytest.raises(ValueError) as exc:
        resolve_device("cuda")
    assert str(exc.value) == (f"--device cuda: this PyTorch build has no CUDA (torch {torch.__version__}); "
                              "use --device cpu or auto")
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    with pytest.raises(ValueError, match=r"--device cuda:0: no CUDA device is visible .*this machine has cpu$"):
        resolve_device("cuda:0")
    with pytest.raises(ValueError, match=r"--device mps: .*not available; this machine has cpu"):
        resolve_device("mps")
    with pytest.raises(ValueError, match="--device gpu: not a device name"):
        resolve_device("gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == "cuda" and resolve_device("cuda:1") == "cuda:1"
    with pytest.raises(ValueError, match=r"--device cuda:2: no such CUDA device; this machine has cuda:0, cuda:1, cpu"):
        resolve_device("cuda:2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == "mps" and resolve_device("mps") == "mps"


def _export_tiny_nafnet(path: Path) -> Path:
    from defocuskit.config.recipe import recipe_to_dict
    from defocuskit.io.modelfile import save_model
    from defocuskit.methods import get_method
    from defocuskit.methods.recipes import resolve_recipe

    recipe = resolve_recipe({"method": "nafnet", "data": {"image_size": 32},
                             "model": {"width": 8, "enc_blocks": [1], "middle_blocks": 1, "dec_blocks": [1]}})
    model = get_method("nafnet").build(recipe.model, recipe.objective, False)
    save_model(path, model.state_dict(), "nafnet", recipe_to_dict(recipe))
    return path


def test_unavailable_device_is_one_line_exit_2(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", None)
    model = _export_tiny_nafnet(tmp_path / "m.safetensors")
    write_image(tmp_path / "a.png", np.zeros((32, 32, 3), np.uint8))
    commands = {
        "deblur": ["deblur", str(tmp_path / "a.png"), "--checkpoint", str(model), "--out", str(tmp_path / "o")],
        "eval": ["eval", "--shards", str(tmp_path), "--baseline", "input", "--report", str(tmp_path / "o")],
        "demo": ["demo", "--out", str(tmp_path / "o")],
        "pseudo-coc": ["pseudo-coc", "--checkpoint", str(model), "--shards", str(tmp_path), "--out", str(tmp_path / "o")],
    }
    for name, args in commands.items():
        result = _invoke(*args, "--device", "cuda")
        assert result.exit_code == 2, (name, result.output)
        lines = result.output.strip().splitlines()
        assert lines == [f"error: --device cuda: this PyTorch build has no CUDA (torch {torch.__version__}); "
                         "use --device cpu or auto"], (name, result.output)
        assert not (tmp_path / "o").exists()  # refused before any work


def test_device_defaults_to_auto(monkeypatch, tmp_path):
    import defocuskit.cli.demo as demo
    import defocuskit.cli.pseudo_coc as pseudo_coc
    import defocuskit.inference.files as infer

    seen = {}
    monkeypatch.setattr(infer, "deblur_files", lambda *a, **kw: seen.setdefault("deblur", kw["device"]) and [])
    monkeypatch.setattr(demo, "run_demo", lambda **kw: seen.setdefault("demo", kw["device"]))
    monkeypatch.setattr(pseudo_coc, "write_pseudo_coc",
                        lambda *a, **kw: seen.setdefault("pseudo-coc", kw["device"]) and {"counts": {"samples": 0}})
    assert _invoke("deblur", "a.png", "--checkpoint", "m", "--out", str(tmp_path)).exit_code == 0
    assert _invoke("demo").exit_code == 0
    (tmp_path / "m.safetensors").write_bytes(b"")  # pseudo-coc checks that both exist before importing torch
    (tmp_path / "s").mkdir()
    assert _invoke("pseudo-coc", "--checkpoint", str(tmp_path / "m.safetensors"), "--shards", str(tmp_path / "s"),
                   "--out", str(tmp_path / "o")).exit_code == 0
    assert seen == {"deblur": "auto", "demo": "auto", "pseudo-coc": "auto"}


# ------------------------------------------------------------------------------------------------ deblur inputs


def test_expand_inputs_folders_and_globs(tmp_path, monkeypatch):
    shots = tmp_path / "shots"
    for name in ("b.JPG", "a.png", "c.tif", ".hidden.png", "notes.txt"):
        (shots / name).parent.mkdir(exist_ok=True)
        (shots / name).write_bytes(b"x")
    (shots / "sub").mkdir()
    (shots / "sub" / "d.png").write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    (tmp_path / "e.png").write_bytes(b"x")
    assert expand_inputs([shots]) == [shots / "a.png", shots / "b.JPG", shots / "c.tif"]  # sorted, images only
    assert expand_inputs([str(shots / "*.png"), str(tmp_path / "**" / "d.png")]) == [shots / "a.png", shots / "sub" / "d.png"]
    monkeypatch.chdir(tmp_path)
    assert expand_inputs(["e.png", "shots/a.png", "shots"]) == [Path("e.png"), Path("shots/a.png"), Path("shots/b.JPG"),
                                                                 Path("shots/c.tif")]  # a file named twice comes once
    with pytest.raises(ImageError, match="^empty: a folder without image files"):
        expand_inputs(["e.png", "empty"])
    with pytest.raises(ImageError, match=r"^shots/\*\.gif: no such file, and no image file matches it"):
        expand_inputs(["shots/*.gif"])
    with pytest.raises(ImageError, match="^nope.png: no such file or folder"):
        expand_inputs(["nope.png"])
    with pytest.raises(ValueError, match=r"2 of 3 inputs name no image.*\n  nope.png: .*\n  empty: ") as exc:
        expand_inputs(["nope.png", "e.png", "empty"])
    assert not isinstance(exc.value, ImageError)


def test_deblur_a_folder_and_a_glob(tmp_path):
    model = _export_tiny_nafnet(tmp_path / "m.safetensors")
    shots = tmp_path / "shots"
    for i, name in enumerate(("a.png", "b.png", "c.jpg")):
        write_image(shots / name, np.full((32, 40, 3), 40 * i, np.uint8))
    written = deblur_files([shots], model, tmp_path / "out", device="cpu", progress=False)
    assert [p.name for p in written] == ["a.png", "b.png", "c.png"]
    result = _invoke("deblur", str(shots / "*.png"), "--checkpoint", str(model), "--out", str(tmp_path / "out2"))
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out2").glob("*.png")) == ["a.png", "b.png"]
    result = _invoke("deblur", str(tmp_path / "missing"), "--checkpoint", str(model), "--out", str(tmp_path / "out3"))
    assert result.exit_code == 2 and "missing: no such file or folder" in result.output


def test_flags_show_no_value_type_in_help():
    for command in ("ingest", "eval", "deblur", "pseudo-coc", "train"):
        result = _invoke(command, "--help")
        assert result.exit_code == 0 and "<bool>" not in result.output, command
    assert "<int>" in _invoke("ingest", "--help").output  # options that take a value still show it


@pytest.mark.parametrize(("args", "message", "code"), [
    (["eval", "--shards", "/nope", "--baseline", "input"], "error: /nope: no such folder: give --shards DIR", 2),
    (["eval", "--baseline", "input"],
     "error: shards: no such folder: give --shards DIR, a folder `defocuskit ingest --out DIR` wrote "
     "(default: ./shards)", 2),
    (["deblur", "a.png", "--checkpoint", "/nope.safetensors", "--out", "o"],
     "error: model file not found: /nope.safetensors", 2),
    (["ingest", "--dpdd", "/nope", "--out", "o"], "error: --dpdd /nope: no such directory", 1),
    (["ingest", "--ebb", "/etc/hostname", "--out", "o"], "error: --ebb /etc/hostname: a file, not a folder", 1),
    (["train", "/nope.yaml"], "error: recipe not found: /nope.yaml is no file", 2),
    (["pseudo-coc", "--checkpoint", "/nope.safetensors", "--shards", "s", "--out", "o"],
     "error: model file not found: /nope.safetensors", 2),
])
def test_a_missing_path_is_reported_before_torch_is_imported(args, message, code, tmp_path):
    import subprocess
    import sys

    script = ("import sys\nfrom defocuskit.cli.app import main\nsys.argv = ['defocuskit', *sys.argv[1:]]\n"
              "try:\n    main()\nexcept SystemExit as exc:\n    print('exit', exc.code, 'torch' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=60,
                          cwd=tmp_path)  # no ./shards there
    printed = proc.stderr.strip()  # every command's error goes to stderr
    assert printed.startswith(message) and proc.stdout.strip().endswith(f"exit {code} False"), (proc.stdout, proc.stderr)


def test_threads_never_oversubscribe_and_follow_the_option(monkeypatch):
    import os
    import subprocess
    import sys

    from defocuskit.io import threads as th

    for var in ("DEFOCUSKIT_THREADS", "OMP_NUM_THREADS", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(th, "available_cores", lambda: 16)
    assert th.resolve_threads() == 16 and th.resolve_threads(workers=4) == 12
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # 4 processes of `accelerate launch` on this machine
    assert th.resolve_threads() == 4 and th.resolve_threads(workers=8) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user's own setting stands
    assert th.resolve_threads() is None
    monkeypatch.setenv("DEFOCUSKIT_THREADS", "3")  # ours wins over it
    assert th.resolve_threads() == 3
    monkeypatch.setenv("DEFOCUSKIT_THREADS", "0")
    with pytest.raises(ValueError, match="DEFOCUSKIT_THREADS='0'"):
        th.resolve_threads()

    script = ("import sys\nfrom defocuskit.cli.app import main\nsys.argv = ['defocuskit', *sys.argv[1:]]\n"
              "try:\n    main()\nexcept SystemExit:\n    pass\nimport torch\nprint(torch.get_num_threads())\n")
    env = {k: v for k, v in os.environ.items() if k not in ("DEFOCUSKIT_THREADS", "OMP_NUM_THREADS", "LOCAL_WORLD_SIZE")}
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    for args, expected in ((["--threads", "1"], 1), ([], cores)):  # default: one process, every core it may use
        proc = subprocess.run([sys.executable, "-c", script, *args, "eval", "--shards", "/nope"], env=env,
                              capture_output=True, text=True, timeout=60)
        assert int(proc.stdout.strip().splitlines()[-1]) == expected, proc.stderr


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--part", "abc", "--part abc: give I/N"),
    ("--render-f-numbers", "2,x", "--render-f-numbers 2,x: give comma-separated numbers"),
    ("--synthetic-f-numbers", "", "--synthetic-f-numbers : give comma-separated numbers"),
])
def test_a_malformed_ingest_option_is_named_alone(option, value, message, tmp_path):
    from typer.testing import CliRunner

    from defocuskit.cli.app import app

    result = CliRunner().invoke(app, ["ingest", "--synthetic", "builtin", "--out", str(tmp_path / "o"), option, value],
                                terminal_width=400)
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "o").exists()



@pytest.mark.parametrize(("value", "said"), [("0", "give 1 or more threads"), ("-1", "give 1 or more threads"),
                                             ("abc", "not a whole number of threads")])
def test_a_bad_defocuskit_threads_is_one_line(value, said, monkeypatch):
    from typer.testing import CliRunner

    from defocuskit.cli.app import app

    monkeypatch.setenv("DEFOCUSKIT_THREADS", value)
    result = CliRunner().invoke(app, ["recipes"])
    assert result.exit_code == 2 and result.output.strip() == f"error: $DEFOCUSKIT_THREADS='{value}': {said}", \
        result.output


@pytest.mark.parametrize("how", ["option", "env"])
def test_more_threads_than_cores_is_one_line(how, monkeypatch):
    """`--threads 1000000` (or $DEFOCUSKIT_THREADS) is refused naming the cores, not passed on to OpenMP."""
    from typer.testing import CliRunner

    from defocuskit.cli.app import app
    from defocuskit.io.threads import available_cores

    monkeypatch.delenv("DEFOCUSKIT_THREADS", raising=False)
    cores = available_cores()
    if how == "env":
        monkeypatch.setenv("DEFOCUSKIT_THREADS", "1000000")
    args = ["--threads", "1000000", "recipes"] if how == "option" else ["recipes"]
    result = CliRunner().invoke(app, args)
    named = "--threads 1000000" if how == "option" else "$DEFOCUSKIT_THREADS='1000000'"
    assert result.exit_code == 2 and result.output.strip() == \
        f"error: {named}: this process may use {cores} cores; give at most {cores} threads", result.output
    import torch

    before = torch.get_num_threads()
    try:  # as many as the cores is accepted (and set in this process: put back after)
        ok = CliRunner().invoke(app, ["--threads", str(cores), "recipes"] if how == "option" else ["recipes"],
                                env={"DEFOCUSKIT_THREADS": str(cores)} if how == "env" else None)
    finally:
        torch.set_num_threads(before)
    assert ok.exit_code == 0, ok.output


def test_a_single_value_option_given_twice_is_refused(tmp_path):
    """`--pairs A --pairs B` ingested only B, exit 0 (the CLI library keeps the last value of a single-value option);
    the same value twice is harmless, options that take several (--baseline) may repeat."""
    import typer.main

    from defocuskit.cli.options import command_of, repeated_option

    run = subprocess.run([sys.executable, "-m", "defocuskit", "ingest", "--pairs", str(tmp_path / "a"), "--pairs",
                          str(tmp_path / "b"), "--out", str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "--pairs given twice" in run.stderr and "Traceback" not in run.stderr, run.stderr
    assert not (tmp_path / "o").exists()
    group = typer.main.get_command(app)
    for argv, said in ((["--threads", "1", "demo", "--preset", "default", "--preset", "misaligned"], "--preset"),
                       (["recipes", "cp", "nafnet-tiny", "x.yaml"], None),
                       (["eval", "--baseline", "input", "--baseline", "wiener", "--report", "r"], None),
                       (["ingest", "--out=o", "--pairs", "a", "--out", "o"], None),
                       (["ingest", "--out=o", "--pairs", "--out", "--out", "p"], "--out")):
        command, rest = command_of(group, argv)
        line = repeated_option(command, rest)
        assert (line is None) if said is None else line.startswith(f"{said} given twice"), (argv, line)
