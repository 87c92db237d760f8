"""The environment of an app process a daemon starts: an allow-list, never the daemon's own.

A daemon's environment holds what the daemon needs, often secrets (cloud credentials, the
AppIo secret, tokens of other tools); an app process runs the user's code, which could print
or ship anything it can read. So `app_environment` passes on only the names below, those the
operator adds (``--app-env NAME`` on either daemon), and what the launcher sets itself (the
run token, ``PYTHONUNBUFFERED``, the FAB limits); everything else stays behind.

What is passed, and why each is safe and needed:

- **the process basics**: ``PATH``, ``HOME``, ``USER``, ``LOGNAME``, ``LANG``, ``LANGUAGE``,
  ``LC_*``, ``TZ``, ``TMPDIR``, ``TERM``: where programs and the home directory are, the
  locale, the time zone, where temporary files go. No secrets.
- **the interpreter**: ``PYTHONPATH``, ``PYTHONHOME``, ``VIRTUAL_ENV``, ``CONDA_PREFIX`` (the
  child runs the daemon's Python and must find the same packages), and behaviour switches that
  hold no data: ``PYTHONHASHSEED``, ``PYTHONUTF8``, ``PYTHONIOENCODING``,
  ``PYTHONDONTWRITEBYTECODE``, ``PYTHONNOUSERSITE``, ``PYTHONWARNINGS``,
  ``PYTHONFAULTHANDLER``, ``PYTHONDEVMODE``.
- **shared libraries**: ``LD_LIBRARY_PATH`` (GPU stacks such as CUDA are often found only
  through it). ``LD_PRELOAD`` is not passed: it injects code and is rarely needed.
- **trusted CAs**: ``SSL_CERT_FILE``, ``SSL_CERT_DIR``, ``REQUESTS_CA_BUNDLE``,
  ``GRPC_DEFAULT_SSL_ROOTS_FILE_PATH``: public certificates, needed behind a corporate CA.
- **accelerators and threads**: which devices and how many threads the app may use:
  ``CUDA_VISIBLE_DEVICES``, ``CUDA_DEVICE_ORDER``, ``NVIDIA_VISIBLE_DEVICES``,
  ``HIP_VISIBLE_DEVICES``, ``ROCR_VISIBLE_DEVICES``, ``GPU_DEVICE_ORDINAL``,
  ``ZE_AFFINITY_MASK``, ``ONEAPI_DEVICE_SELECTOR``, ``HABANA_VISIBLE_DEVICES``,
  ``NEURON_RT_VISIBLE_CORES``, ``TPU_VISIBLE_CHIPS``, ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``,
  ``OPENBLAS_NUM_THREADS``, ``NUMEXPR_NUM_THREADS``, ``VECLIB_MAXIMUM_THREADS``.
- **caches**: ``XDG_CACHE_HOME``, ``XDG_CONFIG_HOME``, ``XDG_DATA_HOME`` (where libraries keep
  downloaded models and data sets).
- **Corolla's settings of the app process itself**: ``COROLLA_HOME`` (where apps are
  installed), ``COROLLA_GRPC_KEEPALIVE_SECONDS`` (both ends of the AppIo channel must agree),
  ``COROLLA_APPS_MAX_AGE`` (garbage collection of installs) and the FAB limits
  ``COROLLA_MAX_FAB_*`` (`corolla.fab.limits`). No other ``COROLLA_*`` variable: the rest are
  the daemons' options (an app process started by its daemon ignores them, and some name the
  daemon's key and secret files).

Never passed, even if named with ``--app-env``: ``COROLLA_APPIO_SECRET`` (lets its holder ask
the daemon for any run's work) and ``COROLLA_APP_TOKEN`` (the launcher sets the child's own).
Not passed unless added: everything else, notably cloud and tool credentials
(``AWS_*``, ``GOOGLE_APPLICATION_CREDENTIALS``, ``HF_TOKEN``, ``SSH_AUTH_SOCK``, ...) and the
proxy variables (``http_proxy``, ``https_proxy``, ``no_proxy``, ...): proxy URLs often carry a
password, and gRPC would also route the app's own AppIo channel through the proxy. An app that
needs the network through a proxy gets it with ``--app-env https_proxy --app-env no_proxy``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

from corolla.common.appio import SECRET_ENV, TOKEN_ENV

ALLOWED = frozenset(
    {
        # the process basics
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        "TERM",
        # the interpreter
        "PYTHONPATH",
        "PYTHONHOME",
        "VIRTUAL_ENV",
        "CONDA_PREFIX",
        "PYTHONHASHSEED",
        "PYTHONUTF8",
        "PYTHONIOENCODING",
        "PYTHONDONTWRITEBYTECODE",
        "PYTHONNOUSERSITE",
        "PYTHONWARNINGS",
        "PYTHONFAULTHANDLER",
        "PYTHONDEVMODE",
        # shared libraries
        "LD_LIBRARY_PATH",
        # trusted CAs
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
        "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH",
        # accelerators
        "CUDA_VISIBLE_DEVICES",
        "CUDA_DEVICE_ORDER",
        "NVIDIA_VISIBLE_DEVICES",
        "HIP_VISIBLE_DEVICES",
        "ROCR_VISIBLE_DEVICES",
        "GPU_DEVICE_ORDINAL",
        "ZE_AFFINITY_MASK",
        "ONEAPI_DEVICE_SELECTOR",
        "HABANA_VISIBLE_DEVICES",
        "NEURON_RT_VISIBLE_CORES",
        "TPU_VISIBLE_CHIPS",
        # threads
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "NUMEXPR_NUM_THREADS",
        "VECLIB_MAXIMUM_THREADS",
        # caches
        "XDG_CACHE_HOME",
        "XDG_CONFIG_HOME",
        "XDG_DATA_HOME",
        # Corolla's settings of the app process itself
        "COROLLA_HOME",
        "COROLLA_GRPC_KEEPALIVE_SECONDS",
        "COROLLA_APPS_MAX_AGE",
        "COROLLA_MAX_FAB_BYTES",
        "COROLLA_MAX_FAB_UNPACKED_BYTES",
        "COROLLA_MAX_FAB_ENTRIES",
        "COROLLA_MAX_FAB_COMPRESSION_RATIO",
    }
)
ALLOWED_PREFIXES = ("LC_",)
NEVER = frozenset({SECRET_ENV, TOKEN_ENV})
"""Not passed from the daemon's environment even when named with ``--app-env``."""

_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def app_environment(
    extra_names: Iterable[str] = (),
    explicit: Mapping[str, str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of an app process: the allowed names (and ``extra_names``, the
    operator's ``--app-env``) that ``environ`` (default `os.environ`) sets, then ``explicit``
    (what the launcher sets itself, e.g. the run token), which wins."""
    source = os.environ if environ is None else environ
    extra = frozenset(extra_names) - NEVER
    env = {
        name: value
        for name, value in source.items()
        if name not in NEVER
        and (name in ALLOWED or name in extra or name.startswith(ALLOWED_PREFIXES))
    }
    env.update(explicit or {})
    return env


def env_names(text: str) -> tuple[str, ...]:
    """Option value: ``NAME`` or ``NAME,OTHER`` (repeated flags arrive joined with commas);
    raises ValueError for a name that is not a variable name, or one never passed on."""
    names: list[str] = []
    for raw in text.split(","):
        name = raw.strip()
        if not name:
            continue
        if not _NAME_RE.fullmatch(name):
            raise ValueError(f"not an environment variable name: {name!r}")
        if name in NEVER:
            raise ValueError(f"{name} is never passed to app processes")
        if name not in names:
            names.append(name)
    return tuple(names)
