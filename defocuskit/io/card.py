"""The model card, README.md of a Hub model folder: YAML front matter the Hub reads (library, license, the
training datasets, a `model-index` with the eval results), then what the model is, how to load it, how
inference runs it, its data, license, eval table and recipe.

The card names no local path: datasets by name, folders and files by their base name (`public`)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import yaml

TASK = {"task_type": "image-to-image", "task_name": "Defocus deblurring"}
METRICS = (("psnr", "PSNR", 2), ("ssim", "SSIM", 4), ("lpips", "LPIPS", 4))  # model-index: key, name, digits
_ABSOLUTE = re.compile(r"(?<![\w.:/~\\-])(~?/[^\s`'\"()|,;\]]+|[A-Za-z]:\\[^\s`'\"()|,;\]]+)")


def public(text: str) -> str:
    """`text` with every absolute path (/..., ~/..., C:\\...) cut to its base name (URLs are kept)."""
    return _ABSOLUTE.sub(lambda m: re.split(r"[\\/]", m.group(1).rstrip("/\\"))[-1] or m.group(1), text)


def _public_data(value: Any) -> Any:
    if isinstance(value, str):
        return public(value)
    if isinstance(value, dict):
        return {k: _public_data(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_public_data(v) for v in value]
    return value


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _fmt(value: Any, digits: int, signed: bool = False) -> str:
    if not _finite(value):
        return "-"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _f_label(f_number: float | None) -> str:
    return "all" if f_number is None else f"f/{f_number:g}"


def eval_dataset(ev: dict[str, Any]) -> tuple[str, str]:
    """(name, Hub-style type) of the data an eval report scored: its datasets' names, else the shard folder's."""
    names = ev.get("datasets") or [public(str(ev.get("shards") or "shards")).rstrip("/").rsplit("/", 1)[-1]]
    ids = [re.sub(r"[^a-z0-9]+", "-", n.lower()).strip("-") or "shards" for n in names]
    return ", ".join(names), "+".join(ids)


def eval_results(ev: dict[str, Any] | None) -> list[Any]:
    """huggingface_hub EvalResults of an eval record (the model-index): PSNR, SSIM and LPIPS over all images,
    then per f-number."""
    if not ev or not ev.get("rows"):
        return []
    from huggingface_hub import EvalResult

    name, kind = eval_dataset(ev)
    rows = sorted(ev["rows"], key=lambda r: r.get("f_number") is not None)  # the pooled row first (a stable sort)
    scoring = [str(t) for t in ev.get("scoring") or []]  # e.g. "detail band 16 px": not the plain PSNR
    results = []
    variant = ev.get("ssim_variant")  # eval --ssim gaussian11 reads higher than the default uniform7's "SSIM"
    own = {"ssim": [f"{variant} window: eval --ssim {variant}"] if variant not in (None, "uniform7") else []}
    for row in rows:
        terms = ([] if row.get("f_number") is None else [_f_label(row["f_number"])]) + scoring
        for key, label, digits in METRICS:
            if _finite(row.get(key)):
                named = terms + own.get(key, [])
                results.append(EvalResult(**TASK, dataset_type=kind, dataset_name=name, dataset_split=ev.get("split"),
                                          metric_type=key, metric_value=round(float(row[key]), digits),
                                          metric_name=label + (f" ({'; '.join(named)})" if named else "")))
    return results


def front_matter(config: dict[str, Any], name: str) -> str:
    """The card's YAML front matter (between the --- lines): library, license, datasets, tags, model-index."""
    from huggingface_hub import ModelCardData

    results = eval_results(config.get("eval"))
    data = ModelCardData(library_name="defocuskit", license=config.get("license") or "other",
                         datasets=list(config.get("datasets") or []) or None,
                         tags=["defocus-deblurring", "image-to-image", config["method"]], pipeline_tag="image-to-image",
                         model_name=name.rsplit("/", 1)[-1] if results else None, eval_results=results or None)
    return data.to_yaml()


