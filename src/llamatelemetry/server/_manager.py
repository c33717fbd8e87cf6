"""`ServerManager`: start, supervise and stop one real llama.cpp server for a GGUF model.

Two backends serve the same HTTP API:

- ``"binary"``: a ``llama-server`` executable (``server_path=``, ``$LLAMA_SERVER_PATH``, or
  ``llama-server`` on ``PATH``), launched with the equivalent command-line flags;
- ``"embedded"``: llama.cpp's server bundled in the ``xllamacpp`` wheel, run in a child
  Python process (`llamatelemetry.server._embedded`) because it cannot be stopped in-process.

``"auto"`` picks the binary when one is found, else the embedded server. Nothing is
downloaded, ever. Example::

    with ServerManager(port=0) as server:
        server.start("model.gguf", n_parallel=4)
        httpx.get(f"{server.url}/health")  # {"status": "ok"}

The child's output goes straight to a log file (no pipes to drain); a failed start raises
`ServerStartError` quoting that log's tail. The manager never attaches to a server it did
not start: a port that already accepts connections is an error.
"""

from __future__ import annotations

import atexit
import dataclasses
import errno
import json
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import httpx

from .. import _running as started_servers
from .._closing import Closing
from ._devices import check_gpu_options, gpu_devices
from ._options import ServerOptions, check_port, is_loopback_host
from ._parent_death import exit_with_parent, spawn
from ._server_errors import ServerError, ServerStartError

if TYPE_CHECKING:
    from llamatelemetry.api import LlamaCppClient

__all__ = ["Backend", "ServerManager"]

logger = logging.getLogger("llamatelemetry.server")

Backend = Literal["auto", "binary", "embedded"]
_BACKENDS = ("auto", "binary", "embedded")
SERVER_PATH_ENV = "LLAMA_SERVER_PATH"
GGUF_MAGIC = b"GGUF"

HEALTH_POLL_INTERVAL = 0.05  # seconds between GET /health while the model loads
PROGRESS_LOG_INTERVAL = 5.0  # seconds between "still loading" INFO lines
LOG_TAIL_LINES = 20
_BIND_RETRIES = 3  # fresh ports to try when an auto-picked one was taken meanwhile

PathLike = str | os.PathLike[str]


# -- process registry: stop whatever is still running when the interpreter exits -----

_running: set[ServerManager] = set()
_running_lock = threading.Lock()


def _stop_all_at_exit() -> None:
    with _running_lock:
        managers = list(_running)
    for manager in managers:
        try:
            manager.stop()
        except Exception:  # pragma: no cover - best effort at interpreter exit
            logger.exception("could not stop %r at exit", manager)


atexit.register(_stop_all_at_exit)


# -- small helpers ---------------------------------------------------------------------


def _connect_host(host: str) -> str:
    """The address to reach a server bound to ``host`` (wildcards mean loopback)."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host in ("::", "[::]"):
        return "::1"
    return host


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _free_port(host: str) -> int:
    """Ask the OS for a port that is free right now on ``host``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host.strip("[]"), 0))
        except OSError as exc:
            raise ServerStartError(
                f"cannot listen on host {host!r}: {exc.strerror or exc}; use an address of "
                "this machine (127.0.0.1 by default)"
            ) from exc
        port: int = sock.getsockname()[1]
        return port


