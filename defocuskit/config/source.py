"""Where a recipe's values came from, to name in its errors: the recipe file (or the packaged recipe) and the
overrides of the command line."""

from __future__ import annotations

import re
from dataclasses import dataclass

from defocuskit.config.typed import RecipeError

# what a message offers besides the keys it is about: the keys known in a section, a spelling it suggests
_ASIDE = re.compile(r"\(known here: [^)]*\)|; did you mean .*$")
_SECTION_FIRST = re.compile(r"^(\w+)[:\s]")  # "model: this section does not build ...": about every key in it
_SECTION_KEY = re.compile(r"(?<![\w.])(?:data|optim|train|model|objective|sampler|inference)\.\w+")


def _names(message: str, key: str) -> bool:
    """Whether `message` is about the dotted `key`: names it (or an item of it, `key[1]`) or its section first."""
    if re.search(rf"(?<![\w.]){re.escape(key)}(?!\w)", message):
        return True
    section = _SECTION_FIRST.match(message)
    return section is not None and key.startswith(section.group(1) + ".")


@dataclass(frozen=True)
class RecipeSource:
    """A recipe's origin: `name`, its file as the user gave it (or "packaged recipe NAME"), and `overrides`, each
    as (the dotted key it sets, the override as given)."""

    name: str
    overrides: tuple[tuple[str, str], ...] = ()

    def locate(self, error: RecipeError) -> RecipeError:
        """`error` naming where the values it is about were set: led by the file ("FILE: ...") where it names a key
        no override set, followed by the override ("... (override 'KEY=VALUE')", before a "did you mean") where it
        names a key an override set. An error that says where already (an override's own, or one located) as it is."""
        text = str(error)
        if error.located or text.startswith("override '") or "(override '" in text:
            return error
        about = _ASIDE.sub("", text)
        given: dict[str, str] = {}
        for key, item in self.overrides:
            if _names(about, key):
                given[key] = item  # a key overridden twice (to the same value: no other passes): the last one
        overridden = {key for key, _ in self.overrides}
        if not given or any(key not in overridden for key in _SECTION_KEY.findall(about)):  # a value of the file's
            text = f"{self.name}: {text}"
        if given:
            head, did_you_mean, tail = text.partition("; did you mean")
            items = ", ".join(f"'{item}'" for item in given.values())
            text = f"{head} ({'override' if len(given) == 1 else 'overrides'} {items}){did_you_mean}{tail}"
        located = RecipeError(text)
        located.located = True
        return located
