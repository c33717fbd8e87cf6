"""Child-process entry point that runs llama.cpp's own HTTP server through ``xllamacpp``.

Usage (by `ServerManager`, not by hand)::

    python -m llamatelemetry.server._embedded '<json config>'

The config maps ``xllamacpp.CommonParams`` attribute names (dotted for nested ones) to
values, as rendered by `ServerOptions.to_embedded_config`; the API key comes from the
``LLAMA_API_KEY`` environment variable so it never appears on the command line.

``xllamacpp.Server`` has no stop method, which is why it lives in its own process: once
it listens, this process only waits to be terminated (SIGTERM exits at once) or for its
parent to disappear (then it exits too, so a crashed test run leaves no server behind).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from typing import Any

from ._options import API_KEY_ENV  # the variable the llama-server binary reads too

_PARENT_POLL_SECONDS = 0.5


def build_params(config: dict[str, Any], api_key: str | None) -> Any:
    """Apply ``config`` to a fresh ``xllamacpp.CommonParams``; unknown fields raise."""
    import xllamacpp  # type: ignore[import-untyped]

    params = xllamacpp.CommonParams()
    for key, value in config.items():
        if key == "pooling_type":
            value = getattr(xllamacpp.llama_pooling_type, f"LLAMA_POOLING_TYPE_{value.upper()}")
        elif key == "reasoning_format":
            suffix = value.upper().replace("-", "_")
            value = getattr(xllamacpp.common_reasoning_format, f"COMMON_REASONING_FORMAT_{suffix}")
        elif key == "lora_adapters":
            value = [
                xllamacpp.CommonAdapterLoraInfo(path=a["path"], scale=a["scale"]) for a in value
            ]
        elif key == "speculative.types":
            kinds = xllamacpp.common_speculative_type
            value = [
                getattr(kinds, "COMMON_SPECULATIVE_TYPE_" + v.upper().replace("-", "_"))
                for v in value
            ]
        elif key == "split_mode":
            value = getattr(xllamacpp.llama_split_mode, f"LLAMA_SPLIT_MODE_{value.upper()}")
        elif key == "flash_attn_type":
            which = {"on": "ENABLED", "off": "DISABLED", "auto": "AUTO"}[value]
            value = getattr(xllamacpp.llama_flash_attn_type, f"LLAMA_FLASH_ATTN_TYPE_{which}")
        elif key == "tensor_split":
            value = [*value, *[0.0] * (len(params.tensor_split) - len(value))]
        elif key == "model_alias":
            value = set(value)  # CommonParams.model_alias is a set[str]
        *parents, name = key.split(".")
        target = params
        for part in parents:
            target = getattr(target, part)
        if not hasattr(target, name):
            raise KeyError(f"xllamacpp.CommonParams has no field {key!r}")
        setattr(target, name, value)
    if api_key:
        params.api_keys = [api_key]
    return params


def _exit_now(signum: int, frame: object) -> None:
    # Skip interpreter teardown: the server's C++ threads are still running and
    # destroying them from a finalizer is what could hang. Nothing here needs flushing
    # beyond Python's own streams.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def main(argv: list[str]) -> int:
    """Start the server described by ``argv[1]`` and block until told to stop."""
    if len(argv) != 2:
        sys.stderr.write("usage: python -m llamatelemetry.server._embedded '<json config>'\n")
        return 2
    signal.signal(signal.SIGTERM, _exit_now)
    signal.signal(signal.SIGINT, _exit_now)
    if hasattr(signal, "pthread_sigmask"):  # the parent held SIGINT while forking us
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    # Watch the parent from the start, in a thread: a start that hangs inside llama.cpp
    # must not outlive a parent that was killed meanwhile.
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    config = json.loads(argv[1])
    params = build_params(config, os.environ.get(API_KEY_ENV))

    import xllamacpp

    try:
        server = xllamacpp.Server(params)
    except RuntimeError as exc:
        # llama.cpp has already logged the reason above this line.
        sys.stderr.write(f"llamatelemetry: xllamacpp.Server failed: {exc}\n")
        sys.stderr.flush()
        return 1
    sys.stderr.write(
        f"llamatelemetry: embedded llama.cpp server listening on {server.listening_address}\n"
    )
    sys.stderr.flush()
    while True:
        time.sleep(3600)


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(_PARENT_POLL_SECONDS)
    sys.stderr.write("llamatelemetry: parent process is gone, exiting\n")
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