def model_card(config: dict[str, Any], recipe_yaml: str, repo_id: str | None = None,
               description: str | None = None) -> str:
    """The README.md model card of a Hub folder's config.json `config` (method, sampler, inference, datasets,
    license, eval, recipe); its example loads `repo_id`; `description`: what the method is, one line."""
    method, recipe = config["method"], config["recipe"]
    name = repo_id or "OWNER/NAME"
    is_map = config.get("output") == "defocus_map"
    call = "coc = model.coc_map(image)                      # float32 (H, W): CoC diameter in pixels" if is_map else \
        "sharp = model.deblur(image)                    # same type, dtype and shape as the input"
    data = recipe.get("data") or {}
    train = data.get("train")
    shards = config.get("train_shards") or [public(str(s)) for s in (train if isinstance(train, list) else [train])]
    shown = dict(recipe, data=dict(data, train=shards if isinstance(train, list) else shards[0]))
    inference = config.get("inference") or {}
    per = "pass" if inference.get("mode") == "whole" else "tile"
    datasets = config.get("datasets") or []
    lines = [
        "---", front_matter(config, repo_id or f"defocuskit-{method}").rstrip(), "---", "",
        f"# defocuskit `{method}` model", "",
        _provenance(config, description or f"a {method!r} model"), "",
        "## Use", "",
        "```python",
        "import defocuskit",
        "from defocuskit.io.images import read_image",
        "",
        f"model = defocuskit.load(\"{name}\")   # or a local folder / model.safetensors file",
        "image = read_image(\"photo.png\")               # RGB uint8 / uint16; float in [0, 1], (B)CHW tensors too",
        call,
        "```",
        "",
        f"Input: {'one channel (colour images channel by channel)' if data.get('channels') == 1 else 'RGB'}, any size. "
        f"Inference: {inference.get('description') or 'see defocuskit.inference.tiling'} (`tile=` or `--tile` "
        f"changes it). Sampler: `{json.dumps(config.get('sampler') or {})}`, {config.get('nfe')} network "
        f"evaluation(s) per {per}."
        + (" This sampler needs a circle-of-confusion map: `model.deblur(image, coc=map_or_defocus_map_model)` or "
           "`f_number=N`." if "coc" in (config.get("needs") or []) else "")
        + _gate_sentence((recipe.get("inference") or {}).get("focus_gate"))
        + _work_side_sentence((recipe.get("inference") or {}).get("work_side") if not is_map else None)
        + _bound_sentence((recipe.get("inference") or {}).get("coc_bound") if is_map else None),
        "",
        "## Training data", "",
        (("As the release was trained (its recipe below, as published; not trained by defocuskit): "
          if (config.get("origin") or {}).get("kind") == "release" else "")
         + f"{', '.join(datasets) or 'Not recorded'} (`data.train`: " + ", ".join(f"`{s}`" for s in shards)
         + f"); {data.get('channels')} channel(s), {data.get('image_size')} px crops, "
         + _steps_text(config.get("train_steps"), (recipe.get("train") or {}).get("max_steps"),
                       (config.get("origin") or {}).get("kind") == "release") + "."),
        "",
        "## License", "",
        (f"`{config['license']}` (the recipe's `license`)." if config.get("license") else
         "Not stated: the recipe sets no `license`, so the front matter says `other`; ask the model's author, and "
         "mind the terms of the training data."),
        "",
    ]
    lines += _eval_section(config.get("eval"), (recipe.get("inference") or {}).get("focus_gate"))
    lines += ["## Recipe", "", "Shard folders and other paths by their base name (recipe.yaml beside this card: the "
              "recipe as resolved).", "", "```yaml",
              yaml.safe_dump(_public_data(shown), sort_keys=False, default_flow_style=None).rstrip(), "```", ""]
    return public("\n".join(lines))


def _part_terms(ev: dict[str, Any]) -> list[str]:
    """Where the report scored part of the split: its first N pairs alone (eval --limit), pairs not scored."""
    limit, skipped = ev.get("limit"), ev.get("skipped")
    terms = [f"its first {limit} pair{'s' * (limit != 1)} alone: eval --limit {limit}"] if _finite(limit) and limit \
        else []
    if _finite(skipped) and skipped:
        terms.append(f"{skipped} pair(s) of it not scored: report.json `skipped`")
    return terms


def _steps_text(trained: Any, max_steps: Any, release: bool) -> str:
    """How long the model trained: the steps its file records (an export, train.keep_best's best step), else the
    recipe's train.max_steps said as such (a run stopped by train.max_minutes trained fewer)."""
    if isinstance(trained, int) and not isinstance(trained, bool):
        recipe = f" (the recipe's `train.max_steps`: {max_steps})" if trained != max_steps else ""
        return f"{trained} step{'s' * (trained != 1)}{recipe}"
    if release:
        return f"{max_steps} steps"
    return f"up to {max_steps} steps (the recipe's `train.max_steps`; the model file does not record the steps trained)"


def _run_terms(settings: dict[str, Any], own_gate: Any = None, gate_recorded: bool = False) -> str:
    """The eval run's focus gate (on, with its settings, or off where the report says so) and self-ensemble, where it
    used one ("; ..."), else ""; `own_gate`: the recipe's inference.focus_gate, the gate the run did without."""
    gate, ensemble = settings.get("focus_gate"), settings.get("ensemble")
    text = ""
    if isinstance(gate, dict) and _finite(gate.get("full_px")):
        origin = "its recipe's" if gate.get("from") == "recipe" else "eval --focus-gate"
        smooth = gate.get("smooth_px")
        text += (f"; focus gate {gate['full_px']:g} px ({origin}" + (f"; the change's low-pass of {smooth:g} px kept"
                                                                    if _finite(smooth) else "") + ")")
    elif gate_recorded and gate is None:
        text += "; no focus gate: the model's raw output" + (
            f" (its recipe's default gate, `inference.focus_gate: {own_gate:g}`, turned off by eval --focus-gate 0)"
            if _finite(own_gate) else "")
    if isinstance(ensemble, dict) and ensemble.get("size"):
        text += f"; self-ensemble of {ensemble['size']} (eval --ensemble)"
    work = settings.get("work_side")
    if isinstance(work, dict) and isinstance(work.get("work_px"), (int, str)) and not isinstance(work["work_px"], bool):
        origin = "its recipe's" if work.get("from") == "recipe" else "eval --work-side"
        text += f"; deblurred at work side {work['work_px']} ({origin}), scored at the images' own size"
    return text


