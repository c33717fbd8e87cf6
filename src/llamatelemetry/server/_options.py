"""One description of a llama.cpp server, rendered two ways.

`ServerOptions` is the single place where the caller's wishes are checked and normalized
(``reranking`` means ``--embedding --pooling rank``, paths become absolute, ...). Two small
renderers turn it into what a backend needs:

- `ServerOptions.to_argv` → ``llama-server`` command-line flags (the binary backend);
- `ServerOptions.to_embedded_config` → a JSON-able dict of ``xllamacpp.CommonParams``
  fields (the embedded backend, applied by `llamatelemetry.server._embedded`).

The API key is in neither: both backends read it from the ``LLAMA_API_KEY`` environment
variable (see `ServerOptions.child_env`), so it never shows up in ``ps`` or in a log line.
"""

from __future__ import annotations

import ipaddress
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..api._internal import API_KEY_ENV

__all__ = [
    "API_KEY_ENV",
    "FLASH_ATTN",
    "SPLIT_MODES",
    "POOLING_TYPES",
    "SPECULATIVE_TYPES",
    "ServerOptions",
    "check_port",
    "is_loopback_host",
]

#: llama-server's ``--reasoning-format`` values.
REASONING_FORMATS = ("none", "auto", "deepseek", "deepseek-legacy")


def _chat_template(value: object) -> str | Path:
    """A chat template: a file (a ``Path``, or a str naming an existing file), Jinja text
    (a str with ``{%`` or ``{{``), or the name of one llama.cpp has built in."""
    if isinstance(value, os.PathLike):
        return Path(os.fspath(value)).expanduser().absolute()
    if not isinstance(value, str) or not value.strip():
        raise TypeError("chat_template must be a template name, Jinja text or a file path")
    if "{%" in value or "{{" in value:
        return value
    if os.path.isfile(os.path.expanduser(value)):
        return Path(value).expanduser().absolute()
    if not value.replace("-", "").replace(".", "").replace("_", "").isalnum():
        raise ValueError(
            f"chat_template {value[:60]!r} is neither Jinja text, an existing file nor the "
            "name of a built-in template (chatml, llama3, mistral-v7, ...)"
        )
    return value


#: llama-server's ``--spec-type`` values: a draft model, or draft-less n-gram lookups.
SPECULATIVE_TYPES = (
    "draft-simple",
    "draft-eagle3",
    "draft-mtp",
    "draft-dflash",
    "draft-dspark",
    "ngram-simple",
    "ngram-map-k",
    "ngram-map-k4v",
    "ngram-mod",
    "ngram-cache",
)


def _speculative(value: object) -> tuple[str, ...]:
    """The speculative types as a tuple: one name, or a sequence of names."""
    names = (value,) if isinstance(value, str) else value
    if not isinstance(names, (tuple, list)) or not all(isinstance(n, str) for n in names):
        raise TypeError(
            f"speculative must be a type name or a list of them, e.g. 'ngram-mod', got {value!r}"
        )
    for name in names:
        if name not in SPECULATIVE_TYPES:
            raise ValueError(f"speculative type {name!r} is not one of {SPECULATIVE_TYPES}")
    return tuple(names)


#: llama-server's ``--spec-draft-n-max`` when not given.
DEFAULT_DRAFT_MAX = 3

#: llama-server's ``--pooling`` values (and the `xllamacpp.llama_pooling_type` suffixes).
POOLING_TYPES = ("none", "mean", "cls", "last", "rank")
SPLIT_MODES = ("none", "layer", "row", "tensor")  # how a model spreads over several GPUs
FLASH_ATTN = ("on", "off", "auto")
MAX_DEVICES = 128  # llama.cpp's most devices (llama_max_devices): tensor_split's length


