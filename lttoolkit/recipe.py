"""A model's recipe: which registered pieces it is made of, and their options.

:func:`lttoolkit.build` attaches a :class:`Recipe` to every model it returns.
The training engine reads it to create samplers and the loss once the labels
are known, and a checkpoint stores it so the model can be rebuilt.
"""

from __future__ import annotations

from typing import Any, Mapping

from pydantic import BaseModel, ConfigDict, Field

from lttoolkit.registry import parse_spec

__all__ = ["ComponentSpec", "Recipe"]


class ComponentSpec(BaseModel):
    """A registered component by name, with its options.

    >>> ComponentSpec.parse({"type": "focal", "gamma": 2.0})
    ComponentSpec(type='focal', options={'gamma': 2.0})
    >>> ComponentSpec.parse("reversed").as_dict()
    {'type': 'reversed'}
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str
    options: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def parse(cls, value: str | Mapping[str, Any] | ComponentSpec, *, kind: str = "component") -> ComponentSpec:
        """Accept ``"name"``, ``{"type": name, **options}`` or a ComponentSpec.

        Raises:
            ComponentSpecError: from :func:`lttoolkit.registry.parse_spec`, the one parser of specs;
                ``kind`` (``"loss"``, ``"backbone"``) names the component in its message.
        """
        if isinstance(value, ComponentSpec):
            return value
        name, options = parse_spec(value, kind=kind)
        return cls(type=name, options=options)

    def as_dict(self) -> dict[str, Any]:
        """``{"type": name, **options}``, the form configs use."""
        return {"type": self.type, **self.options}


class Recipe(BaseModel):
    """Everything needed to rebuild a model and train it.

    Attributes:
        method: the methods-registry name (``"bbn"``, ``"ce"``, a plugin's).
        options: the keyword options :func:`lttoolkit.build` was called with
            (normalised), so ``build(method, **options)`` rebuilds the model.
        backbone: the backbone component.
        num_classes, in_chans, pretrained: the classifier / input setup.
        samplers: one sampler per input stream, in stream order
            (BBN: ``conventional`` then ``rebalancing``; single-branch: ``main``).
        loss: the loss component.
        schedule: the alpha schedule, for methods that have one.
    """

    model_config = ConfigDict(extra="forbid")

    method: str
    options: dict[str, Any] = Field(default_factory=dict)
    backbone: ComponentSpec
    num_classes: int
    in_chans: int = 3
    pretrained: bool = False
    samplers: dict[str, ComponentSpec]
    loss: ComponentSpec
    schedule: ComponentSpec | None = None

    def rebuild(self, **overrides: Any) -> Any:
        """Build the same model again (weights freshly initialised)."""
        from lttoolkit._build import build

        return build(self.method, **{**self.options, **overrides})
