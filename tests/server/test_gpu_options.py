"""llama.cpp's GPU options on both backends: checked, rendered for each, refused before
launch with the reason when the build has no such GPU (this machine's builds are CPU
builds: for real), and recorded as resource attributes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from llamatelemetry.cli import main
from llamatelemetry.server import InferenceEngine
from llamatelemetry.server._devices import check_gpu_options, gpu_devices
from llamatelemetry.server._embedded import build_params
from llamatelemetry.server._options import ServerOptions
from llamatelemetry.testing import TinyModelFiles

from ._support import BACKENDS, manager

GPU_OPTIONS: dict[str, Any] = {
    "gpu_layers": -1,
    "split_mode": "row",
    "tensor_split": (3, 1),
    "main_gpu": 1,
    "flash_attn": True,
}


def test_the_options_are_rendered_for_both_backends(tmp_path: Path) -> None:
    options = ServerOptions(tmp_path / "m.gguf", **GPU_OPTIONS)
    argv = options.to_argv()
    for flag, value in (("-ngl", "-1"), ("--split-mode", "row"), ("--tensor-split", "3,1"),
                        ("--main-gpu", "1"), ("--flash-attn", "on")):  # fmt: skip
        assert argv[argv.index(flag) + 1] == value
    import xllamacpp  # type: ignore[import-untyped]

    params = build_params(options.to_embedded_config(), None)  # the real CommonParams
    assert params.n_gpu_layers == -1
    assert params.split_mode == xllamacpp.llama_split_mode.LLAMA_SPLIT_MODE_ROW
    assert list(params.tensor_split[:3]) == [3.0, 1.0, 0.0]
    assert params.main_gpu == 1
    assert params.flash_attn_type == xllamacpp.llama_flash_attn_type.LLAMA_FLASH_ATTN_TYPE_ENABLED
    plain = ServerOptions(tmp_path / "m.gguf")
    assert not {"--split-mode", "--tensor-split", "--main-gpu", "--flash-attn"} & set(
        plain.to_argv()
    )
    assert not plain.asks_gpu and options.asks_gpu
    assert options.gpu_attributes() == {
        "llama_cpp.server.gpu_layers": -1,
        "llama_cpp.server.split_mode": "row",
        "llama_cpp.server.tensor_split": [3.0, 1.0],
        "llama_cpp.server.main_gpu": 1,
        "llama_cpp.server.flash_attn": "on",
    }


@pytest.mark.parametrize(
    ("option", "error", "message"),
    [
        ({"split_mode": "rows"}, ValueError, "split_mode must be one of"),
        ({"tensor_split": "3,1"}, TypeError, "sequence of numbers"),
        ({"tensor_split": (0, 0)}, ValueError, "at least one must be > 0"),
        ({"tensor_split": (1, -1)}, ValueError, "finite and >= 0"),
        ({"tensor_split": (1, float("nan"))}, ValueError, "finite and >= 0"),
        ({"tensor_split": (1, True)}, TypeError, "must hold numbers"),
        ({"tensor_split": (1,) * 129}, ValueError, "llama.cpp takes 128"),
        ({"main_gpu": -1}, ValueError, "main_gpu must be >= 0"),
        ({"main_gpu": 1.0}, TypeError, "main_gpu must be an integer"),
        ({"flash_attn": "yes"}, ValueError, "flash_attn must be one of"),
        ({"gpu_layers": -2}, ValueError, "gpu_layers must be >= -1"),
    ],
)
def test_impossible_values_are_refused_with_the_reason(
    tmp_path: Path, option: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        ServerOptions(tmp_path / "m.gguf", **option)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_cpu_build_refuses_gpu_offload_before_launch(
    backend: str, request: pytest.FixtureRequest, tiny_files: TinyModelFiles, tmp_path: Path
) -> None:
    with manager(backend, request, tmp_path) as server:
        with pytest.raises(ValueError, match=r"gpu_layers=-1 put the model on a GPU, but .* "
                           r"has no GPU device \(a CPU build\)"):  # fmt: skip
            server.start(tiny_files.model.path, gpu_layers=-1)
        assert not server.is_running and server.pid is None  # nothing was launched
        assert gpu_devices(server.backend, server_binary(request, backend)) == []
        # what runs on a CPU build is accepted, and recorded
        server.start(tiny_files.model.path, flash_attn="off", n_threads=1)
        assert server.resource_attributes == {
            "llama_cpp.server.backend": backend,
            "llama_cpp.server.gpu_layers": 0,
            "llama_cpp.server.flash_attn": "off",
        }


def server_binary(request: pytest.FixtureRequest, backend: str) -> Path | None:
    return request.getfixturevalue("llama_server_binary") if backend == "binary" else None


def test_options_past_the_build_s_gpus_are_refused_naming_them(tmp_path: Path) -> None:
    """A CUDA build's --list-devices, as it prints them (a script standing in for it)."""
    binary = tmp_path / "llama-server"
    binary.write_text(
        "#!/bin/sh\necho 'Available devices:'\n"
        "echo '  CUDA0: NVIDIA H100 80GB HBM3 (81008 MiB, 80500 MiB free)'\n"
        "echo '  CUDA1: NVIDIA H100 80GB HBM3 (81008 MiB, 80500 MiB free)'\n"
    )
    binary.chmod(0o755)
    devices = gpu_devices("binary", binary)
    assert devices == [
        "CUDA0: NVIDIA H100 80GB HBM3 (81008 MiB, 80500 MiB free)",
        "CUDA1: NVIDIA H100 80GB HBM3 (81008 MiB, 80500 MiB free)",
    ]
    model = tmp_path / "m.gguf"
    check_gpu_options(ServerOptions(model, gpu_layers=-1, main_gpu=1, tensor_split=(3, 1)),
                      devices, "llama-server")  # fmt: skip
    with pytest.raises(ValueError, match=r"main_gpu=2 is past the last GPU: llama-server has "
                       r"2 GPU device\(s\): CUDA0: NVIDIA H100"):  # fmt: skip
        check_gpu_options(ServerOptions(model, gpu_layers=-1, main_gpu=2), devices, "llama-server")
    with pytest.raises(ValueError, match="tensor_split gives shares to 3 GPUs"):
        check_gpu_options(ServerOptions(model, tensor_split=(1, 1, 1)), devices, "llama-server")
    silent = tmp_path / "old-llama-server"  # a build without --list-devices: not known
    silent.write_text("#!/bin/sh\necho 'error: unknown argument' >&2\nexit 1\n")
    silent.chmod(0o755)
    assert gpu_devices("binary", silent) is None
    check_gpu_options(ServerOptions(model, main_gpu=7), None, "llama-server")  # not refused


def test_serve_and_the_engine_say_it_in_their_words(
    tiny_files: TinyModelFiles, tmp_path: Path
) -> None:
    model = str(tiny_files.model.path)
    result = CliRunner().invoke(main, ["serve", model, "--port", "0", "--gpu-layers", "-1",
                                       "--backend", "embedded"])  # fmt: skip
    assert result.exit_code != 0
    assert "--gpu-layers -1 put the model on a GPU" in " ".join(result.output.split())
    result = CliRunner().invoke(main, ["serve", model, "--tensor-split", "3,x"])
    assert result.exit_code != 0 and "is not numbers separated by commas" in result.output
    with pytest.raises(ValueError, match="split_mode must be one of"):
        InferenceEngine(tiny_files.model.path, split_mode="rows", start=False)
    engine = InferenceEngine(
        tiny_files.model.path, gpu_layers=8, start=False, backend="embedded",
        log_dir=os.fspath(tmp_path),
    )  # fmt: skip
    with engine, pytest.raises(ValueError, match="gpu_layers=8 put the model on a GPU"):
        engine.start()
