"""A DeblurModel's Hub layout: `save_pretrained` writes it into a folder (model file, config.json, recipe.yaml, model
card), `push_to_hub` uploads it; `HubLayout` is the part of DeblurModel (api/__init__) that does both."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import defocuskit
from defocuskit.api.checks import check_license, check_token
from defocuskit.config.recipe import recipe_to_yaml
from defocuskit.inference.tiling import default_inference
from defocuskit.io import hub
from defocuskit.io.hub_eval import eval_from_report
from defocuskit.io.paths import path_argument


class HubLayout:
    """save_pretrained and push_to_hub of a DeblurModel, which sets what they read: its model file (`path`, its
    state when loaded), method, recipe, network and the config.json it was loaded with (`_saved`)."""

    path: Path
    _state: Any
    _saved: dict[str, Any]
    _recipe: Any
    _method: Any
    _net: Any

    def _config(self, ev: dict[str, Any] | None, license: str | None, sha256: str) -> dict[str, Any]:
        from defocuskit.data import names
        from defocuskit.io.modelfile import (
            read_metadata,
            recorded_datasets,
            trained_steps,
            weights_origin,
        )

        train = self._recipe.data.train if isinstance(self._recipe.data.train, list) else [self._recipe.data.train]

        meta = read_metadata(self.path)
        info = self.sampler_info()
        return {
            "format": hub.HUB_FORMAT, "library_name": "defocuskit", "model_file": hub.MODEL_FILE,
            "model_format": meta.get("format"), "sha256": sha256, "train_steps": trained_steps(meta),
            "method": self.method, "output": self.output, "channels": self.channels,
            "image_size": int(self._recipe.data.image_size),
            "exported_with": meta.get("defocuskit_version"), "defocuskit_version": defocuskit.__version__,
            "sampler": info["settings"], "nfe": info["nfe"], "needs": info["needs"], "timesteps": info.get("timesteps"),
            "inference": default_inference(self._method, self._recipe, self._net), "license": license,
            "datasets": self._saved.get("datasets") or recorded_datasets(meta) or names.trained_on(train),
            "train_shards": [names.spec_name(s) for s in train],
            "recipe": self.recipe, "eval": ev, "origin": weights_origin(meta),
        }

    def _write(self, folder: str | Path, report: str | Path | None, report_label: str | None,
               repo_id: str | None, license: str | None) -> Path:
        from defocuskit.data.names import source_name

        if report is None and report_label is not None:
            raise ValueError("report_label= names a checkpoint of a report: give report= too")
        check_license(license)
        if hub.file_state(self.path) != self._state:  # the folder would hold that file, not this model
            raise ValueError(f"{self.path}: replaced, changed or removed since this model was loaded from it, so "
                             "saving would copy another model than this one; load it again and save that")
        ev, sha256 = self._saved.get("eval"), hub.file_sha256(self.path)
        if report is not None:
            report = path_argument("report", report, "a `defocuskit eval` report.json or its folder")
            ev = eval_from_report(report, self.path, self.method, report_label, sha256)
            base = Path(str(ev.get("shards") or "shards")).name
            ev["datasets"] = list(dict.fromkeys(source_name(s, base) for s in ev["sources"])) or [base]
        config = self._config(ev, license or self._saved.get("license") or self._recipe.license, sha256)
        return hub.write_folder(folder, self.path, config, recipe_to_yaml(self._recipe), repo_id,
                                self._method.description)

    def save_pretrained(self, folder: str | Path, report: str | Path | None = None, *,
                        report_label: str | None = None, license: str | None = None) -> Path:
        """Write the Hub layout into `folder`: model.safetensors (this model file, unchanged), config.json,
        recipe.yaml, README.md (model card: license, datasets, model-index, how inference runs it). `report`: a
        `defocuskit eval` report.json (or its folder) whose rows for this model (found by path, or by
        `report_label`) go into the card; without one, the rows this model was loaded with (if any) are kept.
        `license`: a Hub license id for the card (default: the recipe's `license`, else `other`). Returns the folder."""
        return self._write(folder, report, report_label, None, license)

    def push_to_hub(self, repo_id: str, *, private: bool = False, token: str | None = None,
                    commit_message: str = "Upload defocuskit model", report: str | Path | None = None,
                    report_label: str | None = None, license: str | None = None) -> Any:
        """save_pretrained into a temporary folder, create the Hub model repo `repo_id` if needed and upload the
        folder; returns huggingface_hub's CommitInfo (its .commit_url, .oid)."""
        if not isinstance(repo_id, str) or not repo_id.strip():  # None was 'could not reach the Hub', after the save
            raise (ValueError if isinstance(repo_id, str) else TypeError)(
                f"push_to_hub: repo_id= is the Hub model repo's id (owner/name), got {repo_id!r}")
        if not isinstance(private, bool):
            raise TypeError(f"push_to_hub: private= is True or False, got {private!r}")
        check_token(token)
        with tempfile.TemporaryDirectory(prefix="defocuskit-hub-") as tmp:
            folder = self._write(Path(tmp) / "model", report, report_label, repo_id, license)
            return hub.push_folder(folder, repo_id, private=private, token=token, commit_message=commit_message)