def _port_accepts(host: str, port: int) -> bool:
    """True when something already accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((_connect_host(host).strip("[]"), port), timeout=0.5):
            return True
    except OSError:
        return False


def _check_gguf(path: Path, what: str) -> None:
    """Fail before launch, with the path in the message, unless ``path`` is a GGUF file."""
    if not path.exists():
        raise FileNotFoundError(2, f"{what} not found", str(path))
    if not path.is_file():
        raise ServerStartError(f"{what} {str(path)!r} is not a file")
    with path.open("rb") as fh:
        magic = fh.read(4)
    if magic != GGUF_MAGIC:
        raise ServerStartError(
            f"{what} {str(path)!r} is not a GGUF file (starts with {magic!r}, "
            f"expected {GGUF_MAGIC!r})"
        )


def _tail(path: Path, offset: int, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines written to ``path`` after byte ``offset``."""
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def _find_binary(server_path: PathLike | None) -> Path | None:
    """The llama-server executable to use, or None: explicit path, then env, then PATH."""
    if server_path is not None:
        return Path(os.fspath(server_path))
    from_env = os.environ.get(SERVER_PATH_ENV)
    if from_env:
        return Path(from_env)
    found = shutil.which("llama-server")
    return Path(found) if found else None


def _xllamacpp_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("xllamacpp") is not None


