"""The HTTP server: routes, auth, limits and metrics over the service and transports."""

from steerline.server.app import create_app
from steerline.server.settings import ServerSettings

__all__ = ["ServerSettings", "create_app"]
