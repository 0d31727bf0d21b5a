"""Recipes ship inside the package: found by name from any folder, listed, copied to edit; from a built wheel too."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from defocuskit.cli.app import app
from defocuskit.config.recipe import PACKAGED_RECIPES, copy_recipe, describe_recipe, find_recipe, packaged_recipe_names
from defocuskit.config.typed import RecipeError
from defocuskit.methods.recipes import load_recipe

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def test_recipes_live_in_the_package_and_the_root_folder_links_to_them():
    assert PACKAGED_RECIPES == REPO / "defocuskit" / "recipes"
    link = REPO / "recipes"
    assert link.is_symlink() and os.readlink(link) == os.path.join("defocuskit", "recipes")  # relative
    names = packaged_recipe_names()
    assert {"nafnet-tiny", "hidd", "rddm", "defocus-map-tiny", "jdrl"} <= set(names)
    assert sorted(p.stem for p in link.glob("*.yaml")) == names


def test_find_recipe_by_name_from_another_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    packaged = PACKAGED_RECIPES / "nafnet-tiny.yaml"
    for spelling in ("nafnet-tiny", "nafnet-tiny.yaml", "recipes/nafnet-tiny.yaml", Path("recipes/nafnet-tiny.yaml")):
        assert find_recipe(spelling) == packaged
    assert load_recipe("hidd-tiny", ["train.max_steps=3"]).train.max_steps == 3
    with pytest.raises(RecipeError, match=r"recipe not found: nafnet-small .*packaged: cyclegan, .*nafnet-tiny"):
        find_recipe("nafnet-small")
    with pytest.raises(RecipeError, match="recipe not found: configs/nafnet-tiny.yaml"):  # another folder: no fallback
        find_recipe("configs/nafnet-tiny.yaml")
    (tmp_path / "recipes").mkdir()
    with pytest.raises(RecipeError, match="recipes: a folder, not a recipe file"):
        find_recipe("recipes")
    (tmp_path / "nafnet-tiny.yaml").write_text("method: nafnet\noutput_dir: runs/mine\n")
    assert find_recipe("nafnet-tiny.yaml") == Path("nafnet-tiny.yaml")  # an existing file wins over the name
    assert load_recipe("nafnet-tiny.yaml").output_dir == "runs/mine"


def test_describe_recipe_reads_the_header(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("# accelerate launch -m defocuskit train recipes/x.yaml\n#\n# A tiny NAFNet for\n"
                    "# smoke tests.\n# Launch:\n#   python -m defocuskit train x\nmethod: nafnet\n")
    assert describe_recipe(path) == {"name": "x", "method": "nafnet", "description": "A tiny NAFNet for ..."}
    info = describe_recipe(PACKAGED_RECIPES / "nafnet-tiny.yaml")
    assert info["method"] == "nafnet" and info["description"].startswith("CPU smoke test of the NAFNet baseline")


def test_cli_lists_and_copies_recipes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for args in (["recipes"], ["recipes", "ls"]):
        result = runner.invoke(app, args, terminal_width=200)
        assert result.exit_code == 0, result.output
        rows = {line.split("│")[1].strip(): line.split("│")[2].strip() for line in result.output.splitlines()
                if line.count("│") >= 3}
        assert {k: v for k, v in rows.items() if k not in ("", "name")} == {  # "": a wrapped description
            n: describe_recipe(PACKAGED_RECIPES / f"{n}.yaml")["method"] for n in packaged_recipe_names()}
    result = runner.invoke(app, ["recipes", "cp", "nafnet-tiny", "."])
    assert result.exit_code == 0 and (tmp_path / "nafnet-tiny.yaml").read_text() == (
        PACKAGED_RECIPES / "nafnet-tiny.yaml").read_text()
    result = runner.invoke(app, ["recipes", "cp", "nafnet-tiny", "."])
    assert result.exit_code == 2 and "--force" in result.output
    (tmp_path / "nafnet-tiny.yaml").write_text("edited")
    assert runner.invoke(app, ["recipes", "cp", "nafnet-tiny", ".", "--force"]).exit_code == 0
    assert (tmp_path / "nafnet-tiny.yaml").read_text().startswith("# accelerate launch")
    result = runner.invoke(app, ["recipes", "cp", "nope", "."])
    assert result.exit_code == 2 and "no packaged recipe named 'nope'" in result.output and "hidd-tiny" in result.output
    assert copy_recipe("hidd.yaml", "mine/my-hidd.yaml") == Path("mine/my-hidd.yaml")  # a file name
    assert copy_recipe("hidd", "configs") == Path("configs/hidd.yaml")  # no suffix: a folder, made
    assert copy_recipe("hidd", "more/") == Path("more/hidd.yaml")
    assert copy_recipe("hidd", "my.recipes/") == Path("my.recipes/hidd.yaml")  # a slash: a folder, dot or not
    result = runner.invoke(app, ["recipes", "cp", "nafnet-tiny", "v1.2/"])
    assert result.exit_code == 0 and (tmp_path / "v1.2" / "nafnet-tiny.yaml").is_file(), result.output
    (tmp_path / "notes.txt").write_text("the user's")
    result = runner.invoke(app, ["recipes", "cp", "nafnet-tiny", "notes.txt/", "--force"])  # a folder was asked for
    assert result.exit_code != 0 and (tmp_path / "notes.txt").read_text() == "the user's"
    (tmp_path / "elsewhere.yaml").write_text("the user's")
    for link, to in (("dangling.yaml", "nothing-here.yaml"), ("link.yaml", "elsewhere.yaml")):
        (tmp_path / link).symlink_to(to)
        result = runner.invoke(app, ["recipes", "cp", "nafnet-tiny", link])
        assert result.exit_code == 2 and f"{link} is a link" in result.output, result.output
        assert (tmp_path / link).is_symlink() and not (tmp_path / "nothing-here.yaml").exists()
    assert runner.invoke(app, ["recipes", "cp", "nafnet-tiny", "link.yaml", "--force"]).exit_code == 0
    assert not (tmp_path / "link.yaml").is_symlink() and (tmp_path / "elsewhere.yaml").read_text() == "the user's"


def test_recipes_cp_never_writes_over_a_file_that_appears_after_its_look(tmp_path, monkeypatch):
    """The destination was looked at once, before the copy: a file put there meanwhile was written over without
    --force, exit 0; now it is kept and named."""
    from defocuskit.config.typed import RecipeError

    dest, real = tmp_path / "mine.yaml", Path.read_bytes

    def read_then_a_file_appears(self):
        if self.name == "nafnet-tiny.yaml" and not dest.exists():
            dest.write_text("my own recipe\n")
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", read_then_a_file_appears)
    with pytest.raises(RecipeError, match=r"mine\.yaml exists: give --force to overwrite it"):
        copy_recipe("nafnet-tiny", dest)
    assert dest.read_text() == "my own recipe\n" and [p.name for p in tmp_path.iterdir()] == ["mine.yaml"]
    assert copy_recipe("nafnet-tiny", dest, force=True) == dest and dest.read_text() != "my own recipe\n"


def test_train_dry_run_by_name_from_another_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["train", "nafnet-tiny", "train.max_steps=7", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "method: nafnet" in result.output and "max_steps: 7" in result.output
    result = runner.invoke(app, ["train", "nafnet-small", "--dry-run"])
    assert result.exit_code == 2 and "recipe not found: nafnet-small" in result.output


def test_demo_reads_its_recipes_from_the_package(tmp_path, monkeypatch):
    from defocuskit.cli.demo import PRESETS, recipe_path

    monkeypatch.chdir(tmp_path)
    (tmp_path / "nafnet-tiny.yaml").write_text("method: nafnet\n")  # never shadows the demo's recipe
    for models in PRESETS.values():
        for dm in models:
            path = recipe_path(dm.recipe)
            assert path.parent == PACKAGED_RECIPES and path.is_file()
            assert load_recipe(path).method == load_recipe(REPO / "recipes" / dm.recipe).method


def _build_wheel(tmp: Path) -> Path:
    """A wheel of a copy of the working tree (the repository itself gets no build/ folder)."""
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "defocuskit", src / "defocuskit", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                    "-w", str(tmp / "dist"), str(src)], check=True, capture_output=True, text=True, timeout=300)
    (wheel,) = (tmp / "dist").glob("defocuskit-*.whl")
    return wheel


def test_installed_wheel_finds_its_recipes_outside_the_repository(tmp_path):
    wheel = _build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    assert sorted(n for n in names if n.startswith("defocuskit/recipes/")) == [
        f"defocuskit/recipes/{p.name}" for p in sorted(PACKAGED_RECIPES.glob("*.yaml"))]
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(site),
                    str(wheel)], check=True, capture_output=True, text=True, timeout=300)
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}

    def run(*args: str) -> str:
        proc = subprocess.run([sys.executable, *args], cwd=work, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout

    assert Path(run("-c", "import defocuskit; print(defocuskit.__file__)").strip()) == site / "defocuskit" / "__init__.py"
    listing = run("-m", "defocuskit", "recipes")
    assert str(site / "defocuskit" / "recipes") in listing
    assert all(f"│ {name} " in listing for name in packaged_recipe_names())
    run("-m", "defocuskit", "recipes", "cp", "nafnet-tiny", ".")
    assert (work / "nafnet-tiny.yaml").read_text() == (PACKAGED_RECIPES / "nafnet-tiny.yaml").read_text()
    (work / "nafnet-tiny.yaml").unlink()  # the dry run below must find the packaged recipe, not the copy
    dry = run("-m", "defocuskit", "train", "nafnet-tiny", "--dry-run")
    assert "method: nafnet" in dry and "output_dir: runs/nafnet-tiny" in dry
    assert "# nafnet: parameters" in dry
    demo = run("-c", "from defocuskit.cli.demo import PRESETS, recipe_path\n"
                     "print(sorted({str(recipe_path(m.recipe)) for ms in PRESETS.values() for m in ms}))")
    from defocuskit.cli.demo import PRESETS

    assert demo.strip() == str(sorted({str(site / "defocuskit" / "recipes" / m.recipe)
                                       for ms in PRESETS.values() for m in ms}))


def test_a_recipe_that_is_not_yaml_is_one_line_naming_where(tmp_path):
    from defocuskit.config.typed import RecipeError
    from defocuskit.methods.recipes import load_recipe

    bad = tmp_path / "bad.yaml"
    bad.write_text("method: nafnet\ntrain:\n  max_steps: [1\n  x: 2\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(bad)
    assert str(info.value) == f"{bad}: not valid YAML: line 4, column 4: expected ',' or ']', but got ':'"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_recipes_cp_force_never_replaces_a_pipe_and_a_path_it_cannot_make_is_one_line(tmp_path):
    """--force replaced a named pipe (as root, /dev/null alike) with the copy; a DEST below a file was a traceback."""
    import stat

    pipe = tmp_path / "pipe.yaml"
    os.mkfifo(pipe)
    with pytest.raises(RecipeError, match=r"pipe\.yaml is not a regular file"):
        copy_recipe("nafnet-tiny", pipe, force=True)
    assert stat.S_ISFIFO(os.stat(pipe).st_mode)
    (tmp_path / "notes.txt").write_text("mine\n")
    for dest, said in ((tmp_path / "notes.txt" / "sub" / "x.yaml", "a part of this path is a file, not a folder"),
                       (Path("/proc/defocuskit-none/x.yaml"), "no such file or folder, and none can be made there")):
        run = subprocess.run([sys.executable, "-m", "defocuskit", "recipes", "cp", "nafnet-tiny", str(dest)],
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 1 and said in run.stderr and "Traceback" not in run.stderr, run.stderr
    assert (tmp_path / "notes.txt").read_text() == "mine\n"
