"""The error that says what a user asked for cannot be done, for the library and the command line alike."""


class InputError(Exception):
    """A problem with what the user asked for: at the command line, one line and exit code 2."""