def _tensor_split(value: object) -> tuple[float, ...]:
    """Each GPU's share of the model: finite numbers >= 0, at least one above 0."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise TypeError(f"tensor_split must be a sequence of numbers (e.g. (3, 1)), got {value!r}")
    shares = []
    for share in value:
        if isinstance(share, bool) or not isinstance(share, (int, float)):
            raise TypeError(f"tensor_split must hold numbers, got {share!r}")
        if not (math.isfinite(share) and share >= 0):
            raise ValueError(f"tensor_split's shares must be finite and >= 0, got {share!r}")
        shares.append(float(share))
    if shares and not any(shares):
        raise ValueError("tensor_split gives every GPU a share of 0: at least one must be > 0")
    if len(shares) > MAX_DEVICES:
        raise ValueError(f"tensor_split has {len(shares)} shares; llama.cpp takes {MAX_DEVICES}")
    return tuple(shares)


def _flash_attn(value: object) -> str:
    if value is True or value is False:
        return "on" if value else "off"
    if value not in FLASH_ATTN:
        raise ValueError(f"flash_attn must be one of {FLASH_ATTN} (or a bool), got {value!r}")
    return str(value)


def _integer(name: str, value: object, minimum: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")


def check_port(port: int) -> int:
    """Return ``port`` if it is a TCP port number (0 means "pick a free one")."""
    _integer("port", port)
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be in 0..65535 (0 = pick a free port), got {port!r}")
    return port


def is_loopback_host(host: str) -> bool:
    """Whether a server bound to ``host`` is reachable from this machine only.

    ``localhost`` and loopback addresses (``127.0.0.0/8``, ``::1``) are; wildcards
    (``0.0.0.0``, ``::``), other addresses and other host names (which resolve to an
    interface other machines can reach) are not.
    """
    name = host.strip().strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ServerOptions:
    """Everything needed to launch one llama.cpp server, validated and normalized.

    Construction checks values only; whether the files are real GGUFs is checked by
    `ServerManager` just before launch, so options can be built for a path that does
    not exist yet. ``ctx_size`` is the *total* context, split evenly across the
    ``n_parallel`` slots (llama-server's own rule).
    """

    model_path: Path | None
    host: str = "127.0.0.1"
    port: int = 8080
    ctx_size: int = 2048
    n_parallel: int = 1
    n_threads: int | None = None
    gpu_layers: int = 0
    split_mode: str | None = None
    tensor_split: tuple[float, ...] = ()
    main_gpu: int | None = None
    flash_attn: str | bool | None = None
    embedding: bool = False
    reranking: bool = False
    pooling: str | None = None
    lora: tuple[Path, ...] = ()
    api_key: str | None = field(default=None, repr=False)
    metrics: bool = True
    slots: bool = True
    slot_save_path: Path | None = None
    alias: str | None = None
    chat_template: str | os.PathLike[str] | None = None
    reasoning_format: str | None = None
    reasoning_budget: int | None = None
    models_dir: Path | None = None
    models_max: int | None = None
    models_autoload: bool = True
    sleep_idle_seconds: int | None = None
    draft_model: Path | None = None
    speculative: tuple[str, ...] = ()
    draft_max: int | None = None
    draft_min: int | None = None
    extra_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Frozen: normalize through object.__setattr__, once, here and nowhere else.
        def put(name: str, value: object) -> None:
            object.__setattr__(self, name, value)

        for name in ("model_path", "models_dir", "draft_model"):
            value = getattr(self, name)
            if value is not None:
                put(name, Path(os.fspath(value)).expanduser().absolute())
        if (self.model_path is None) == (self.models_dir is None):
            raise ValueError(
                "give a model file (model_path) for one server, or a folder of models "
                "(models_dir) for a router, not both and not neither"
            )
        if self.models_dir is None:
            for name in ("models_max",):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name} is a router option: it needs models_dir")
            if not self.models_autoload:
                raise ValueError("models_autoload is a router option: it needs models_dir")
        else:
            if self.models_max is not None:
                _integer("models_max", self.models_max, minimum=0)  # 0 = no limit
            if self.alias is not None:
                raise ValueError("a router names its models after their files: drop alias=")
            for name in ("draft_model", "lora"):
                if getattr(self, name):
                    # Every model of the folder would get it, and it fits one model only
                    # (a draft needs the model's vocabulary, an adapter its shapes).
                    raise ValueError(
                        f"{name} fits one model, and a router gives its options to every model: "
                        "set it per model in a preset file (extra_args=['--models-preset', "
                        "FILE], see llama-server's README) or serve that model alone"
                    )
        if self.sleep_idle_seconds is not None:
            # llama-server refuses 0; -1 (never) is what None says.
            _integer("sleep_idle_seconds", self.sleep_idle_seconds, minimum=1)
        put("speculative", _speculative(self.speculative))
        self._check_drafts()
        if self.draft_model is None and any(t.startswith("draft-") for t in self.speculative):
            raise ValueError(
                f"speculative {list(self.speculative)!r} needs a draft model: pass draft_model="
                "(a small GGUF sharing the model's vocabulary), or use an n-gram type"
            )
        put("lora", tuple(Path(os.fspath(p)).expanduser().absolute() for p in self.lora))
        if self.slot_save_path is not None:
            put("slot_save_path", Path(os.fspath(self.slot_save_path)).expanduser().absolute())
        if isinstance(self.extra_args, (str, bytes)):
            raise TypeError("extra_args must be a sequence of strings, e.g. ('--flag', 'value')")
        put("extra_args", tuple(str(a) for a in self.extra_args))

        if not self.host:
            raise ValueError("host must be a non-empty host name or address")
        check_port(self.port)
        _integer("ctx_size", self.ctx_size, minimum=0)  # 0 = the model's training context
        _integer("n_parallel", self.n_parallel, minimum=1)
        if self.n_threads is not None:
            _integer("n_threads", self.n_threads, minimum=1)
        _integer("gpu_layers", self.gpu_layers, minimum=-1)  # -1 = all layers
        if self.split_mode is not None and self.split_mode not in SPLIT_MODES:
            raise ValueError(f"split_mode must be one of {SPLIT_MODES}, got {self.split_mode!r}")
        put("tensor_split", _tensor_split(self.tensor_split))
        if self.main_gpu is not None:
            _integer("main_gpu", self.main_gpu, minimum=0)
        if self.flash_attn is not None:
            put("flash_attn", _flash_attn(self.flash_attn))
        if self.pooling is not None and self.pooling not in POOLING_TYPES:
            raise ValueError(f"pooling must be one of {POOLING_TYPES}, got {self.pooling!r}")
        if self.reranking:
            if self.pooling not in (None, "rank"):
                raise ValueError(f"reranking needs pooling 'rank', got pooling={self.pooling!r}")
            put("embedding", True)
            put("pooling", "rank")
        if self.chat_template is not None:
            put("chat_template", _chat_template(self.chat_template))
        if self.reasoning_format is not None and self.reasoning_format not in REASONING_FORMATS:
            raise ValueError(
                f"reasoning_format must be one of {REASONING_FORMATS}, "
                f"got {self.reasoning_format!r}"
            )
        if self.reasoning_budget is not None:
            _integer("reasoning_budget", self.reasoning_budget, minimum=-1)  # -1: no limit
        if self.api_key is not None and (not self.api_key or "," in self.api_key):
            # llama-server splits the variable on commas; an empty key would disable auth.
            raise ValueError("api_key must be a non-empty string without commas")

    def _check_drafts(self) -> None:
        for name, least in (("draft_max", 1), ("draft_min", 0)):  # 0 drafts crashes the server
            if getattr(self, name) is not None:
                _integer(name, getattr(self, name), minimum=least)
                if self.draft_model is None:
                    raise ValueError(
                        f"{name} bounds a draft model's drafts and needs draft_model=...; the "
                        "n-gram types have limits of their own (binary backend: extra_args="
                        "['--spec-ngram-mod-n-max', '16'], see llama-server --help)"
                    )
        most = DEFAULT_DRAFT_MAX if self.draft_max is None else self.draft_max
        if self.draft_min is not None and self.draft_min > most:
            # The server would silently draft nothing at all.
            which = "draft_max" if self.draft_max is not None else "the server's default draft_max"
            raise ValueError(f"draft_min {self.draft_min} is above {which} {most}")

    # -- renderers -------------------------------------------------------------------

    def to_argv(self) -> list[str]:
        """``llama-server`` flags for these options (without the executable itself)."""
        argv = [
            *self._source_argv(),
            "--host", self.host,
            "--port", str(self.port),
            "-c", str(self.ctx_size),
            "-np", str(self.n_parallel),
            "-ngl", str(self.gpu_layers),
        ]  # fmt: skip
        if self.split_mode is not None:
            argv += ["--split-mode", self.split_mode]
        if self.tensor_split:
            argv += ["--tensor-split", ",".join(f"{s:g}" for s in self.tensor_split)]
        if self.main_gpu is not None:
            argv += ["--main-gpu", str(self.main_gpu)]
        if self.flash_attn is not None:
            argv += ["--flash-attn", str(self.flash_attn)]
        if self.n_threads is not None:
            argv += ["-t", str(self.n_threads)]
        if self.embedding:
            argv.append("--embedding")
        if self.pooling is not None:
            argv += ["--pooling", self.pooling]
        for path in self.lora:
            # Plain --lora (scale 1.0): "--lora-scaled" changed syntax across releases.
            argv += ["--lora", str(path)]
        if self.metrics:
            argv.append("--metrics")
        argv.append("--slots" if self.slots else "--no-slots")
        if self.slot_save_path is not None:
            argv += ["--slot-save-path", str(self.slot_save_path)]
        if self.alias is not None:
            argv += ["--alias", self.alias]
        if isinstance(self.chat_template, Path):
            argv += ["--chat-template-file", str(self.chat_template)]
        elif self.chat_template is not None:
            argv += ["--chat-template", os.fspath(self.chat_template)]
        if self.reasoning_format is not None:
            argv += ["--reasoning-format", self.reasoning_format]
        if self.reasoning_budget is not None:
            argv += ["--reasoning-budget", str(self.reasoning_budget)]
        if self.sleep_idle_seconds is not None:
            argv += ["--sleep-idle-seconds", str(self.sleep_idle_seconds)]
        if self.draft_model is not None:
            argv += ["--spec-draft-model", str(self.draft_model)]
        if self.speculative or self.draft_model is not None:
            argv += ["--spec-type", ",".join(self._speculative_types())]
        if self.draft_max is not None:
            argv += ["--spec-draft-n-max", str(self.draft_max)]
        if self.draft_min is not None:
            argv += ["--spec-draft-n-min", str(self.draft_min)]
        argv += self.extra_args
        return argv

    def _speculative_types(self) -> tuple[str, ...]:
        # A draft model drafts nothing on today's llama-server without a draft type: it
        # would be loaded and never used.
        if self.draft_model is not None and not any(
            t.startswith("draft-") for t in self.speculative
        ):
            return (*self.speculative, "draft-simple")
        return self.speculative

    def _source_argv(self) -> list[str]:
        """The model file, or the router's folder of models and its limits."""
        if self.models_dir is None:
            return ["-m", str(self.model_path)]
        argv = ["--models-dir", str(self.models_dir)]
        if self.models_max is not None:
            argv += ["--models-max", str(self.models_max)]
        if not self.models_autoload:
            argv.append("--no-models-autoload")
        return argv

    def to_embedded_config(self) -> dict[str, Any]:
        """``xllamacpp.CommonParams`` field values for these options (JSON-able).

        Keys are CommonParams attribute names (dotted for nested ones), so the child
        process applies them without knowing anything about llamatelemetry's options.
        """
        if self.extra_args:
            raise ValueError(
                f"extra_args {list(self.extra_args)!r} are llama-server command-line flags and "
                "need the binary backend: pass backend='binary' with a llama-server executable "
                "(server_path=..., $LLAMA_SERVER_PATH or PATH)"
            )
        if self.models_dir is not None:
            raise ValueError(
                "router mode (models_dir) needs the llama-server binary: the embedded server "
                "has it disabled. Pass backend='binary' with a llama-server executable "
                "(server_path=..., $LLAMA_SERVER_PATH or PATH)"
            )
        config: dict[str, Any] = {
            "model.path": str(self.model_path),
            "hostnames": [self.host],
            "port": self.port,
            "n_ctx": self.ctx_size,
            "n_parallel": self.n_parallel,
            "n_gpu_layers": self.gpu_layers,
            "embedding": self.embedding,
            "endpoint_metrics": self.metrics,
            "endpoint_slots": self.slots,
            "lora_adapters": [{"path": str(p), "scale": 1.0} for p in self.lora],
        }
        if self.n_threads is not None:
            config["cpuparams.n_threads"] = self.n_threads
        if self.split_mode is not None:
            config["split_mode"] = self.split_mode
        if self.tensor_split:
            config["tensor_split"] = list(self.tensor_split)
        if self.main_gpu is not None:
            config["main_gpu"] = self.main_gpu
        if self.flash_attn is not None:
            config["flash_attn_type"] = self.flash_attn
        if self.pooling is not None:
            config["pooling_type"] = self.pooling
        if self.slot_save_path is not None:
            # The CLI appends the separator itself; the raw field needs it already there.
            config["slot_save_path"] = os.path.join(str(self.slot_save_path), "")
        if self.alias is not None:
            config["model_alias"] = [self.alias]
        if isinstance(self.chat_template, Path):
            config["chat_template"] = self.chat_template.read_text(encoding="utf-8")
        elif self.chat_template is not None:
            config["chat_template"] = os.fspath(self.chat_template)
        if self.reasoning_format is not None:
            config["reasoning_format"] = self.reasoning_format
        if self.reasoning_budget is not None:
            if self.reasoning_budget not in (-1, 0):
                raise ValueError(
                    "the embedded server takes reasoning_budget -1 (no limit) or 0 (no "
                    f"thinking), not {self.reasoning_budget}: a token budget needs the "
                    "llama-server binary (backend='binary')"
                )
            config["enable_reasoning"] = self.reasoning_budget
        if self.sleep_idle_seconds is not None:
            config["sleep_idle_seconds"] = self.sleep_idle_seconds
        if self.draft_model is not None:
            config["speculative.draft.mparams.path"] = str(self.draft_model)
        if self.speculative or self.draft_model is not None:
            config["speculative.types"] = list(self._speculative_types())
        if self.draft_max is not None:
            config["speculative.draft.n_max"] = self.draft_max
        if self.draft_min is not None:
            config["speculative.draft.n_min"] = self.draft_min
        return config

    def gpu_placement(self) -> list[tuple[str, object]]:
        """The options, as (name, value), that put any of the model on a GPU (or name one)."""
        found: list[tuple[str, object]] = []
        if self.gpu_layers:
            found.append(("gpu_layers", self.gpu_layers))
        if self.split_mode not in (None, "none"):
            found.append(("split_mode", self.split_mode))
        if self.tensor_split:
            found.append(("tensor_split", self.tensor_split))
        if self.main_gpu:
            found.append(("main_gpu", self.main_gpu))
        return found

    @property
    def asks_gpu(self) -> bool:
        """Whether these options put any of the model on a GPU (or name one)."""
        return bool(self.gpu_placement())

    def gpu_attributes(self) -> dict[str, Any]:
        """The GPU options given, as resource attributes (``llama_cpp.server.*``)."""
        found: dict[str, Any] = {"llama_cpp.server.gpu_layers": self.gpu_layers}
        if self.split_mode is not None:
            found["llama_cpp.server.split_mode"] = self.split_mode
        if self.tensor_split:
            found["llama_cpp.server.tensor_split"] = list(self.tensor_split)
        if self.main_gpu is not None:
            found["llama_cpp.server.main_gpu"] = self.main_gpu
        if self.flash_attn is not None:
            found["llama_cpp.server.flash_attn"] = self.flash_attn
        return found

    def child_env(self, base: Mapping[str, str]) -> dict[str, str]:
        """The child's environment: ``base`` with the API key set (or an inherited one removed).

        Removing an inherited ``LLAMA_API_KEY`` matters: the binary would silently enable
        authentication that this manager (and its clients) know nothing about.
        """
        env = dict(base)
        env.pop(API_KEY_ENV, None)
        if self.api_key is not None:
            env[API_KEY_ENV] = self.api_key
        return env
