"""The one exception type for bad user input: the CLI prints its message on one line, exits 2."""


class UserError(Exception):
    """Bad input (flag, config value, file, dataset). The message is one clear line."""
