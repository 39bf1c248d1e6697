"""Distribution strategies: one choice for every run, and what the workers of a cluster must agree on.

``make_strategy("auto")`` is ``MirroredStrategy`` (every local GPU, or the CPU) unless
``TF_CONFIG`` names several workers, then ``MultiWorkerMirroredStrategy``. Under any of
them the model's train step all-gathers the fg/bg vectors of every replica of every
worker (global negatives) and scales loss and decay by the replica count, so N
workers compute the one-device step (``c2am_tf.models.c2am.model``).

Only the chief writes a run's files; every other worker writes to a temporary
folder that is removed at the end (``worker_dir``), and values chosen in callbacks
(polarity, threshold) are taken from the chief (``broadcast_from_chief``), so that
every worker holds the same model.
"""

import faulthandler
import json
import os
import shutil
import subprocess
import sys

import tensorflow as tf

from c2am_tf.utils.errors import InputError
from c2am_tf.utils.limits import check_timeout

STRATEGIES = ("auto", "mirrored", "multiworker", "one_device")  # each run by the tests
# how long a worker waits for the others of its cluster to start, and how often it says whom it waits for
CLUSTER_TIMEOUT = 600.0
CLUSTER_REPORT_EVERY = 30.0


def tf_config():
    """The parsed ``TF_CONFIG`` environment variable ({} when unset); ``InputError`` names a malformed one:
    set but empty (TensorFlow's own reader fails on it), not JSON, or without its ``cluster`` (which
    would train as one worker while the user meant a cluster)."""
    if "TF_CONFIG" not in os.environ:
        return {}
    raw = os.environ["TF_CONFIG"].strip()
    if not raw:
        raise InputError("TF_CONFIG is set but empty; unset it to train on one machine, or give "
                         "{'cluster': {...}, 'task': {...}}")
    try:
        config = json.loads(raw)
    except ValueError as err:
        raise InputError(f"TF_CONFIG is not valid JSON ({err}): {raw[:200]}") from None
    if config == {}:
        return {}
    if not isinstance(config, dict) or not isinstance(config.get("cluster"), dict):
        raise InputError(f"TF_CONFIG must be {{'cluster': {{...}}, 'task': {{...}}}} with its cluster; got {raw[:200]}")
    return config


def workers_in_tf_config():
    """Chief and worker tasks that ``TF_CONFIG`` names (0 when it names none)."""
    cluster = tf_config().get("cluster", {})
    return len(cluster.get("chief", [])) + len(cluster.get("worker", []))


def _peers():
    """The ``host:port`` of every other task ``TF_CONFIG`` names."""
    config = tf_config()
    task = config.get("task", {})
    return [address for job, addresses in config.get("cluster", {}).items() for index, address in enumerate(addresses)
            if (job, index) != (task.get("type"), task.get("index"))]


# The watchdog: a process of its own, since the waiting worker holds the GIL inside TensorFlow. It prints, every
# REPORT seconds, the peers that refuse a connection, and the error line at the deadline; it ends when its stdin
# closes (the cluster started, or the worker died).
_WATCHDOG = r"""
import select, socket, sys, time
timeout, every, peers = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3:]
def silent():
    out = []
    for address in peers:
        host, _, port = address.rpartition(":")
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=2).close()
        except (OSError, ValueError):
            out.append(address)
    return ", ".join(out) or "none refuses a connection; some have not joined yet"
start = time.monotonic()
while True:
    left = timeout - (time.monotonic() - start)
    if left <= 0:
        sys.stderr.write("error: TF_CONFIG: the cluster did not start within %g s (--cluster-timeout); not answering: "
                         "%s. Start the same command on every worker, or check the addresses\n" % (timeout, silent()))
        sys.exit(0)
    if select.select([sys.stdin], [], [], min(every, left))[0]:
        sys.exit(0)
    if time.monotonic() - start < timeout:
        sys.stderr.write("waiting for the cluster: %.0f of %g s; not answering: %s\n"
                         % (time.monotonic() - start, timeout, silent()))
"""


def wait_for_cluster(create, timeout=CLUSTER_TIMEOUT, report_every=CLUSTER_REPORT_EVERY):
    """``create()`` (a multi-worker strategy, which blocks until every worker of ``TF_CONFIG`` has started),
    with a deadline. Every ``report_every`` seconds a line on stderr names the workers that do not answer yet;
    at ``timeout`` seconds one line names them and the process ends (exit 1). TensorFlow's wait holds the
    interpreter and cannot be cancelled, so a watchdog process speaks and ``faulthandler``'s C timer ends the
    process a moment later; checkpoints are written atomically, so nothing is lost."""

    timeout = check_timeout(timeout, "cluster_timeout")
    watchdog = subprocess.Popen([sys.executable, "-c", _WATCHDOG, repr(timeout), repr(report_every), *_peers()],
                                stdin=subprocess.PIPE)
    devnull = open(os.devnull, "w")  # the C timer's traceback goes nowhere: the watchdog said what happened
    faulthandler.dump_traceback_later(timeout + 1.0, exit=True, file=devnull)
    try:
        return create()
    finally:
        faulthandler.cancel_dump_traceback_later()
        devnull.close()
        watchdog.stdin.close()
        watchdog.wait()


