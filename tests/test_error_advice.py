"""What to do reaches the user: the end of a long error (its advice) is kept, a library's own advice and log lines
are not relayed, and a message names what differs rather than two whole configurations (README walk-through)."""

from __future__ import annotations

import logging

import pytest

from defocuskit.config.recipe import recipe_to_dict
from defocuskit.config.typed import RecipeError
from defocuskit.io.modelfile import save_model
from defocuskit.methods import defocus_map, get_method
from defocuskit.methods.recipes import load_recipe, resolve_recipe
from defocuskit.models.pretrained import read_pretrained
from defocuskit.train.checks import build_network

OFFLINE = ("We couldn't connect to 'https://huggingface.co' to load the files, and couldn't find them in the cached "
           "files. Check your internet connection or see how to run the library in offline mode at "
           "'https://huggingface.co/docs/transformers/installation#offline-mode'.")
TINY_SEGFORMER = ["model.arch=segformer", "model.hidden_sizes=[8,16,32,32]", "model.depths=[1,1,1,1]",
                  "model.num_attention_heads=[1,1,1,1]", "model.decoder_hidden_size=16"]


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no test may reach the Hugging Face hub
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


class NoNetwork:
    """A transformers model class offline: huggingface_hub logs its retries, then transformers raises."""

    @classmethod
    def from_pretrained(cls, name: str):
        logging.getLogger("huggingface_hub.utils._http").warning("Retrying in 1s [Retry 1/5].")
        raise OSError(OFFLINE)


def test_a_hub_id_offline_is_one_sentence_and_no_retry_lines(caplog):
    with caplog.at_level(logging.WARNING), pytest.raises(ValueError) as info:
        read_pretrained("nvidia/mit-b1", NoNetwork)
    assert str(info.value) == ("from_pretrained failed: OSError: We couldn't connect to 'https://huggingface.co' to "
                               "load the files, and couldn't find them in the cached files")
    assert not [r for r in caplog.records if r.name.startswith("huggingface_hub")], caplog.text


def test_a_model_section_that_cannot_load_its_pretrained_weights_ends_with_the_way_out():
    """`train defocus-map` offline: the line was cut at 300 characters, inside transformers' link to its docs, before
    'Use a local copy ... or set model.pretrained: null' (README: offline, use a local copy or pretrained: null)."""
    recipe = load_recipe("defocus-map-tiny", [*TINY_SEGFORMER, "model.pretrained=nvidia/no-such-model-xyz"])
    with pytest.raises(RecipeError) as info:
        build_network(get_method("defocus-map"), recipe, True)
    said = str(info.value)
    assert "\n" not in said and len(said) < 600 and "nvidia/no-such-model-xyz" in said, said
    assert said.endswith("or set model.pretrained: null for a random init)"), said


def test_clip_middle_keeps_both_ends():
    from defocuskit.train.checks import clip_middle

    text = "a" * 300 + "b" * 300
    assert clip_middle("short") == "short"
    clipped = clip_middle(text)
    assert len(clipped) <= 400 and clipped.startswith("a" * 190) and clipped.endswith("b" * 190) and " ... " in clipped


def test_a_map_model_of_another_shape_names_the_keys_that_differ(tmp_path):
    """The two whole configurations were printed side by side, cut at 300 characters before any key that differs
    and before '(remove model.map_model to take the file's)'."""
    section = {"hidden_sizes": [8, 16, 32, 32], "depths": [1, 1, 1, 1], "num_attention_heads": [1, 1, 1, 1],
               "decoder_hidden_size": 16, "drop_path_rate": 0.0}
    estimator = resolve_recipe({"method": "defocus-map", "model": section})
    net = get_method("defocus-map").build(estimator.model, estimator.objective, False)
    save_model(tmp_path / "map.safetensors", net.state_dict(), "defocus-map", recipe_to_dict(estimator))
    recipe = load_recipe("rddm-tiny", [f"model.map_checkpoint={tmp_path / 'map.safetensors'}"])
    recipe.model.map_model = defocus_map.ModelConfig(**{**section, "decoder_hidden_size": 32})
    with pytest.raises(RecipeError) as info:
        build_network(get_method("rddm"), recipe, True)
    said = str(info.value)
    assert "model.map_model.decoder_hidden_size: 32 here, 16 in the file" in said, said
    assert "(remove model.map_model to take the file's)" in said, said
