"""The error a user can cause with an option; every layer raises it, the CLI prints it as one line."""


class ConfigError(ValueError):
    """An option a user set that cannot work; the CLI prints it as one line and exits with code 2."""
