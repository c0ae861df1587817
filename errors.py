"""The one exception type for mistakes a user can fix (bad config value, missing file, ...).

Raise `UserError('what is wrong; how to fix it')` anywhere; `launch.py` prints the message on one
line of stderr, without a traceback, and exits with status 2.
"""


class UserError(Exception):
  """A problem in the user's input, with a message that names the fix."""
