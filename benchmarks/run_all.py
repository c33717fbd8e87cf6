"""Run every benchmark in sequence and print one results table (Markdown) at the end.

    python benchmarks/run_all.py [--quick] [--only client,sse,...] [--output results.md]

Each script starts its own tiny-model llama.cpp server and prints its own report (shown as
it runs); this collects their verdict lines. ``--quick`` runs fewer rounds (a smoke test,
not a measurement).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: script, its full arguments, its --quick arguments
BENCHMARKS = {
    "client": ("bench_client.py", [], ["--rounds", "3", "--ops", "10", "--stream-ops", "2"]),
    "sse": ("bench_sse.py", [], ["--rounds", "3", "--ops", "40"]),
    "telemetry": ("bench_telemetry.py", [], ["--rounds", "3", "--ops", "10"]),
    "async": ("bench_async.py", [], ["--rounds", "2", "--calls", "32"]),
    "server_start": ("bench_server_start.py", [], ["--rounds", "3"]),
    "generator": ("bench_generator.py", [], ["--rounds", "1", "--requests", "64"]),
    "cpu": (
        "bench_cpu.py",
        [],
        [
            "--rounds",
            "2",
            "--streams",
            "1",
            "--tokens",
            "100",
            "--calls",
            "20",
            "--concurrent",
            "16",
        ],
    ),
}

# "  per call, ours / raw httpx      1.032   target <= 1.10   OK"
VERDICT = re.compile(
    r"^  (?P<name>\S.*?)\s+(?P<value>\d+\.\d+)\s+target (?P<op><=|>=) "
    r"(?P<target>\d+\.\d+)\s+(?P<ok>OK|MISS)\s*$"
)
# "  per stream, ours / openai SDK    0.998   (for information)"
INFO = re.compile(r"^  (?P<name>\S.*?)\s+(?P<value>\d+\.\d+)\s+\(for information\)\s*$")
# bench_telemetry.py: "verdict: per call 1.012 OK, per stream 1.003 OK"
TELEMETRY = re.compile(r"per (?P<what>call|stream) (?P<value>\d+\.\d+) (?P<ok>OK|OVER)")
# bench_async.py: "  AsyncLlamaCppClient    612.3 calls/s   ratio 0.953  (target >= 0.90: OK)"
ASYNC = re.compile(
    r"ratio (?P<value>\d+\.\d+)\s+\(target >= (?P<target>\d+\.\d+): "
    r"(?P<ok>OK|UNDER)\)"
)


@dataclass
class Row:
    benchmark: str
    measure: str
    value: str
    target: str
    ok: bool | None  # None: shown for information, no target


def parse(name: str, output: str) -> list[Row]:
    rows = []
    title = ""
    for line in output.splitlines():
        if line and not line.startswith(" "):
            title = line.strip()
        if name == "telemetry" and line.startswith("verdict:"):
            for m in TELEMETRY.finditer(line):
                rows.append(
                    Row(
                        name,
                        f"instrumented / bare, per {m['what']}",
                        m["value"],
                        "<= 1.10",
                        m["ok"] == "OK",
                    )
                )
        elif name == "async" and (m := ASYNC.search(line)):
            rows.append(
                Row(
                    name,
                    f"ours / raw httpx.AsyncClient throughput, {title}",
                    m["value"],
                    f">= {m['target']}",
                    m["ok"] == "OK",
                )
            )
        elif m := VERDICT.match(line):
            rows.append(
                Row(name, m["name"], m["value"], f"{m['op']} {m['target']}", m["ok"] == "OK")
            )
        elif m := INFO.match(line):
            rows.append(Row(name, m["name"], m["value"], "(information)", None))
    return rows


def describe_machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(
                line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")
            )
    except (OSError, StopIteration):
        pass
    versions = []
    for package in ("llamatelemetry", "httpx", "openai", "pydantic", "xllamacpp"):
        try:
            versions.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    return (
        f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
        f"{platform.python_implementation()} {platform.python_version()}; " + ", ".join(versions)
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer rounds: a smoke test")
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(BENCHMARKS)}")
    parser.add_argument("--output", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    chosen = args.only.split(",") if args.only else list(BENCHMARKS)
    unknown = set(chosen) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")

    rows: list[Row] = []
    failed: list[str] = []
    started = time.perf_counter()
    for name in chosen:
        script, full, quick = BENCHMARKS[name]
        argv = [sys.executable, str(HERE / script), *(quick if args.quick else full)]
        print(f"\n=== {script} {' '.join(argv[2:])}", flush=True)
        begun = time.perf_counter()
        process = subprocess.Popen(
            argv, cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert process.stdout is not None
        lines = []
        for line in process.stdout:
            print(line, end="", flush=True)
            lines.append(line)
        if process.wait() != 0:
            failed.append(script)
            print(f"=== {script} FAILED (exit status {process.returncode})")
            continue
        found = parse(name, "".join(lines))
        if not found:
            failed.append(script)
        rows.extend(found)
        print(f"=== {script}: {time.perf_counter() - begun:.0f} s")

    date = datetime.date.today().isoformat()
    table = [
        f"Machine: {describe_machine()}. Date: {date}."
        + (" (--quick: not a measurement)" if args.quick else ""),
        "",
        "| benchmark | measure | result | target | |",
        "| --- | --- | ---: | --- | --- |",
        *(
            f"| {r.benchmark} | {r.measure} | {r.value} | {r.target} | "
            f"{'' if r.ok is None else 'OK' if r.ok else '**MISS**'} |"
            for r in rows
        ),
    ]
    print(f"\n=== all done in {time.perf_counter() - started:.0f} s\n")
    print("\n".join(table))
    if args.output:
        args.output.write_text("\n".join(table) + "\n")
    if failed:
        print(f"\nfailed or printed no verdict: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
