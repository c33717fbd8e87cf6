"""The GPU figures (``hw.*``): exact readings through the real nvidia-ml-py bindings from
a stand-in driver (tests/gpu.py), and every way of having none (the real missing driver of
this machine, no device, access refused, a device lost mid-run, the package missing): one
line each, no GPU figures, and nothing else changes.

The stand-in's scenarios run one after another in one fresh interpreter (the driver reads
its behaviour from the environment at every call; the once-per-process lines are
forgotten between scenarios); this machine's own missing driver in another."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ..gpu import build_fake_nvml, run_python

# Each scenario: setup_telemetry(gpu=True), then one collection per step (the step's
# environment set first), with another metric of the same pipeline that must be
# unaffected; the collections' points and the llamatelemetry.gpu lines, as JSON.
SCRIPT = """
import json, logging, os, sys
said = []

class Keep(logging.Handler):
    def emit(self, record):
        said.append(f"{{record.levelname}} {{record.name}}: {{record.getMessage()}}")

logging.getLogger("llamatelemetry.gpu").addHandler(Keep())
logging.getLogger("llamatelemetry.gpu").setLevel(logging.INFO)
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from llamatelemetry import _nvml
from llamatelemetry.telemetry import setup_telemetry
import pynvml

results = {{}}
for name, env, steps, missing in json.loads({scenarios!r}):
    for key in [k for k in os.environ if k.startswith("FAKE_NVML_")]:
        del os.environ[key]
    os.environ.update(env)
    _nvml._said.clear()
    said.clear()
    sys.modules["pynvml"] = None if missing else pynvml
    reader = InMemoryMetricReader()
    handle = setup_telemetry("gpus", set_global=False, metric_readers=[reader], gpu=True)
    other = handle.meter_provider.get_meter("other").create_counter("other.calls")
    collections = []
    for step in steps:
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
    results[name] = [collections, list(said)]
print(json.dumps(results))
"""
# (name, environment, steps, the package missing); the first reads the energy counters
# from their start
SCENARIOS = [
    ("readings", {"FAKE_NVML_DEVICES": "2"}, [{}, {}], False),
    ("not-loaded", {"FAKE_NVML_INIT": "9"}, [{}, {}, {}], False),
    ("no-device", {"FAKE_NVML_DEVICES": "0"}, [{}, {}, {}], False),
    ("refused", {"FAKE_NVML_INIT": "4"}, [{}, {}, {}], False),
    ("no-package", {}, [{}], True),
    ("lost", {"FAKE_NVML_DEVICES": "2"},
     [{}, {"FAKE_NVML_LOST": "1"}, {}, {"FAKE_NVML_LOST": ""}], False),
    ("power-refused", {"FAKE_NVML_DENY": "power"}, [{}, {}], False),
]  # fmt: skip

Outcome = tuple[list[dict[str, Any]], list[str]]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    driver = build_fake_nvml(tmp_path_factory.mktemp("nvidia"))
    found, _ = run_python(SCRIPT.format(scenarios=json.dumps(SCENARIOS)), driver)
    code = SCRIPT.format(scenarios=json.dumps([("this-machine", {}, [{}, {}, {}], False)]))
    mine, _ = run_python(code, None)  # no stand-in: this machine's own (missing) driver
    return {name: (collections, lines) for name, (collections, lines) in {**found, **mine}.items()}


def gpu_names(found: dict[str, Any]) -> set[str]:
    return {name for name in found if name.startswith("hw.")}


def by_device(found: dict[str, Any], name: str) -> dict[str, float]:
    return {attributes["hw.id"]: value for attributes, value in found.get(name, [])}


def test_every_reading_is_the_driver_s_own(outcomes: dict[str, Outcome]) -> None:
    [first, second], lines = outcomes["readings"]
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
    ("scenario", "line"),
    [
        ("this-machine", "no NVIDIA driver (NVML Shared Library Not Found): no GPU figures"),
        ("not-loaded", "no NVIDIA driver (Driver Not Loaded): no GPU figures"),
        ("no-device", "the NVIDIA driver reports no GPU: no GPU figures"),
        ("refused", "the NVIDIA driver refused access (Insufficient Permissions): no GPU figures"),
        ("no-package", "GPU figures need nvidia-ml-py (pip install 'llamatelemetry[gpu]'): "
                       "no GPU figures"),
    ],
)  # fmt: skip
def test_no_gpu_figures_is_one_line_and_nothing_else_changes(
    outcomes: dict[str, Outcome], scenario: str, line: str
) -> None:
    collections, lines = outcomes[scenario]
    assert lines == [f"WARNING llamatelemetry.gpu: {line}"]
    for index, found in enumerate(collections, start=1):
        assert gpu_names(found) == set()
        assert found["other.calls"][0][1] == index


def test_a_device_lost_mid_run_is_said_once_and_the_others_go_on(
    outcomes: dict[str, Outcome],
) -> None:
    collections, lines = outcomes["lost"]
    assert lines == [
        "WARNING llamatelemetry.gpu: GPU 1 (Fake GPU 1) stopped answering (GPU is lost): "
        "its figures end"
    ]
    devices = [set(by_device(found, "hw.power")) for found in collections]
    # lost: dropped for good, even once it would answer again (its handle is stale)
    assert devices == [{"GPU-fake-0", "GPU-fake-1"}] + [{"GPU-fake-0"}] * 3
    assert [found["other.calls"][0][1] for found in collections] == [1, 2, 3, 4]


def test_a_reading_refused_is_said_once_and_left_out(outcomes: dict[str, Outcome]) -> None:
    collections, lines = outcomes["power-refused"]
    assert lines == [
        "WARNING llamatelemetry.gpu: GPU 0 (Fake GPU 0) gives no power (Insufficient Permissions)"
    ]
    for found in collections:
        assert "hw.power" not in found
        assert by_device(found, "hw.temperature") == {"GPU-fake-0": 55.0}
