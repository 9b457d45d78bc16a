"""Build a model from a provider name and options (what configuration uses).

Provider modules are imported on first use, so ``demo`` never loads an SDK.
"""

from __future__ import annotations

from typing import Any

from steerline.core.errors import InvalidValueError
from steerline.models.base import Model

PROVIDERS: tuple[str, ...] = ("demo", "openai", "anthropic")


def build_model(provider: str, **options: Any) -> Model:
    """A model for ``provider`` (``demo``, ``openai`` or ``anthropic``).

    ``options`` are the provider class's keyword arguments; for ``openai``
    and ``anthropic`` ``model`` is required (``OpenAIModel(model, ...)``).
    Raises ``InvalidValueError`` for an unknown provider or option and
    ``ModelError`` when the provider cannot be set up (no API key, ...).
    """
    factory: Any
    if provider == "demo":
        from steerline.models.demo import DemoModel

        options.pop("model", None)
        factory = DemoModel
    elif provider == "openai":
        from steerline.models.openai import OpenAIModel

        factory = OpenAIModel
    elif provider == "anthropic":
        from steerline.models.anthropic import AnthropicModel

        factory = AnthropicModel
    else:
        raise InvalidValueError(
            f"unknown provider {provider!r}; expected one of {', '.join(PROVIDERS)}"
        )
    try:
        model: Model = factory(**options)
    except TypeError as exc:
        raise InvalidValueError(f"invalid options for provider {provider!r}: {exc}") from None
    return model