def make_strategy(name="auto", cluster_timeout=CLUSTER_TIMEOUT):
    """A ``tf.distribute`` strategy by name (``STRATEGIES``); call before any other TensorFlow work,
    as ``MultiWorkerMirroredStrategy`` requires. A multi-worker strategy waits for the cluster for at most
    ``cluster_timeout`` seconds, saying whom it waits for (``wait_for_cluster``).
    """
    if name not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}; got {name!r}")
    tf_config()  # a clear error for a malformed TF_CONFIG, before TensorFlow's own
    if name == "auto":
        name = "multiworker" if workers_in_tf_config() > 1 else "mirrored"
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        return wait_for_cluster(tf.distribute.MultiWorkerMirroredStrategy, cluster_timeout)
    gpus = tf.config.list_logical_devices("GPU")  # one_device
    return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")


def _task(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return None, None, {}
    return resolver.task_type, resolver.task_id, resolver.cluster_spec().as_dict()


def num_workers(strategy):
    """Worker processes taking part in ``strategy`` (1 on one host)."""
    _, _, cluster = _task(strategy)
    return max(len(cluster.get("chief", [])) + len(cluster.get("worker", [])), 1)


def worker_index(strategy):
    """This worker's place among ``num_workers`` (the chief, or worker 0, is 0): its input shard."""
    task_type, task_id, cluster = _task(strategy)
    if task_type in (None, "chief"):
        return 0
    return task_id + len(cluster.get("chief", []))


def is_chief(strategy):
    """True on the worker that writes the run's files: the ``chief`` task, else worker 0, else the only one."""
    task_type, task_id, cluster = _task(strategy)
    if task_type is None or task_type == "chief":
        return True
    return task_type == "worker" and task_id == 0 and "chief" not in cluster


def worker_dir(out, strategy):
    """Where this worker writes: ``out`` on the chief; a temporary folder inside it on the others
    (they must run the same saving code as the chief; ``remove_worker_dir`` deletes it)."""
    if is_chief(strategy):
        return out
    task_type, task_id, _ = _task(strategy)
    return os.path.join(out, ".workers", f"{task_type}_{task_id}")


def remove_worker_dir(out, strategy):
    """Deletes what ``worker_dir`` gave a non-chief worker (nothing on the chief)."""

    path = worker_dir(out, strategy)
    if path != out:
        shutil.rmtree(path, ignore_errors=True)
        try:
            os.rmdir(os.path.dirname(path))  # .workers, once the last worker is done
        except OSError:
            pass


def _local_replicas(strategy):
    return max(strategy.num_replicas_in_sync // num_workers(strategy), 1)


def _reduce_one_per(strategy, value, keep):
    """All-reduce (sum) of ``value`` taken from the replicas where ``keep(replica_id)`` holds, zero elsewhere."""
    def fn():
        ctx = tf.distribute.get_replica_context()
        mine = tf.where(keep(ctx.replica_id_in_sync_group), tf.constant(value, tf.float64),
                        tf.constant(0.0, tf.float64))
        return ctx.all_reduce(tf.distribute.ReduceOp.SUM, mine)

    # inside a tf.function: collectives run eagerly are slow (and TensorFlow warns each time)
    return float(strategy.experimental_local_results(tf.function(lambda: strategy.run(fn))())[0])


def broadcast_from_chief(strategy, value):
    """The chief's ``value`` (a float) on every worker; ``value`` itself on one host.

    Every worker must call it at the same point (it is a collective operation).
    """
    if num_workers(strategy) <= 1:
        return float(value)
    return _reduce_one_per(strategy, float(value), lambda replica: tf.equal(replica, 0))


def sum_over_workers(strategy, value):
    """The sum of every worker's ``value`` (e.g. its shard's image count); ``value`` on one host."""
    if num_workers(strategy) <= 1:
        return value
    local = _local_replicas(strategy)
    total = _reduce_one_per(strategy, float(value), lambda replica: tf.equal(replica % local, 0))
    return type(value)(round(total)) if isinstance(value, int) else total
