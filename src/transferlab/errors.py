"""The one exception type for problems a user can fix; the CLI prints it without a traceback."""


class UserError(Exception):
    """A problem with the user's config, data or environment, with a message saying how to fix it."""