class ServerManager(Closing):
    """Starts and supervises one llama.cpp server on ``host:port``.

    ``port=0`` picks a free port at start (read it back from `port` / `url`); `restart`
    comes back on the same one. The manager is a context manager (exit stops the
    server), and every server still running when the interpreter exits is stopped.
    ``log_dir`` defaults to a fresh temporary directory that is kept, so a failed run
    can be inspected afterwards.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8080,
        backend: Backend = "auto",
        server_path: PathLike | None = None,
        log_dir: PathLike | None = None,
        *,
        models_dir: PathLike | None = None,
        models_max: int | None = None,
    ) -> None:
        if backend not in _BACKENDS:
            raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")
        if backend == "embedded" and server_path is not None:
            raise ValueError(
                "server_path is for the binary backend; drop it or use backend='binary'"
            )
        if not host:
            raise ValueError("host must be a non-empty host name or address")
        self._host = host
        self._requested_port = check_port(port)
        self._backend: Backend = backend
        self._server_path = server_path
        self._log_dir = Path(os.fspath(log_dir)) if log_dir is not None else None
        if models_dir is None and models_max is not None:
            raise ValueError("models_max is a router option: it needs models_dir")
        if models_dir is not None and backend == "embedded":
            raise ValueError(
                "router mode (models_dir) needs the llama-server binary: the embedded server "
                "has it disabled; use backend='binary' or 'auto' with a llama-server executable"
            )
        self._models_dir = None if models_dir is None else Path(os.fspath(models_dir))
        self._models_max = models_max
        self._options: ServerOptions | None = None
        self._devices: list[str] | None = None  # the build's GPUs, when asked at launch
        self._timeout = 60.0
        self._process: subprocess.Popen[bytes] | None = None
        self._resolved_backend: Literal["binary", "embedded"] | None = None
        self._log_path: Path | None = None
        self._log_offset = 0  # where the current run's output starts in the log
        self._lock = threading.RLock()
        # How many times stop() was called, counted before it waits for the lock: a start()
        # waiting for health (which holds the lock) gives up once the count moves past
        # what it saw when it was called, instead of making stop() wait it out.
        self._stops = 0
        self._stops_moved = threading.Condition(threading.Lock())
        self._stops_seen = 0
        started_servers.add(self)  # for setup_telemetry(server_processes=True)

    # -- properties ------------------------------------------------------------------

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        """The real port: the picked one after a ``port=0`` start, else the requested one."""
        return self._options.port if self._options is not None else self._requested_port

    @property
    def url(self) -> str:
        """``http://host:port`` of the server (loopback when bound to a wildcard address)."""
        if self.port == 0:
            raise ServerError("the port is picked at start(); start the server first")
        return f"http://{_url_host(_connect_host(self._host))}:{self.port}"

    @property
    def is_running(self) -> bool:
        """Whether the server process is alive (a crashed server reports False)."""
        process = self._process
        return process is not None and process.poll() is None

    @property
    def pid(self) -> int | None:
        """The server process id while it runs, else None."""
        return self._process.pid if self.is_running and self._process is not None else None

    @property
    def log_path(self) -> Path | None:
        """The file that receives the server's stdout and stderr (None before the first start)."""
        return self._log_path

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines the server wrote in its current (or last) run: where
        the reason for a crash is, once a client has found the server gone."""
        if self._log_path is None:
            return ""
        return _tail(self._log_path, self._log_offset, lines)

    @property
    def backend(self) -> str:
        """The backend in use ("binary" / "embedded"), or the requested one before start."""
        return self._resolved_backend or self._backend

    @property
    def options(self) -> ServerOptions | None:
        """The options of the last start (None before it)."""
        return self._options

    @property
    def resource_attributes(self) -> dict[str, Any]:
        """What this server runs on, as OpenTelemetry resource attributes: its backend and
        GPU options (``llama_cpp.server.*``; with them, the GPUs the build has), for
        ``setup_telemetry(resource_attributes=...)``. Empty before a start."""
        if self._options is None:
            return {}
        found: dict[str, Any] = {"llama_cpp.server.backend": self._resolved_backend}
        found.update(self._options.gpu_attributes())
        if self._devices is not None:
            found["llama_cpp.server.gpu_devices"] = list(self._devices)
        return found

    # -- lifecycle -------------------------------------------------------------------

    @property
    def is_router(self) -> bool:
        """Whether this manager runs a router over ``models_dir`` rather than one model."""
        return self._models_dir is not None

    def start(
        self,
        model_path: PathLike | None = None,
        *,
        ctx_size: int = 2048,
        n_parallel: int = 1,
        n_threads: int | None = None,
        gpu_layers: int = 0,
        split_mode: str | None = None,
        tensor_split: Sequence[float] = (),
        main_gpu: int | None = None,
        flash_attn: str | bool | None = None,
        embedding: bool = False,
        reranking: bool = False,
        pooling: str | None = None,
        lora: Sequence[PathLike] = (),
        api_key: str | None = None,
        metrics: bool = True,
        slots: bool = True,
        slot_save_path: PathLike | None = None,
        alias: str | None = None,
        chat_template: str | os.PathLike[str] | None = None,
        reasoning_format: str | None = None,
        reasoning_budget: int | None = None,
        sleep_idle_seconds: int | None = None,
        draft_model: PathLike | None = None,
        speculative: str | Sequence[str] = (),
        draft_max: int | None = None,
        draft_min: int | None = None,
        models_autoload: bool = True,
        extra_args: Sequence[str] = (),
        timeout: float = 60.0,
    ) -> None:
        """Launch the server and return once ``GET /health`` answers 200.

        Raises `FileNotFoundError` for a missing model or adapter, `ServerStartError` for
        a non-GGUF file, a busy port, a server that exits or is not ready within
        ``timeout`` seconds (the message quotes its log), `ValueError` for bad options.
        ``reranking=True`` implies ``embedding=True, pooling="rank"``. ``chat_template`` is
        a built-in template's name, Jinja text or a file (a template that supports tools
        makes ``tools`` work); ``reasoning_format`` ("none", "auto", "deepseek", ...) and
        ``reasoning_budget`` (-1: no limit, 0: no thinking) set how a reasoning model's
        thoughts come back.

        A manager made with ``models_dir`` starts a router instead (no ``model_path``): it
        loads the folder's models on demand, at most ``models_max`` at once, and the other
        options become every model's defaults. ``sleep_idle_seconds`` lets the server free
        its model after that long without work (the next request loads it again).
        ``speculative`` names draft-less n-gram types ("ngram-mod", ...) and ``draft_model``
        a small model sharing the main one's vocabulary; ``draft_max``/``draft_min`` bound
        the tokens drafted per step.

        GPUs: ``gpu_layers`` (layers offloaded; -1: all), ``split_mode`` ("none", "layer",
        "row", "tensor"), ``tensor_split`` (each GPU's share, e.g. ``(3, 1)``), ``main_gpu``
        and ``flash_attn`` ("on", "off", "auto"). Options that put the model on a GPU are
        checked against the build's own devices before launch: a CPU build, or a GPU past
        the last one, is refused (`ValueError`) with the devices it has.
        """
        seen = self._stops
        with self._lock:
            self._stops_seen = seen  # a stop() called from now on cancels this start
            if self.is_running:
                raise ServerError(f"{self!r} is already running; stop() it first")
            if self._models_dir is not None and model_path is not None:
                raise ValueError(
                    "this manager runs a router over models_dir: start() takes no model_path"
                )
            if self._models_dir is None and model_path is None:
                raise TypeError("start() needs model_path: the GGUF model file to serve")
            options = ServerOptions(
                model_path=None if model_path is None else Path(os.fspath(model_path)),
                models_dir=self._models_dir,
                models_max=self._models_max,
                models_autoload=models_autoload,
                sleep_idle_seconds=sleep_idle_seconds,
                draft_model=None if draft_model is None else Path(os.fspath(draft_model)),
                speculative=(speculative,) if isinstance(speculative, str) else tuple(speculative),
                draft_max=draft_max,
                draft_min=draft_min,
                host=self._host,
                port=self._requested_port,
                ctx_size=ctx_size,
                n_parallel=n_parallel,
                n_threads=n_threads,
                gpu_layers=gpu_layers,
                split_mode=split_mode,
                tensor_split=tuple(tensor_split),
                main_gpu=main_gpu,
                flash_attn=flash_attn,
                embedding=embedding,
                reranking=reranking,
                pooling=pooling,
                lora=tuple(Path(os.fspath(p)) for p in lora),
                api_key=api_key,
                metrics=metrics,
                slots=slots,
                slot_save_path=None if slot_save_path is None else Path(os.fspath(slot_save_path)),
                alias=alias,
                chat_template=chat_template,
                reasoning_format=reasoning_format,
                reasoning_budget=reasoning_budget,
                extra_args=tuple(extra_args),
            )
            if timeout <= 0:
                raise ValueError(f"timeout must be positive, got {timeout!r}")
            if api_key is None and not is_loopback_host(self._host):
                logger.warning(
                    "llama-server will listen on %s, reachable from other machines, without an "
                    "API key: anyone who can reach the port can use the model. Pass "
                    "api_key=... (clients send it as a Bearer token), or bind 127.0.0.1.",
                    self._host,
                )
            self._timeout = timeout  # restart() waits as long
            self._launch(options, timeout)

    def restart(self, timeout: float | None = None) -> None:
        """Stop the server and start it again with the same options, on the same port."""
        seen = self._stops
        with self._lock:
            if self._options is None:
                raise ServerError("restart() needs a previous start()")
            self._stops_seen = seen
            self._stop(10.0)
            self._launch(self._options, self._timeout if timeout is None else timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after ``timeout`` s). Idempotent.

        Called from another thread while `start` waits for the server, it cancels that
        start (which raises `ServerStartError`) rather than waiting it out."""
        with self._stops_moved:
            self._stops += 1
            self._stops_moved.notify_all()
        with self._lock:
            self._stop(timeout)

    def _stop(self, timeout: float) -> None:
        process = self._process
        if process is None:
            return
        if process.poll() is not None:
            logger.warning(
                "llama-server pid %d had already exited (%s); last lines of %s:\n%s",
                process.pid, _exit_status(process.returncode), self._log_path,
                self.log_tail(),
            )  # fmt: skip
        else:
            logger.info("stopping llama-server pid %d at %s", process.pid, self.url)
        self._terminate(timeout)

    def _terminate(self, timeout: float) -> None:
        """End the process (group) and reap it; forget it even if signalling fails."""
        process = self._process
        if process is None:
            return
        try:
            if process.poll() is None:
                _send(process, force=False)
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    logger.warning(
                        "llama-server pid %d ignored SIGTERM for %.1fs; killing it",
                        process.pid,
                        timeout,
                    )
                    _send(process, force=True)
                    process.wait()
            # Whatever the server left behind in its process group (a wrapper script's
            # children, say) must not outlive it as orphans.
            _kill_group_leftovers(process)
        finally:
            self._process = None
            with _running_lock:
                _running.discard(self)

    # -- clients and context management -------------------------------------------------

    def client(self, **kwargs: Any) -> LlamaCppClient:
        """A `LlamaCppClient` for this server, carrying its API key; ``kwargs`` go to the client."""
        from llamatelemetry.api import LlamaCppClient

        if self._options is not None:
            kwargs.setdefault("api_key", self._options.api_key)
        return LlamaCppClient(base_url=self.url, **kwargs)

    def close(self) -> None:
        """``stop()`` with its default timeout: what leaving a ``with`` block does."""
        self.stop()

    def __repr__(self) -> str:
        # Never the API key: reprs end up in logs and tracebacks.
        state = f"running pid={self.pid}" if self.is_running else "stopped"
        where = f"{_url_host(_connect_host(self._host))}:{self.port or 'auto'}"
        options = self._options
        model = None
        if options is not None:
            model = options.model_path.name if options.model_path else f"{options.models_dir}/*"
        auth = ", api_key=***" if self._options is not None and self._options.api_key else ""
        return f"<ServerManager {where} backend={self.backend} model={model!r}{auth} {state}>"

    # -- internals -------------------------------------------------------------------

    def _resolve_backend(self) -> tuple[Literal["binary", "embedded"], Path | None]:
        if self._backend in ("auto", "binary"):
            binary = _find_binary(self._server_path)
            if binary is not None:
                if not (binary.is_file() and os.access(binary, os.X_OK)):
                    raise ServerStartError(
                        f"llama-server executable {str(binary)!r} is missing or not executable"
                    )
                return "binary", binary
            if self._backend == "binary":
                raise ServerStartError(
                    "no llama-server executable found: pass server_path=..., set "
                    f"${SERVER_PATH_ENV}, put llama-server on PATH, or use backend='embedded'"
                )
        if not _xllamacpp_available():
            raise ServerStartError(
                "no llama.cpp server available: install the embedded one with "
                "`pip install 'llamatelemetry[server]'` or provide a llama-server executable"
            )
        return "embedded", None

    def _command(self, options: ServerOptions, backend: str, binary: Path | None) -> list[str]:
        if backend == "binary":
            assert binary is not None
            return [str(binary), *options.to_argv()]
        config = json.dumps(options.to_embedded_config())
        return [sys.executable, "-m", "llamatelemetry.server._embedded", config]

    def _child_env(self, options: ServerOptions) -> dict[str, str]:
        env = options.child_env(os.environ)
        # The embedded child imports llamatelemetry; make that work from a source checkout too.
        package_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        return env

    def _launch(self, options: ServerOptions, timeout: float) -> None:
        """Validate files, pick/check the port, start the child and wait until it is healthy."""
        if options.model_path is not None:
            _check_gguf(options.model_path, "model file")
        if options.models_dir is not None:
            _check_models_dir(options.models_dir)
        if options.draft_model is not None:
            _check_gguf(options.draft_model, "draft model")
        for adapter in options.lora:
            _check_gguf(adapter, "LoRA adapter")
        backend, binary = self._resolve_backend()
        if backend == "embedded":
            options.to_embedded_config()  # raises the extra_args ValueError before anything runs
        devices = gpu_devices(backend, binary) if options.asks_gpu else None
        what = "the embedded server (xllamacpp)" if backend == "embedded" else str(binary)
        check_gpu_options(options, devices, what)
        self._devices = devices
        if options.slot_save_path is not None:
            options.slot_save_path.mkdir(parents=True, exist_ok=True)

        auto_port = options.port == 0
        for attempt in range(1, _BIND_RETRIES + 1):
            run_options = options
            if auto_port:
                run_options = _replace_port(options, _free_port(options.host))
            elif _port_accepts(options.host, options.port):
                raise ServerStartError(
                    f"port {options.port} on {options.host} already accepts connections; "
                    "refusing to start a second server there (stop the other one, or pass "
                    "port=0 for a free port)"
                )
            try:
                self._spawn_and_wait(run_options, backend, binary, timeout)
                return
            except ServerStartError as exc:
                bind_failed = "couldn't bind" in exc.log_tail
                if auto_port and bind_failed and attempt < _BIND_RETRIES:
                    logger.info(
                        "auto-picked port %d was taken meanwhile; trying another", run_options.port
                    )
                    continue
                if bind_failed:
                    raise ServerStartError(
                        f"port {run_options.port} on {options.host} was taken: the server could "
                        "not bind it (another process holds it, perhaps since the check just "
                        "before launch). Stop the other one, or pass port=0 for a free port. "
                        f"{exc}",
                        log_tail=exc.log_tail,
                        returncode=exc.returncode,
                    ) from None
                raise

    def _spawn_and_wait(
        self,
        options: ServerOptions,
        backend: Literal["binary", "embedded"],
        binary: Path | None,
        timeout: float,
    ) -> None:
        if self._log_dir is None:
            self._log_dir = Path(tempfile.mkdtemp(prefix="llamatelemetry-server-"))
        self._log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self._log_dir / f"llama-server-{options.port}.log"
        command = self._command(options, backend, binary)

        with log_path.open("ab") as log:
            # The command holds no secret (the API key travels in the environment).
            log.write(f"=== llamatelemetry: {backend}: {shlex.join(command)}\n".encode())
            log.flush()
            offset = log.tell()
            popen_kwargs: dict[str, Any] = {}
            if os.name == "posix":
                # Own process group: Ctrl-C in a terminal reaches us, not the server, and
                # stop() can signal every process the server may have spawned.
                popen_kwargs["start_new_session"] = True
            if backend == "binary" and (arm := exit_with_parent()) is not None:
                # A parent killed with SIGKILL runs no clean-up: the kernel stops the
                # binary instead (the embedded backend's child watches its parent itself).
                popen_kwargs["preexec_fn"] = arm
            # Ctrl-C during Popen would leave a forked server nobody knows of: hold SIGINT
            # until the child is registered, then let a pending one land inside the
            # clean-up below.
            held = _hold_sigint()
            try:
                try:
                    env = self._child_env(options)
                    process = spawn(
                        lambda: subprocess.Popen(
                            command,
                            stdin=subprocess.DEVNULL,
                            stdout=log,
                            stderr=subprocess.STDOUT,
                            env=env,
                            close_fds=True,
                            **popen_kwargs,
                        )
                    )
                except OSError as exc:  # not executable, wrong format, ...
                    raise ServerStartError(f"could not launch {command[0]!r}: {exc}") from exc
                # The child holds its own copy of the log descriptor; ours is closed below.
                self._process = process
                self._options = options
                self._resolved_backend = backend
                self._log_path = log_path
                self._log_offset = offset
                with _running_lock:
                    _running.add(self)
            except BaseException:
                _release_sigint(held)
                raise
        logger.info(
            "starting llama-server (%s) for %s at %s, pid %d, log %s",
            backend, _served(options), self.url, process.pid, log_path,
        )  # fmt: skip
        try:
            _release_sigint(held)
            self._wait_healthy(process, options, timeout, log_path, offset)
        except BaseException:
            self._terminate(timeout=2.0)
            raise

    def _stop_called(self, within: float) -> bool:
        """Whether stop() is called (or was, since start()) within ``within`` seconds."""
        with self._stops_moved:
            return self._stops_moved.wait_for(lambda: self._stops != self._stops_seen, within)

    def _wait_healthy(
        self,
        process: subprocess.Popen[bytes],
        options: ServerOptions,
        timeout: float,
        log_path: Path,
        offset: int,
    ) -> None:
        health = f"{self.url}/health"
        started = time.monotonic()
        deadline = started + timeout
        next_progress = started + PROGRESS_LOG_INTERVAL
        last = "no answer yet"
        # trust_env=False: an HTTP(S)_PROXY in the environment must not capture loopback calls.
        with httpx.Client(timeout=httpx.Timeout(1.0, connect=0.5), trust_env=False) as http:
            while True:
                if process.poll() is not None:
                    tail = _tail(log_path, offset)
                    raise ServerStartError(
                        f"llama-server exited with status {process.returncode} before becoming "
                        "ready "
                        f"({_served(options)}); last lines of {log_path}:\n{tail}",
                        log_tail=tail,
                        returncode=process.returncode,
                    )
                try:
                    response = http.get(health)
                    last = f"HTTP {response.status_code}"
                    if response.status_code == 200 and process.poll() is None:
                        logger.info(
                            "llama-server ready at %s after %.2fs (pid %d)",
                            self.url, time.monotonic() - started, process.pid,
                        )  # fmt: skip
                        return
                except httpx.TransportError as exc:
                    last = type(exc).__name__
                now = time.monotonic()
                if now >= deadline:
                    tail = _tail(log_path, offset)
                    raise ServerStartError(
                        f"llama-server at {self.url} was not ready within {timeout:g}s "
                        f"(last health check: {last}); last lines of {log_path}:\n{tail}",
                        log_tail=tail,
                        returncode=None,
                    )
                if now >= next_progress:
                    logger.info(
                        "still waiting for llama-server at %s (%.0fs, last health check: %s)",
                        self.url, now - started, last,
                    )  # fmt: skip
                    next_progress = now + PROGRESS_LOG_INTERVAL
                if self._stop_called(HEALTH_POLL_INTERVAL):
                    raise ServerStartError(
                        f"start() of llama-server at {self.url} was cancelled by stop()",
                        log_tail=_tail(log_path, offset),
                        returncode=None,
                    )


def _check_models_dir(folder: Path) -> None:
    if not folder.exists():
        raise FileNotFoundError(errno.ENOENT, "models_dir not found", str(folder))
    if not folder.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "models_dir is not a folder", str(folder))
    if not any(folder.rglob("*.gguf")):
        logger.warning(
            "%s holds no .gguf file: the router will serve no model until one is added "
            "(GET /models?reload=1 finds it)",
            folder,
        )


