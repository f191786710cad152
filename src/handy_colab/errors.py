"""One error hierarchy; the CLI catches `HandyColabError` once and prints it on one line."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """The exit codes of every command: the same situation gets the same code everywhere."""

    OK = 0
    FAILED = 1  # something did not work: a runtime not healthy, a server or tunnel error
    BAD_INPUT = 2  # usage: an unknown command or flag, a bad flag value, config or key file
    NOT_FOUND = 3  # nothing to act on: no runtime (or no log) of that name on this machine
    CONFLICT = 4  # the name is held by another runtime, or another `up` is starting it
    INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)
    CLOSED_PIPE = 141  # the reader of our output went away (128 + SIGPIPE, as `cat` does)


# The table `--help` and docs/cli.md show (a unit test keeps docs/cli.md in step with it).
EXIT_CODE_TEXT: dict[ExitCode, str] = {
    ExitCode.OK: "success (status: every runtime asked about is healthy)",
    ExitCode.FAILED: "failure: a runtime not healthy, a server or tunnel that did not start",
    ExitCode.BAD_INPUT: "bad input: unknown command or flag, bad flag value, config or key file",
    ExitCode.NOT_FOUND: "nothing to act on: no runtime (or log) of that name here",
    ExitCode.CONFLICT: "the runtime name is held by another runtime or another `up`",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C)",
    ExitCode.CLOSED_PIPE: "the output's reader went away (e.g. piped into head); no other error",
}


def exit_code_table() -> str:
    """The table as lines of text: `  CODE  meaning`."""
    return "\n".join(f"  {int(code):>3}  {text}" for code, text in EXIT_CODE_TEXT.items())


class HandyColabError(Exception):
    """Base of every error this package raises on purpose.

    ``str(err)`` is a single line that names what is wrong and how to fix it.
    """

    exit_code: int = ExitCode.FAILED


class ConfigError(HandyColabError):
    """The config folder, one of its fields, or a flag's value is invalid."""

    exit_code = ExitCode.BAD_INPUT


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


class NotFoundError(StateError):
    """No runtime (or no log) of that name on this machine."""

    exit_code = ExitCode.NOT_FOUND


class RuntimeConflictError(StateError):
    """The runtime's name is held by another runtime (another config folder, another `up`)."""

    exit_code = ExitCode.CONFLICT


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
