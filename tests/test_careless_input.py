"""What a careless user types: an empty `--out "$OUT"` (OUT unset), an image file's name as deblur's --out, deblur's
--out the photos' own folder run again, a pipe given as a photo, import-weights' --out under a file or a folder given
as its checkpoint. Each is one line naming what is wrong, before any work, and nothing of the user's is touched."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from defocuskit.inference.files import deblur_files
from defocuskit.io.images import write_image
from tests.test_infer import _export_nafnet

REPO = Path(__file__).resolve().parents[1]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "defocuskit", "--threads", "1", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_an_empty_value_or_argument_is_refused_not_taken_for_the_working_folder(tmp_path: Path) -> None:
    """`--out ""` (what `--out "$OUT"` gives with OUT unset) was the working folder: deblur wrote its image and
    deblur.json there, eval its report, exit 0; an empty INPUTS argument deblurred every image of the working folder.
    Now each is refused in one line naming the option or argument, before any work."""
    model = _export_nafnet(tmp_path / "model.safetensors")
    work = tmp_path / "work"
    work.mkdir()
    write_image(work / "a.jpg", np.full((24, 32, 3), 90, np.uint8))  # its output a.png went beside it
    before = sorted(p.name for p in work.iterdir())
    for args, said in ((["deblur", "a.jpg", "--checkpoint", str(model), "--out", ""], "--out ''"),
                       (["deblur", "a.jpg", "--checkpoint", str(model), "--out="], "--out ''"),
                       (["deblur", "", "--checkpoint", str(model), "--out", str(tmp_path / "o")], "INPUTS ''"),
                       (["recipes", "cp", "nafnet-tiny", ""], "DEST ''")):
        run = _cli(*args, cwd=work)
        assert run.returncode == 2 and run.stderr.strip() == \
            f"error: {said}: an empty {'value' if said.startswith('--') else 'argument'} (an unset shell " \
            "variable?); nothing was done: give one", (args, run.stderr)
        assert sorted(p.name for p in work.iterdir()) == before and not (tmp_path / "o").exists(), args


def test_deblur_out_named_like_an_image_file_is_refused(tmp_path: Path) -> None:
    """`deblur photo.jpg --out photo-sharp.png` made a folder named photo-sharp.png (exit 0), as save_pretrained
    refuses to; now it is refused before any work, and `NAME.png/` (or an existing folder of that name) is a folder."""
    model = _export_nafnet(tmp_path / "model.safetensors")
    write_image(tmp_path / "a.png", np.full((24, 32, 3), 90, np.uint8))
    with pytest.raises(ValueError, match=r"--out .*a-sharp\.png: names a file, but deblur writes a folder"):
        deblur_files([tmp_path / "a.png"], model, tmp_path / "a-sharp.png", progress=False)
    assert not (tmp_path / "a-sharp.png").exists()
    written = deblur_files([tmp_path / "a.png"], model, f"{tmp_path / 'a-sharp.png'}/", progress=False)
    assert written == [tmp_path / "a-sharp.png" / "a.png"]
    assert deblur_files([tmp_path / "a.png"], model, tmp_path / "a-sharp.png", progress=False) == written


def test_deblur_into_the_photos_own_folder_runs_again(tmp_path: Path, monkeypatch) -> None:
    """`deblur photos/ --out photos/` wrote photos/a.png for photos/a.jpg; the same command again (after a kill, as
    the README says it finishes one) took a.png for a photo and stopped: 'a.png and a.jpg would both be written as
    a.png; rename one'. A folder or pattern no longer takes the outputs --out's deblur.json lists."""
    from defocuskit.inference import files

    model = _export_nafnet(tmp_path / "model.safetensors")
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a", "b"):
        write_image(photos / f"{name}.jpg", np.full((24, 32, 3), 90, np.uint8))
    real = files.write_output
    calls = []

    def killed_after_one(dest, data, listed):
        if calls:
            raise KeyboardInterrupt  # the run stops after its first image, as a kill would
        calls.append(dest)
        real(dest, data, listed)

    monkeypatch.setattr(files, "write_output", killed_after_one)
    with pytest.raises(KeyboardInterrupt):
        deblur_files([photos], model, photos, progress=False)
    monkeypatch.setattr(files, "write_output", real)
    assert sorted(p.name for p in photos.iterdir() if not p.name.startswith(".")) == \
        ["a.jpg", "a.png", "b.jpg", "deblur.json"]
    written = deblur_files([photos], model, photos, progress=False)  # the same command finishes it
    assert sorted(p.name for p in written) == ["a.png", "b.png"]
    with pytest.raises(ValueError, match=r"\*\.png: no such file, and no image file matches it as a pattern but the "
                                         r"outputs of an earlier deblur into --out"):
        deblur_files([str(photos / "*.png")], model, photos, progress=False)


def test_deblur_names_a_pipe_given_as_a_photo_as_one(tmp_path: Path) -> None:
    """A pipe (or /dev/null) given as an input was 'no such file or folder'; it is there, and is named as what it
    is."""
    model = _export_nafnet(tmp_path / "model.safetensors")
    os.mkfifo(tmp_path / "f.png")
    with pytest.raises(ValueError, match=r"f\.png: not a regular file or folder \(a device, pipe or socket\)"):
        deblur_files([tmp_path / "f.png"], model, tmp_path / "o", progress=False)


def test_import_weights_out_under_a_file_and_a_folder_as_checkpoint_are_named(tmp_path: Path) -> None:
    """--out afile/m.safetensors (afile a file) was converted in full, then refused as '--out ... exists (it appeared
    while the checkpoint was converted)'; a folder given as the checkpoint was 'fold: checkpoint not found: fold'."""
    from defocuskit.inference.release import import_release

    user = tmp_path / "afile"
    user.write_text("mine\n")
    checkpoint = tmp_path / "release.pth"
    checkpoint.write_bytes(b"not read: --out is refused first")
    with pytest.raises(ValueError, match=rf"^--out {user}/m\.safetensors: {user} is a file, not a folder; give "):
        import_release("jdrl", checkpoint, user / "m.safetensors")
    with pytest.raises(ValueError, match=rf"^--out {user}/x/m\.safetensors: {user} is a file, not a folder"):
        import_release("jdrl", checkpoint, user / "x" / "m.safetensors")
    assert user.read_text() == "mine\n"
    (tmp_path / "ckpt").mkdir()
    with pytest.raises(ValueError, match=r"ckpt: a folder, not a checkpoint file; give the \.pth file in it$"):
        import_release("jdrl", tmp_path / "ckpt", tmp_path / "m.safetensors")
    with pytest.raises(ValueError, match=r"nope\.pth: checkpoint not found$"):
        import_release("jdrl", tmp_path / "nope.pth", tmp_path / "m.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "ckpt", "release.pth"]


def test_demo_into_a_project_folder_leaves_its_training_run_and_report_alone(tmp_path: Path) -> None:
    """`demo --out .` in a project whose `train nafnet` wrote runs/nafnet (the recipe's own output_dir) removed that
    run's checkpoints and model and trained the demo's NAFNet there, exit 0; so with `eval`'s default report/. Now a
    training run or a report that no earlier demo into --out wrote (its demo.json lists the runs it writes as it
    starts) stops the demo before any work, naming it."""
    import io

    from rich.console import Console

    from defocuskit.cli.demo import run_demo
    from defocuskit.data.ingest import run_ingest
    from defocuskit.data.sample import IngestOptions
    from defocuskit.eval.config import EvalConfig
    from defocuskit.eval.evaluate import evaluate

    run = tmp_path / "runs" / "nafnet"
    run.mkdir(parents=True)
    _export_nafnet(run / "model.safetensors")  # the user's run: its export and metrics
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 0.5}\n')

    def files() -> dict[str, bytes]:
        return {str(p.relative_to(tmp_path)): p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()}

    before = files()
    quiet = Console(file=io.StringIO())
    with pytest.raises(ValueError, match=rf"^{run}: a training run that no earlier demo into {tmp_path} wrote \(its "
                                         r"demo.json does not list it\)"):
        run_demo(tmp_path, steps_scale=0.002, size=32, workers=0, limit=1, console=quiet)
    assert files() == before and sorted(p.name for p in tmp_path.iterdir()) == ["runs"]
    run.rename(tmp_path / "nafnet-of-the-user")
    (tmp_path / "runs").rmdir()
    shards = tmp_path / "nafnet-of-the-user" / "shards"
    run_ingest({"synthetic": Path("builtin")}, IngestOptions(out=str(shards), workers=0, synthetic_size=32))
    evaluate(shards, [], ["input"], EvalConfig(split="test", limit=1, report_dir=tmp_path / "report"))
    before = files()  # report/ of `eval`'s default --report
    with pytest.raises(ValueError, match=rf"^{tmp_path / 'report'}: written by another command, not by a demo"):
        run_demo(tmp_path, steps_scale=0.002, size=32, workers=0, limit=1, console=quiet)
    assert files() == before


