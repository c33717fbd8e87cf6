"""Run a real llama.cpp server: a ``llama-server`` binary or the one bundled in ``xllamacpp``."""

from ._errors import ServerError, ServerStartError
from ._manager import ServerManager
from ._options import ServerOptions

__all__ = ["ServerError", "ServerManager", "ServerOptions", "ServerStartError"]
