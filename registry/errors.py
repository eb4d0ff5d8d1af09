"""What the registry raises: UserErrors whose message names the problem and the fix."""

from core import errors


class RegistryError(errors.UserError):
    """A registry request that cannot be carried out as asked."""


class InvalidName(RegistryError):
    """A model name, label or version that could not name a folder or label safely."""


class ExportNotFound(RegistryError):
    """The push source holds no SavedModel."""


class InvalidBlessing(RegistryError):
    """A blessing.json that is not {"blessed": true|false, ...}."""


class NotFound(RegistryError):
    """No such store, model or version."""


class NotBlessed(RegistryError):
    """Promoting to production a version its evaluation did not bless."""


class VersionLabelled(RegistryError):
    """Archiving a version that a label still points at."""


class NothingToRollBack(RegistryError):
    """A label with no earlier version to go back to."""
