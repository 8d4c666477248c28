"""File permissions as `open()` would create them."""

from __future__ import annotations

import os
import threading

_UMASK_LOCK = threading.Lock()


def default_file_mode() -> int:
    """0o666 minus the process's umask: the mode `open(path, 'w')` gives a new file.

    Files written through `tempfile.mkstemp` (0600) or safetensors (0600) get this mode before
    they replace their target, so models, checkpoints and results are shared like any other
    file the user writes."""
    return 0o666 & ~current_umask()


def current_umask() -> int:
    try:  # Linux >= 4.7: read without changing it
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:  # os.umask can only be read by setting it
        umask = os.umask(0o022)
        os.umask(umask)
    return umask
