"""Errors the library raises for bad settings, worded by the command line as flags (no TensorFlow)."""

import contextlib


class ConfigError(ValueError):
    """A setting no run can use; ``field`` names it (``lr``), and CLIs show it as the flag (``--lr``).

    >>> str(ConfigError("batch_size", "must be an integer >= 2; got 0"))
    'batch_size must be an integer >= 2; got 0'
    >>> ConfigError("batch_size", "must be an integer >= 2; got 0").as_flag()
    '--batch-size must be an integer >= 2; got 0'
    """

    def __init__(self, field, message):
        super().__init__(f"{field} {message}")
        self.field, self.message = field, message

    def as_flag(self):
        """The message with the field written as its command-line flag."""
        return f"--{self.field.replace('_', '-')} {self.message}"


class InputError(ValueError):
    """A file, folder or environment setting the user gave that cannot be used; the message names it and the
    problem. Every command prints it as one line (exit 1), with no traceback (``c2am_tf.cli.run_command``).

    >>> str(InputError("m.tflite: not a TFLite model (truncated)"))
    'm.tflite: not a TFLite model (truncated)'
    """


class RunError(RuntimeError):
    """Work that started and could not finish (a loss that diverged); the message says why and what was kept.
    Every command prints it as one line (exit 1)."""


@contextlib.contextmanager
def as_input_error(*kinds):
    """Inside it, an exception of ``kinds`` (default: ``OSError``, ``ValueError``) from reading the user's data
    becomes an ``InputError`` with its message (one line, exit 1, in every command); a ``ConfigError`` or an
    ``InputError`` passes unchanged (a flag's error stays the flag's).

    >>> with as_input_error():
    ...     raise FileNotFoundError("photos/: no such folder")
    Traceback (most recent call last):
    ...
    c2am_tf.utils.errors.InputError: photos/: no such folder
    """
    try:
        yield
    except (ConfigError, InputError):
        raise
    except kinds or (OSError, ValueError) as err:
        raise InputError(str(err)) from err


def reason(err):
    """An exception's first line for a one-line message (its type where it says nothing).

    >>> reason(ValueError("bad magic\\nat byte 4")), reason(KeyError())
    ('bad magic', 'KeyError')
    """
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def differences(theirs, ours):
    """What two runs' settings (dicts) disagree on, for an error message: ``key theirs -> ours``, ours first.

    >>> print(differences({"lr": 0.01, "seed": 1}, {"lr": 0.02, "seed": 1, "size": 64}))
    lr 0.01 -> 0.02, size '(unset)' -> 64
    """
    keys = sorted(set(ours) | set(theirs), key=lambda k: (k not in ours, k))
    return ", ".join(f"{k} {theirs.get(k, '(unset)')!r} -> {ours.get(k, '(unset)')!r}"
                     for k in keys if theirs.get(k, "(unset)") != ours.get(k, "(unset)"))
