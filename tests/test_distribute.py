"""c2am_tf.runtime.distribute: strategy choice, chief / worker folders, and two worker processes on localhost
computing what one process computes."""

import json
import os
import socket
import subprocess
import sys
import types

import numpy as np
import pytest
import tensorflow as tf

from c2am_tf.runtime import distribute

HERE = os.path.dirname(os.path.abspath(__file__))


def _strategy(task_type, task_id, cluster):
    resolver = types.SimpleNamespace(task_type=task_type, task_id=task_id,
                                     cluster_spec=lambda: tf.train.ClusterSpec(cluster))
    return types.SimpleNamespace(cluster_resolver=resolver, num_replicas_in_sync=len(sum(cluster.values(), [])))


CLUSTER = {"worker": ["h0:1", "h1:1", "h2:1"]}


def test_chief_index_and_folders_of_each_worker(tmp_path):
    out = str(tmp_path / "run")
    workers = [_strategy("worker", i, CLUSTER) for i in range(3)]
    assert [distribute.is_chief(s) for s in workers] == [True, False, False]
    assert [distribute.worker_index(s) for s in workers] == [0, 1, 2]
    assert {distribute.num_workers(s) for s in workers} == {3}
    assert distribute.worker_dir(out, workers[0]) == out
    temp = distribute.worker_dir(out, workers[2])
    assert temp.startswith(out + os.sep) and temp != distribute.worker_dir(out, workers[1])
    os.makedirs(temp)
    distribute.remove_worker_dir(out, workers[2])
    assert not os.path.exists(temp) and not os.path.exists(os.path.dirname(temp))
    distribute.remove_worker_dir(out, workers[0])  # never the chief's own folder
    with_chief = {"chief": ["c:1"], "worker": ["h0:1"]}
    assert distribute.is_chief(_strategy("chief", 0, with_chief))
    assert not distribute.is_chief(_strategy("worker", 0, with_chief))
    assert distribute.worker_index(_strategy("worker", 0, with_chief)) == 1
    one_host = tf.distribute.get_strategy()
    assert distribute.is_chief(one_host) and distribute.num_workers(one_host) == 1


def test_tf_config_is_read_and_a_malformed_one_is_named(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert distribute.workers_in_tf_config() == 0
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"chief": ["a:1"], "worker": ["b:1", "c:1"]},
                                                "task": {"type": "worker", "index": 0}}))
    assert distribute.workers_in_tf_config() == 3
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="TF_CONFIG is not valid JSON"):
        distribute.workers_in_tf_config()
    with pytest.raises(ValueError, match="strategy must be one of"):
        distribute.make_strategy("horovod")


def test_one_host_values_pass_through():
    strategy = tf.distribute.get_strategy()
    assert distribute.broadcast_from_chief(strategy, 0.35) == 0.35
    assert distribute.sum_over_workers(strategy, 7) == 7


def _free_ports(n):
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("localhost", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def test_two_workers_on_localhost_compute_the_one_process_run_also_when_killed_and_resumed(tmp_path):
    """3 steps of the tiny backbone: 2 MultiWorkerMirroredStrategy workers (4 images each) against one
    process (8 images), same seed and global batch: same loss, weights, polarity and threshold."""
    try:
        ports = ",".join(map(str, _free_ports(2)))
    except OSError as err:
        pytest.skip(f"cannot bind two localhost ports for the workers: {err}")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_CONFIG", None)
    script = os.path.join(HERE, "multiworker_run.py")

    def start(index, count, out, result, *extra):
        return subprocess.Popen([sys.executable, script, str(index), str(count), ports, str(out), str(result),
                                 *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def cluster(out, prefix, *extra, expect=0):
        procs = [start(i, 2, out, tmp_path / f"{prefix}{i}.npz", *extra) for i in range(2)]
        outputs = []
        for p in procs:
            try:
                outputs.append(p.communicate(timeout=300)[0])
            except subprocess.TimeoutExpired:
                for q in procs:
                    q.kill()
                pytest.fail("the two workers did not finish in 300 s")
        if any(p.returncode != expect for p in procs):
            log = "\n".join(o[-3000:] for o in outputs)
            if "Address already in use" in log or "Failed to connect" in log or "UNAVAILABLE" in log:
                pytest.skip(f"the two worker processes could not connect on localhost: {log[-500:]}")
            pytest.fail(f"a worker failed:\n{log}")

    cluster(tmp_path / "two", "w")
    one = start(0, 1, tmp_path / "one", tmp_path / "one.npz")
    log = one.communicate(timeout=300)[0]
    assert one.returncode == 0, log[-3000:]

    ref, w0, w1 = (np.load(tmp_path / f"{n}.npz") for n in ("one", "w0", "w1"))
    assert int(w0["workers"]) == 2 and int(ref["workers"]) == 1
    np.testing.assert_allclose(w0["loss"], ref["loss"], atol=1e-4)
    weights = [k for k in ref.files if k.startswith("w") and k != "workers"]
    assert len(weights) > 4
    for k in weights:
        np.testing.assert_array_equal(w0[k], w1[k], err_msg=k)  # the workers agree exactly
        np.testing.assert_allclose(w0[k], ref[k], atol=1e-4, err_msg=k)
    for k in ("polarity", "threshold"):
        assert float(w0[k]) == float(w1[k]) == pytest.approx(float(ref[k]), abs=1e-6)
    assert len(set(np.round(ref["loss"], 4))) == 3  # three different steps really ran
    # only the chief wrote the run; the other worker's temporary folder is gone
    two = tmp_path / "two"
    for name in ("final.keras", "last.keras", "log.csv", "summary.json", "config.json"):
        assert (two / name).exists(), name
    assert not (two / ".workers").exists() and not (two / "backup").exists()
    assert json.loads((two / "summary.json").read_text())["workers"] == 2

    # the cluster killed at the start of epoch 2 and started again resumes from the chief's backup,
    # with the images it would have seen next: the same model as the run never killed
    cluster(tmp_path / "killed", "k", "1", expect=3)
    assert json.loads((tmp_path / "killed" / "resume.json").read_text())["epochs_done"] == 1
    cluster(tmp_path / "killed", "k")
    resumed = np.load(tmp_path / "k0.npz")
    np.testing.assert_allclose(resumed["loss"], ref["loss"][1:], atol=1e-4)  # epochs 2 and 3 only
    for k in weights:
        np.testing.assert_allclose(resumed[k], ref[k], atol=1e-4, err_msg=k)


def test_one_device_and_mirrored_runs_agree(tmp_path):
    from c2am_tf.training.trainer import TrainConfig, run_training

    quick = dict(dataset="synthetic", synthetic_count=16, synthetic_size=64, backbone="tiny", weights=None,
                 batch_size=8, epochs=1, steps_per_epoch=2, resize=64, crop=48, eval_every=0, seed=2, verbose=0)
    # also with batches of look-alike images: the run's backbone, built under the strategy, clusters them
    for groups in (0, 2):
        one, _, s1 = run_training(TrainConfig(strategy="one_device", batch_groups=groups,
                                              out=str(tmp_path / f"a{groups}"), **quick))
        mirrored, _, s2 = run_training(TrainConfig(strategy="mirrored", batch_groups=groups,
                                                   out=str(tmp_path / f"b{groups}"), **quick))
        assert s1["workers"] == s2["workers"] == 1 and s1["batches"] == s2["batches"]
        for a, b in zip(one.weights, mirrored.weights):
            np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5, err_msg=a.path)
