"""TensorFlow's C++ log lines, kept out of a command's output unless asked for.

TensorFlow 2.21 writes its native logs through absl before absl is initialized, so ``TF_CPP_MIN_LOG_LEVEL``
no longer silences them: every command printed lines like ``I0000 00:00:... port.cc:153] oneDNN custom
operations are on`` and ``E0000 ... cuda_platform.cc:52] failed call to cuInit``. ``quiet_native_logs`` passes
the process's stderr (file descriptor 2, which the C++ side writes to) through a small filter process that drops
those lines and forwards everything else as it comes: Python's warnings, error lines, progress bars (partial
lines end with ``\\r``). A fatal line (``F...``) always passes. The filter is a forked process, not a thread, so a
crash of the command still reaches the terminal. Numpy-free, TensorFlow-free: it runs before either is imported.
"""

import atexit
import os
import re
import signal
import sys
import time

# the variable that turns the filter off (``c2am-tf --verbose`` sets it; the scripts under train/ read it too)
SHOW_ENV = "C2AM_TF_NATIVE_LOGS"
_NATIVE = re.compile(rb"^(?:[IWE]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [^\]\s]+:\d+\] "
                     rb"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
                     rb"|To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags"
                     rb"|\t \[\[\{\{node [^}]*\}\}\]\]$)")  # the op a native warning's previous line was about
# a partial line that may still become a native log line is held until its end; any other is forwarded at once
_MAYBE_NATIVE = (b"I", b"W", b"E", b"T", b"\t")


_FILTER = None  # the filter's process id, once it runs


def native_log_line(line):
    """Whether ``line`` (bytes, without its end) is one of TensorFlow's native log lines.

    >>> native_log_line(b"I0000 00:00:1796672554.445794   26113 port.cc:153] oneDNN custom operations are on.")
    True
    >>> native_log_line(b"c2am-tf fit: error: --lr must be a finite number > 0; got nan")
    False
    """
    return bool(_NATIVE.match(line))


def filtered(buffer, final=False):
    """(what to forward, what to hold) of ``buffer`` (bytes): every complete line (ended by ``\\n`` or ``\\r``) but
    the native log lines, and the partial line at its end unless it may still become one (or ``final``).

    >>> filtered(b"W0000 00:00:1.5 12 x.cc:1] noise\\n 3/10 [==>...]\\r 4/10")
    (b' 3/10 [==>...]\\r 4/10', b'')
    >>> filtered(b"Epoch 1/5")
    (b'', b'Epoch 1/5')
    """
    out, start = [], 0
    for match in re.finditer(rb"[\r\n]", buffer):
        line = buffer[start:match.end()]
        if not native_log_line(line[:-1]):
            out.append(line)
        start = match.end()
    rest = buffer[start:]
    if rest and (final or not rest.startswith(_MAYBE_NATIVE)):
        if not native_log_line(rest):
            out.append(rest)
        rest = b""
    return b"".join(out), rest


def _forward(source, target):
    """The filter process: reads ``source`` to its end, writes what passes to ``target``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the command; its last lines still pass here
    held = b""
    while True:
        try:
            chunk = os.read(source, 1 << 16)
        except InterruptedError:  # pragma: no cover - a signal during the read
            continue
        if not chunk:
            break
        out, held = filtered(held + chunk)
        if out:
            os.write(target, out)
    out, _ = filtered(held, final=True)
    if out:
        os.write(target, out)


def quiet_native_logs():
    """Sends this process's stderr through the filter (``filtered``) from now to its exit; returns the filter's
    process id, or None where it is not used: asked to show the logs (``SHOW_ENV``), or not a POSIX system."""
    global _FILTER
    if _FILTER is not None or os.environ.get(SHOW_ENV) or os.name != "posix":
        return _FILTER
    read_end, write_end = os.pipe()
    terminal = os.dup(2)
    pid = os.fork()
    if pid == 0:  # the filter: nothing of the command's Python state runs here
        try:
            os.close(write_end)
            _forward(read_end, terminal)
        finally:
            os._exit(0)
    os.close(read_end)
    sys.stderr.flush()
    os.dup2(write_end, 2)
    os.close(write_end)
    atexit.register(_finish, terminal, pid)
    _FILTER = pid
    return pid


def _finish(terminal, pid, deadline_s=2.0):
    """At exit: stderr back to the terminal, which ends the filter's input; waits (at most ``deadline_s``) for
    the filter to write what it holds, so that nothing comes after the shell's prompt."""
    try:
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    os.dup2(terminal, 2)
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return
        if done:
            return
        time.sleep(0.01)
