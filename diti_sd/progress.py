"""The progress bars the libraries draw of their own (loading weights, downloads), turned off for a
block and then restored: ``--no-progress`` and ``progress=False`` reach them through here."""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from contextlib import contextmanager

# the libraries' own progress bars: (module, "is on", "turn off", "turn on"); huggingface_hub's also
# governs transformers' in its current releases
_SWITCHES = (("huggingface_hub.utils", "are_progress_bars_disabled", "disable_progress_bars", "enable_progress_bars"),
             ("transformers.utils.logging", "is_progress_bar_enabled", "disable_progress_bar", "enable_progress_bar"),
             ("diffusers.utils.logging", "is_progress_bar_enabled", "disable_progress_bar", "enable_progress_bar"),
             ("datasets.utils.logging", "is_progress_bar_enabled", "disable_progress_bar", "enable_progress_bar"))
_ENV = ("HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS")


def _bars_on(module, is_on: str) -> bool:
    value = getattr(module, is_on)()
    return not value if is_on.endswith("disabled") else bool(value)


@contextmanager
def quiet_libraries(quiet: bool = True):
    """The bars diffusers, transformers, huggingface_hub and datasets draw off for the block (``quiet``),
    then as they were. Libraries imported later read the environment; those already imported are
    switched, so nothing heavy is imported here."""
    if not quiet:
        yield
        return
    saved_env = {name: os.environ.get(name) for name in _ENV}
    before = {}
    for module, is_on, off, _ in _SWITCHES:
        if module.split(".")[0] in sys.modules:
            lib = importlib.import_module(module)
            before[module] = _bars_on(lib, is_on)
            getattr(lib, off)()
    os.environ.update(dict.fromkeys(_ENV, "1"))
    try:
        yield
    finally:
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        env_quiet = any(saved_env.values())
        for module, _, _, on in _SWITCHES:
            # on again if it was on, or if the library came in during the block while bars were the default
            if module.split(".")[0] in sys.modules and before.get(module, not env_quiet):
                # huggingface_hub imported inside the block read the variable then, and warns that it
                # wins over the call: its bars stay off for this process, which is all the warning says
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)
                    getattr(importlib.import_module(module), on)()
