"""One module per endpoint family. Resources describe calls; clients run them."""

from .chat import Chat, ChatCompletions
from .completions import Completions
from .embeddings import Embeddings
from .health import Health
from .lora import Lora
from .metrics import Metrics
from .models import Models, Props
from .responses import Messages, Responses
from .slots import Slots

__all__ = [
    "Chat",
    "ChatCompletions",
    "Completions",
    "Embeddings",
    "Health",
    "Lora",
    "Messages",
    "Metrics",
    "Models",
    "Props",
    "Responses",
    "Slots",
]