def _work_side_sentence(work_side: Any) -> str:
    """What the card says of the model's own work side (its recipe's inference.work_side), or nothing."""
    if not (work_side in ("auto", "trained") or type(work_side) is int):
        return ""
    where = {"auto": "where its blur reads as wide as the training inputs' did",
             "trained": "at its training images' long side"}.get(work_side, f"at {work_side} px on its long side")
    return (f" Its recipe deblurs each image {where} by default (`inference.work_side: {work_side}`), the change "
            "upsampled onto the image at its own size; `model.deblur(image, work_side=0)` deblurs at the image's "
            "own size.")


def _gate_sentence(focus_gate: float | None) -> str:
    """What the card says of the model's own focus gate (its recipe's inference.focus_gate), or nothing."""
    if not focus_gate:
        return ""
    return (f" Its recipe gates the output by default (`inference.focus_gate: {focus_gate:g}`): the change is weighed "
            f"per pixel by min(1, |CoC| / {focus_gate:g} px) of a circle-of-confusion map (the `coc=` given, else the "
            "training-free edge estimate), so what the map reads as in focus keeps only the change's low-pass; "
            "`model.deblur(image, focus_gate=0)` gives the raw output.")


def _bound_sentence(coc_bound: Any) -> str:
    """What the card says of a defocus-map model's f-number bound (its recipe's inference.coc_bound), or nothing."""
    if not isinstance(coc_bound, (int, float)):
        return ""
    return (f" Its maps are bounded by the f-number (`inference.coc_bound: {coc_bound:g}`, the largest CoC x f-number "
            f"of its training data): `model.coc_map(image, f_number=N)` reads at most {coc_bound:g} x the long side / "
            "N pixels (the thin lens: a scene's CoC at f/N is its CoC at f/1 over N).")


def _provenance(config: dict[str, Any], description: str) -> str:
    """The card's first line: what the model is and where its weights come from (config["origin"])."""
    method, origin = config["method"], config.get("origin") or {}
    if origin.get("kind") == "release":
        return (f"A `{method}` model for single-image defocus deblurring: {description}. The weights are the authors' "
                f"release ({origin.get('code')}, checkpoint `{origin.get('checkpoint')}`, sha256 "
                f"`{origin.get('sha256')}`), imported with `defocuskit import-weights`; defocuskit did not train them.")
    line = (f"A `{method}` model for single-image defocus deblurring, trained with "
            f"defocuskit {config.get('exported_with') or ''}: {description}.")
    if origin.get("init_from"):
        line += (f" Fine-tuned from `{Path(str(origin['init_from'])).name}` (sha256 "
                 f"`{origin.get('init_from_sha256')}`).")
    return line


def _eval_section(ev: dict[str, Any] | None, own_gate: Any = None) -> list[str]:
    """The card's eval section: how the report scored (its protocol, the part of the split, the run's settings) and
    this model's rows; `own_gate`: the recipe's inference.focus_gate."""
    if not ev:
        return ["## Evaluation", "", ("No evaluation recorded (`save_pretrained(..., report=\"report/report.json\")` "
                                      "adds the table from `defocuskit eval`)."), ""]
    dataset, _ = eval_dataset(ev)
    lines = ["## Evaluation", "",
             (f"`defocuskit eval` on {dataset}, split `{ev.get('split')}` ("
              + "; ".join([*_part_terms(ev), f"checkpoint `{ev.get('label')}`"]) + "); "
              f"grouping: {ev.get('grouping')}. PSNR: {ev.get('psnr')}. SSIM: {ev.get('ssim')}."
              + (f" Scores: {'; '.join(map(str, ev['scoring']))}, not the default protocol's (every pixel of each "
                 "output as produced, at the sources' bit depth)." if ev.get("scoring") else "")),
             "",
             "| f/N | n | PSNR | input PSNR | gain | SSIM | input SSIM | gain |",
             "|---|---|---|---|---|---|---|---|"]
    for r in ev["rows"]:
        cells = [_f_label(r.get("f_number")), str(r.get("n")), _fmt(r.get("psnr"), 2), _fmt(r.get("psnr_input"), 2),
                 _fmt(r.get("psnr_gain"), 2, True), _fmt(r.get("ssim"), 4), _fmt(r.get("ssim_input"), 4),
                 _fmt(r.get("ssim_gain"), 4, True)]
        lines.append("| " + " | ".join(cells) + " |")
    settings = ev.get("settings") or {}
    coc = settings.get("coc") or {}
    lines += ["", (f"Settings of that run: sampler `{json.dumps(settings.get('sampler'))}`, "
                   f"NFE {settings.get('nfe')}, seed {settings.get('seed')}"
                   + (f"; inference: {settings['inference']}" if settings.get("inference") else "")
                   + _run_terms(settings, own_gate, bool(ev.get("gate_recorded")))
                   + (f"; CoC map: {coc.get('description')}." if coc.get("description") else ".")), ""]
    return lines
