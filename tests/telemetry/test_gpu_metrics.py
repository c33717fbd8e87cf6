"""The GPU figures (``hw.*``): exact readings through the real nvidia-ml-py bindings from
a stand-in driver (tests/gpu.py), and every way of having none (the real missing driver of
this machine, no device, access refused, a device lost mid-run, the package missing): one
line each, no GPU figures, and nothing else changes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..gpu import build_fake_nvml, run_python

# Collections through setup_telemetry(gpu=True): the points of each, and another metric of
# the same pipeline (which must be unaffected), as JSON on the last line.
SCRIPT = """
import json, logging, os, sys
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
{prelude}
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from llamatelemetry.telemetry import setup_telemetry

reader = InMemoryMetricReader()
handle = setup_telemetry("gpus", set_global=False, metric_readers=[reader], gpu=True)
other = handle.meter_provider.get_meter("other").create_counter("other.calls")
collections = []
for step in {steps!r}:
    os.environ.update(step)
    other.add(1)
    found = {{}}
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                found[metric.name] = [
                    [dict(p.attributes), p.value] for p in metric.data.data_points
                ]
    collections.append(found)
handle.shutdown()
print(json.dumps(collections))
"""


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield build_fake_nvml(tmp_path_factory.mktemp("nvidia"))


def collect(
    driver: Path | None, steps: list[dict[str, str]] | None = None, prelude: str = "", **env: str
) -> tuple[list[dict[str, Any]], list[str]]:
    code = SCRIPT.format(prelude=prelude, steps=steps or [{}])
    collections, log = run_python(code, driver, **env)
    lines = [line for line in log.splitlines() if "llamatelemetry.gpu" in line]
    return collections, lines


def gpu_names(found: dict[str, Any]) -> set[str]:
    return {name for name in found if name.startswith("hw.")}


def by_device(found: dict[str, Any], name: str) -> dict[str, float]:
    return {attributes["hw.id"]: value for attributes, value in found.get(name, [])}


def test_every_reading_is_the_driver_s_own(driver: Path) -> None:
    [first, second], lines = collect(driver, [{}, {}], FAKE_NVML_DEVICES="2")
    assert lines == []
    gib = 1 << 30
    assert by_device(first, "hw.gpu.utilization") == {"GPU-fake-0": 0.40, "GPU-fake-1": 0.41}
    assert by_device(first, "hw.gpu.memory.usage") == {"GPU-fake-0": 2 * gib, "GPU-fake-1": 3 * gib}
    assert by_device(first, "hw.gpu.memory.limit") == {
        "GPU-fake-0": 16 * gib,
        "GPU-fake-1": 17 * gib,
    }
    assert by_device(first, "hw.power") == {"GPU-fake-0": 150.0, "GPU-fake-1": 150.001}
    assert by_device(first, "hw.temperature") == {"GPU-fake-0": 55.0, "GPU-fake-1": 56.0}
    assert by_device(first, "hw.gpu.clock.sm") == {"GPU-fake-0": 1.5e9, "GPU-fake-1": 1.501e9}
    # the energy counter: the driver's millijoules in joules, as they grow
    assert by_device(first, "hw.energy") == {"GPU-fake-0": 5000.0, "GPU-fake-1": 5000.0}
    assert by_device(second, "hw.energy") == {"GPU-fake-0": 5001.0, "GPU-fake-1": 5001.0}
    [(attributes, _), _] = first["hw.power"]
    assert attributes == {
        "hw.id": "GPU-fake-0",
        "hw.name": "Fake GPU 0",
        "hw.vendor": "NVIDIA",
        "hw.type": "gpu",
        "hw.driver_version": "999.99",
    }
    [(attributes, _), _] = first["hw.gpu.utilization"]
    assert attributes["hw.gpu.task"] == "general"
    assert first["other.calls"][0][1] == 1


@pytest.mark.parametrize(
    ("env", "line"),
    [
        ({}, "no NVIDIA driver (NVML Shared Library Not Found): no GPU figures"),
        ({"FAKE_NVML_INIT": "9"}, "no NVIDIA driver (Driver Not Loaded): no GPU figures"),
        ({"FAKE_NVML_DEVICES": "0"}, "the NVIDIA driver reports no GPU: no GPU figures"),
        (
            {"FAKE_NVML_INIT": "4"},
            "the NVIDIA driver refused access (Insufficient Permissions): no GPU figures",
        ),
    ],
    ids=["this-machine-has-no-driver", "driver-not-loaded", "no-device", "access-refused"],
)
def test_no_gpu_figures_is_one_line_and_nothing_else_changes(
    driver: Path, env: dict[str, str], line: str
) -> None:
    # {} runs without the stand-in: this machine's own missing driver
    collections, lines = collect(driver if env else None, [{}, {}, {}], **env)
    assert lines == [f"WARNING llamatelemetry.gpu: {line}"]
    for index, found in enumerate(collections, start=1):
        assert gpu_names(found) == set()
        assert found["other.calls"][0][1] == index


def test_without_the_package_the_line_says_how_to_get_it(driver: Path) -> None:
    collections, lines = collect(driver, prelude="sys.modules['pynvml'] = None")
    assert lines == [
        "WARNING llamatelemetry.gpu: GPU figures need nvidia-ml-py "
        "(pip install 'llamatelemetry[gpu]'): no GPU figures"
    ]
    assert gpu_names(collections[0]) == set() and collections[0]["other.calls"][0][1] == 1


def test_a_device_lost_mid_run_is_said_once_and_the_others_go_on(driver: Path) -> None:
    collections, lines = collect(
        driver, [{}, {"FAKE_NVML_LOST": "1"}, {}, {"FAKE_NVML_LOST": ""}], FAKE_NVML_DEVICES="2"
    )
    assert lines == [
        "WARNING llamatelemetry.gpu: GPU 1 (Fake GPU 1) stopped answering (GPU is lost): "
        "its figures end"
    ]
    devices = [set(by_device(found, "hw.power")) for found in collections]
    # lost: dropped for good, even once it would answer again (its handle is stale)
    assert devices == [{"GPU-fake-0", "GPU-fake-1"}] + [{"GPU-fake-0"}] * 3
    assert [found["other.calls"][0][1] for found in collections] == [1, 2, 3, 4]


def test_a_reading_refused_is_said_once_and_left_out(driver: Path) -> None:
    collections, lines = collect(driver, [{}, {}], FAKE_NVML_DENY="power")
    assert lines == [
        "WARNING llamatelemetry.gpu: GPU 0 (Fake GPU 0) gives no power (Insufficient Permissions)"
    ]
    for found in collections:
        assert "hw.power" not in found
        assert by_device(found, "hw.temperature") == {"GPU-fake-0": 55.0}
