"""Which API key an endpoint gets: one rule, for the model classes and the config.

* A key the caller chose is always sent: ``api_key=`` in code, the variable
  named by ``api_key_env`` in ``steerline.toml``.
* A key picked up from the provider's usual variable (``OPENAI_API_KEY``,
  ``ANTHROPIC_API_KEY``) belongs to that provider's API and is sent only
  there: ``https://api.openai.com`` / ``https://api.anthropic.com``, where
  the SDK goes when no ``base_url`` is given.
* Any other endpoint (vLLM, Ollama, llama.cpp, LM Studio, a gateway, the
  provider's host over plain http) gets the placeholder :data:`NO_KEY`:
  local servers ignore it, and the SDKs need *some* key, or they would read
  the environment themselves.

The endpoint is decided here too (:func:`endpoint`: ``base_url``, else the
SDK's ``*_BASE_URL`` variable, else the provider's API) and handed to the SDK
explicitly, so the URL the rule checked is the URL the client uses.

No SDK is imported here, so the config layer stays light.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

NO_KEY = "not-needed"
"""Sent to a custom endpoint that was given no key."""


@dataclass(frozen=True, slots=True)
class ProviderAPI:
    key_env: str
    """The variable holding the key for the provider's own API."""
    base_url_env: str
    """The variable the SDK reads its endpoint from when ``base_url`` is None."""
    url: str
    """The provider's own API (the SDK's default endpoint)."""

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""


PROVIDER_APIS: dict[str, ProviderAPI] = {
    "openai": ProviderAPI("OPENAI_API_KEY", "OPENAI_BASE_URL", "https://api.openai.com/v1"),
    "anthropic": ProviderAPI(
        "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "https://api.anthropic.com"
    ),
}


def endpoint(provider: str, base_url: str | None, env: Mapping[str, str] | None = None) -> str:
    """Where ``provider``'s client sends requests: ``base_url``, else the
    SDK's ``*_BASE_URL`` variable, else the provider's own API."""
    api = PROVIDER_APIS[provider]
    env = os.environ if env is None else env
    return (base_url or "").strip() or env.get(api.base_url_env, "").strip() or api.url


def is_provider_api(provider: str, url: str) -> bool:
    """Whether ``url`` is ``provider``'s own API: https, its host, default port."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return False
    return (
        parts.scheme.lower() == "https"
        and (parts.hostname or "").lower() == PROVIDER_APIS[provider].host
        and port in (None, 443)
        and parts.username is None
        and parts.password is None
    )


def api_key_for(
    provider: str,
    *,
    api_key: str | None,
    base_url: str | None,
    env: Mapping[str, str] | None = None,
) -> str | None:
    """The key to give ``provider``'s SDK client for ``base_url``.

    ``api_key`` (the caller's choice) if given; else, when the endpoint is
    the provider's own API, its environment variable (``None`` when unset:
    the caller reports the missing key); else :data:`NO_KEY`, never the
    environment's key.
    """
    if api_key:
        return api_key
    env = os.environ if env is None else env
    if not is_provider_api(provider, endpoint(provider, base_url, env)):
        return NO_KEY
    return env.get(PROVIDER_APIS[provider].key_env, "").strip() or None
