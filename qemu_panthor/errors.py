"""Errors that reach the user as one clear line (no traceback)."""


class UserError(Exception):
    """A problem the user can fix; printed as ``qemu-panthor: <message>`` with exit code 2."""

    def __init__(self, message: str, *, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code