def test_python_calls_refuse_an_empty_path_and_a_lone_name(tmp_path: Path, monkeypatch) -> None:
    """The CLI refuses empty values; called from Python, deblur_files([""]) deblurred the working folder's photos,
    out="" and evaluate's report_dir="" wrote there (exit 0), one name given alone for the list was read letter by
    letter ('20 of 21 inputs name no image'; 'model file not found: / is a folder'), f_number='2' was a comparison's
    TypeError. Each is now one error naming the argument, before any work."""
    from defocuskit.data.ingest import run_ingest
    from defocuskit.data.sample import IngestOptions
    from defocuskit.eval.config import EvalConfig
    from defocuskit.eval.evaluate import evaluate

    model = _export_nafnet(tmp_path / "model.safetensors")
    shards = tmp_path / "shards"
    run_ingest({"synthetic": Path("builtin")}, IngestOptions(out=str(shards), workers=0, synthetic_size=32))
    work = tmp_path / "work"
    work.mkdir()
    write_image(work / "a.png", np.full((24, 32, 3), 90, np.uint8))
    monkeypatch.chdir(work)
    for inputs, out, error, said in (([""], tmp_path / "o", ValueError, "inputs=: an empty name"),
                                     ([work / "a.png"], "", ValueError, "out=: an empty name"),
                                     ([work / "a.png"], None, TypeError, "out=: the output folder"),
                                     (str(work / "a.png"), tmp_path / "o", TypeError, "inputs=: a list of image")):
        with pytest.raises(error, match=f"^{said}"):
            deblur_files(inputs, model, out, progress=False)
    with pytest.raises(TypeError, match="^f_number= must be a number"):
        deblur_files([work / "a.png"], model, tmp_path / "o", f_number="2", progress=False)
    with pytest.raises(ValueError, match="^report_dir=: an empty name"):
        evaluate(shards, [model], [], EvalConfig(limit=1, report_dir=""))
    with pytest.raises(TypeError, match=r"^checkpoints=: a list of model files, got one str"):
        evaluate(shards, str(model), [], EvalConfig(limit=1, report_dir=tmp_path / "r"))
    with pytest.raises(ValueError, match="^shards=: an empty name"):
        evaluate("", [model], [], EvalConfig(limit=1, report_dir=tmp_path / "r"))
    assert sorted(p.name for p in work.iterdir()) == ["a.png"] and not (tmp_path / "o").exists()