def _served(options: ServerOptions) -> str:
    """What a server serves, for messages: its model file, or a router's folder."""
    if options.model_path is not None:
        return f"model {options.model_path.name!r}"
    return f"router over {str(options.models_dir)!r}"


def _hold_sigint() -> Any:
    """Block SIGINT on the main thread (POSIX); returns what to restore."""
    if os.name != "posix" or threading.current_thread() is not threading.main_thread():
        return None
    return signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})


def _release_sigint(held: Any) -> None:
    if held is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def _replace_port(options: ServerOptions, port: int) -> ServerOptions:
    return dataclasses.replace(options, port=port)


def _exit_status(returncode: int | None) -> str:
    """``status 1`` or ``killed by SIGKILL``: how a child process ended."""
    if returncode is not None and returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"status {returncode}"


def _kill_group_leftovers(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL what is left of the server's process group once its leader has exited
    (POSIX; the group exists only while a member does, so usually there is nothing)."""
    if os.name != "posix":
        return
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _send(process: subprocess.Popen[bytes], *, force: bool) -> None:
    """SIGTERM (or SIGKILL) the server's whole process group; plain terminate/kill elsewhere."""
    try:
        if os.name == "posix":
            os.killpg(process.pid, signal.SIGKILL if force else signal.SIGTERM)
        elif force:
            process.kill()
        else:
            process.terminate()
    except ProcessLookupError:
        pass
