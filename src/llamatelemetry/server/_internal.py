"""What llamatelemetry's other layers (cli, testing, bench) may use of the server layer
beyond its public API: the built-in tiny model and its servers (the demo's, and the test
helpers'), the real small model fetched on request, and the option values the CLI
offers. Not for users; see ``api/_internal.py``.
"""

from ._builtin import TinyModelFiles, build_tiny_files, start_chat_server, start_rerank_server
from ._manager import Backend
from ._options import FLASH_ATTN, POOLING_TYPES, REASONING_FORMATS, SPECULATIVE_TYPES, SPLIT_MODES
from ._real_model import SIZE_MB, SMOLLM2, ModelFetchError, fetch_smollm2, smollm2_path
from ._tiny_model import CHATML_TEMPLATE, TinyModel, build_tiny_lora, build_tiny_model

__all__ = [
    "Backend",
    "CHATML_TEMPLATE",
    "FLASH_ATTN",
    "POOLING_TYPES",
    "REASONING_FORMATS",
    "SIZE_MB",
    "SMOLLM2",
    "SPECULATIVE_TYPES",
    "SPLIT_MODES",
    "ModelFetchError",
    "TinyModel",
    "TinyModelFiles",
    "build_tiny_files",
    "build_tiny_lora",
    "build_tiny_model",
    "fetch_smollm2",
    "smollm2_path",
    "start_chat_server",
    "start_rerank_server",
]
