"""The user's own Python, named in the config: a module path or a .py file, imported once."""

import importlib
import importlib.util
import re
from pathlib import Path
from types import ModuleType

from core import errors


class UserCodeError(errors.UserError):
    """A config key names user code that cannot be imported or used; the message says which."""


def load_module(location: str, key: str) -> ModuleType:
    """An importable module path (my_package.losses) or a .py file path, for config key `key`."""
    try:
        if not location.endswith(".py"):
            return importlib.import_module(location)
        path = Path(location)
        if not path.is_file():
            raise UserCodeError(
                f"{key}: file not found: {path} (relative paths start in {Path.cwd()})"
            )
        name = "imgclf_user_" + re.sub(r"\W", "_", path.stem)
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    except UserCodeError:
        raise
    except ModuleNotFoundError as error:
        # The named module itself is missing, not one that it imports.
        if error.name and location.startswith(error.name):
            raise UserCodeError(
                f"{key}: no module named {location!r}; give a module importable from the "
                "working directory or PYTHONPATH (my_package.module), or a .py file"
            ) from None
        raise UserCodeError(
            f"{key}: importing {location} failed: ModuleNotFoundError: {error}"
        ) from None
    except Exception as error:
        raise UserCodeError(
            f"{key}: importing {location} failed: {type(error).__name__}: {error}"
        ) from None


def load_function(location: str, key: str):
    """`module:function` or `path/file.py:function` -> the callable it names."""
    module_location, _, name = location.rpartition(":")
    module = load_module(module_location, key)
    function = getattr(module, name, None)
    if not callable(function):
        found = "nothing" if function is None else f"a {type(function).__name__}"
        raise UserCodeError(f"{key}: {module_location} has no function {name!r} (found {found})")
    return function
