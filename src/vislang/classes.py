"""The classes a labelled training source teaches: names in label order and the prompt templates.

Objectives that classify (a cross-entropy head, CoOp's learned prompts) are built with one, and
it travels with their weights (the checkpoint's ``classes`` entry, an export's ``classes.json``):
the head's rows mean these names, in this order, wherever the model is loaded, with or without
the training data at hand.
"""

from __future__ import annotations

from dataclasses import dataclass

from vislang.errors import CheckpointError


@dataclass(frozen=True)
class ClassTask:
    classnames: tuple[str, ...]
    templates: tuple[str, ...]  # each with {} or {c} where the class name goes
    name: str = "classes"

    def __post_init__(self) -> None:
        if not self.classnames:
            raise ValueError("a class task needs at least one class name")
        if not self.templates:
            raise ValueError("a class task needs at least one prompt template")

    def __len__(self) -> int:
        return len(self.classnames)

    def prompt(self, label: int, template: int) -> str:
        """Class ``label`` written with template ``template``."""
        name = self.classnames[label]
        return self.templates[template].format(name, c=name)

    def prompts(self) -> list[list[str]]:
        """Every class's prompts, one per template, in class order (the zero-shot classifier's texts)."""
        return [[self.prompt(c, t) for t in range(len(self.templates))] for c in range(len(self.classnames))]

    def to_json(self) -> dict:
        return {"name": self.name, "classnames": list(self.classnames), "templates": list(self.templates)}

    @classmethod
    def from_json(cls, data: object, where: str) -> ClassTask:
        """The task a checkpoint or export saved; anything malformed is one line naming ``where``."""
        try:
            names, templates = data["classnames"], data["templates"]  # type: ignore[index]
            if not all(isinstance(s, str) for s in [*names, *templates]):
                raise TypeError("names and templates must be strings")
            for template in templates:  # each must take the class name as prompt() writes it
                template.format("x", c="x")
            return cls(tuple(names), tuple(templates), str(data.get("name", "classes")))  # type: ignore[union-attr]
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as error:
            raise CheckpointError(f"{where}: not a class list ({error})") from None
