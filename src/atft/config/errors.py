"""The one exception of the configuration package: ``ConfigError``, a problem the user must fix.

It lives on its own so that the validation engine (``atft.config.validation``) and the loader
(``atft.config.loader``) raise the same class without either depending on the other.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration problem: an unknown key, a badly typed or out-of-range value, a missing preset.

    The message is one line meant for the user: it names the dotted key, where the value came from
    (preset file, environment variable or override token) and what would have been accepted.
    """

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key
