"""One error hierarchy; the CLI catches `HandyColabError` once and prints it on one line."""

from __future__ import annotations


class HandyColabError(Exception):
    """Base of every error this package raises on purpose.

    ``str(err)`` is a single line that names what is wrong and how to fix it.
    """

    exit_code = 1


class ConfigError(HandyColabError):
    """The config folder or one of its fields is invalid."""

    exit_code = 2


class AliasConflictError(ConfigError):
    """A descriptor claims an ssh alias or pin that another runtime (or the user) holds."""


class KeyFileError(ConfigError):
    """A key file is missing, unreadable, encrypted or of the wrong kind."""


class ServerError(HandyColabError):
    """The runtime's SSH server could not be installed or started."""


class TunnelError(HandyColabError):
    """The reverse tunnel to the relay could not be opened."""

    def __init__(
        self, message: str, *, permanent: bool = False, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.permanent = permanent
        # Seconds the far end asked us to wait (a rate limit), whatever the usual back-off.
        self.retry_after = retry_after


class StateError(HandyColabError):
    """Runtime state (pid files, state.json) is missing or inconsistent."""


class ClientConfigError(HandyColabError):
    """The laptop's ssh config or known_hosts could not be written safely."""


class RelaySetupError(HandyColabError):
    """`relay-setup --apply` could not set up the relay account or its sshd settings."""


class PlatformError(HandyColabError):
    """A notebook platform's own service (Drive mount, secrets) failed or is unavailable."""


class BinaryError(HandyColabError):
    """An external program a route needs (cloudflared) is missing, unverifiable or refused."""


class EditorError(HandyColabError):
    """VS Code (or the OS's link opener) could not be found or started."""
