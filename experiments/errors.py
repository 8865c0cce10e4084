"""The errors a user can act on.

Every error that names what the user handed in (a config key, a data file's line, a workdir,
a checkpoint) derives from `UserError`. `launch.py` prints such an error as one line on
stderr and exits non-zero; anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """An error whose message alone tells the user what to fix."""


class Preempted(UserError):
    """SIGTERM or SIGINT stopped training after the trainer saved the state.

    Attributes:
      step: the step that was saved.
    """

    exit_code = 143  # what a shell reports for a SIGTERM'd process: schedulers read it so

    def __init__(self, step: int):
        self.step = step
        super().__init__(f"preempted at step {step}; rerun the same command to resume")
