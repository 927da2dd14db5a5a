"""User-facing error types. Every message is one line: what is wrong, where, and how to fix it."""


class UserError(Exception):
    """A mistake in the user's input (file, config field, model id). Printed as one line, exit code 2."""


class ConfigError(UserError, ValueError):
    """A configuration value or file that cannot be used; the message names the file or field."""
