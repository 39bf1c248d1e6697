"""TensorFlow's C++ log lines stay out of a command's output (c2am_tf.utils.native_logs); everything else passes."""

import os
import subprocess
import sys

import pytest
from conftest import ROOT

from c2am_tf.utils.native_logs import filtered, native_log_line

NATIVE = [b"I0000 00:00:1796672554.445794   26113 port.cc:153] oneDNN custom operations are on.",
          b"E0000 00:00:1796671026.295941    7043 cuda_platform.cc:52] failed call to cuInit: (303)",
          b"W0000 00:00:1796671026.295941    7043 rendezvous.cc:1] Local rendezvous is aborting with status: CANCELLED",
          b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
          b"To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with the "
          b"appropriate compiler flags.",
          b"\t [[{{node MultiDeviceIteratorGetNextFromShard}}]]"]
KEPT = [b"F0000 00:00:1.5 1 check.cc:1] Check failed: a fatal line says why the process dies",
        b"c2am-tf fit: error: --lr must be a finite number > 0; got nan",
        b"WARNING c2am_tf: runs/x: the trained model's boxes moved",
        b"Epoch 1/5", b"Extracting: 10%"]


def test_the_native_lines_are_recognized_and_no_other():
    assert all(native_log_line(line) for line in NATIVE)
    assert not any(native_log_line(line) for line in KEPT)


def test_the_filter_forwards_partial_lines_at_once_and_holds_what_may_become_a_native_line():
    out, held = filtered(NATIVE[0] + b"\n" + b"predict:  40%|####  | 2/5\r" + b"predict:  60%")
    assert out == b"predict:  40%|####  | 2/5\rpredict:  60%" and held == b""  # a progress bar is never held
    out, held = filtered(b"I0000 00:00:17")  # a native line still being written
    assert out == b"" and held == b"I0000 00:00:17"
    out, held = filtered(held + b"96672554.445794 1 port.cc:153] oneDNN\nEpoch 1/5\n")
    assert out == b"Epoch 1/5\n" and held == b""
    assert filtered(b"Epoch 2/5", final=True) == (b"Epoch 2/5", b"")


def _stderr(*args, env=None):
    proc = subprocess.run([sys.executable, *args], capture_output=True, timeout=300, cwd=ROOT,
                          env={**os.environ, **(env or {})})
    return proc.returncode, proc.stderr


def test_a_process_keeps_its_own_stderr_lines_in_order_and_loses_the_native_ones():
    first, second = NATIVE[0] + b"\n", NATIVE[1] + b"\n"
    script = ("import os, sys\n"
              "from c2am_tf.utils.native_logs import quiet_native_logs\n"
              "quiet_native_logs()\n"
              f"os.write(2, {first!r})\n"
              "sys.stderr.write('one\\n'); sys.stderr.flush()\n"
              f"os.write(2, {second!r})\n"
              "sys.stderr.write('bar 1/2\\rbar 2/2'); sys.stderr.flush()\n"
              "sys.exit(3)\n")
    status, err = _stderr("-c", script)
    assert status == 3 and err == b"one\nbar 1/2\rbar 2/2"
    status, err = _stderr("-c", script, env={"C2AM_TF_NATIVE_LOGS": "1"})
    assert status == 3 and NATIVE[0] in err and NATIVE[1] in err


def test_a_command_prints_no_native_lines_unless_verbose():
    status, err = _stderr("-m", "c2am_tf", "predict", "--help")
    assert status == 0 and not [line for line in err.splitlines() if native_log_line(line)], err[-2000:]
    status, err = _stderr("-m", "c2am_tf", "--verbose", "predict", "--help")
    if not [line for line in err.splitlines() if native_log_line(line)]:
        pytest.skip("this TensorFlow writes no native log lines on import")
    status, err = _stderr("-m", "c2am_tf", "evaluate", "--preset", "general_lite0", "--dataset", "imagenet")
    assert status == 2 and err.strip().endswith(b"--data-dir is needed for dataset imagenet"), err[-2000:]
