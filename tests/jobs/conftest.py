"""One real two-node Ray cluster for the job tests (`ray start --head`, then `ray start --address`)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from jobs.build_models import build_all
from pipeline.synthetic import make_dialog
from bench.local_s3 import free_port

VENV_BIN = str(Path(sys.executable).parent)
REPO = Path(__file__).parents[2]


def ray_env() -> dict:
    # The job's python is the one on the PATH of the shell that ran `ray start`: put the venv first.
    # Token auth is for real deployments; this cluster lives on loopback for one test session.
    return {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}", "RAY_AUTH_MODE": "disabled",
            "HF_HUB_OFFLINE": "1", "PYANNOTE_METRICS_ENABLED": "0"}


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory, s3_server):
    """(GCS address, dashboard URL) of a head node with 2 CPUs and a second node with 1 CPU; its nodes
    hold the S3 endpoint and credentials in their environment, as a cluster's nodes would."""
    ray = f"{VENV_BIN}/ray"
    port, dashboard = free_port(), free_port()
    temp = tmp_path_factory.mktemp("ray")
    env = ray_env()
    subprocess.run([ray, "start", "--head", f"--port={port}", "--num-cpus=2", f"--dashboard-port={dashboard}",
                    "--include-dashboard=true", f"--temp-dir={temp}", "--disable-usage-stats"],
                   check=True, env=env, capture_output=True, timeout=180)
    try:
        subprocess.run([ray, "start", f"--address=127.0.0.1:{port}", "--num-cpus=1", f"--temp-dir={temp}",
                        '--resources={"second_node": 1}', "--disable-usage-stats"],
                       check=True, env=env, capture_output=True, timeout=180)
        deadline = time.time() + 60
        while time.time() < deadline:
            status = subprocess.run([ray, "status", f"--address=127.0.0.1:{port}"], env=env, capture_output=True,
                                    text=True).stdout
            if status.count("node_") >= 2 and "3.0 CPU" in status:
                break
            time.sleep(1)
        else:
            pytest.fail(f"second Ray node did not join:\n{status}")
        # the head's job agent comes up after the nodes, and after the dashboard answers `ray job list`: until
        # then a submission fails with "No available agent to submit job"; a job that does nothing waits for it
        deadline = time.time() + 60
        while time.time() < deadline:
            if subprocess.run([ray, "job", "submit", f"--address=http://127.0.0.1:{dashboard}", "--no-wait", "--",
                               "true"], env=env, capture_output=True).returncode == 0:
                break
            time.sleep(1)
        else:
            pytest.fail("the Ray cluster's job agent did not come up")
        yield f"127.0.0.1:{port}", f"http://127.0.0.1:{dashboard}"
    finally:
        stop_processes_under(temp)


def stop_processes_under(temp: Path) -> None:
    """Stop the cluster this fixture started, and only it: `ray stop` would stop every Ray on the machine.
    Its processes name the temp dir on their command line or hold a log file in it: the dashboard and
    runtime-env agents rename themselves (`ray::DashboardAgent`), and the client server does not name it."""
    import psutil

    def started_here(p: psutil.Process) -> bool:
        try:
            return (str(temp) in " ".join(p.cmdline())
                    or any(f.path.startswith(str(temp)) for f in p.open_files()))
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            return False

    ours = [p for p in psutil.process_iter() if started_here(p)]
    for p in ours:
        p.terminate()
    _, alive = psutil.wait_procs(ours, timeout=10)  # the agents outlive a SIGTERM once their raylet is gone
    for p in alive:
        p.kill()


@pytest.fixture(scope="session")
def offline_models(tmp_path_factory) -> dict:
    return build_all(tmp_path_factory.mktemp("models"))


DIALOG_LINES = [
    [("alice", "en-us+f3", "The quick brown fox jumps over the lazy dog."),
     ("bob", "en-gb", "Please call me when you arrive at the station.")],
    [("carol", "en-us+f4", "We measured the signal at three different frequencies."),
     ("dave", "en-us", "The weather will be cold and windy tomorrow morning.")],
    [("bob", "en-gb", "She wrote the report in less than an hour."),
     ("alice", "en-us+f3", "Turn left at the second traffic light and keep going.")],
    [("dave", "en-us", "The library closes at nine on weekdays."),
     ("carol", "en-us+f4", "Could you repeat the last number, please?")],
]


@pytest.fixture(scope="session")
def spoken_inputs(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A folder of generated English dialogs, and the true text of each file."""
    folder = tmp_path_factory.mktemp("spoken")
    truth = {}
    for i, lines in enumerate(DIALOG_LINES):
        dialog = make_dialog(lines, seed=i, noise_level=0.002)
        path = folder / f"dialog-{i}.wav"
        sf.write(path, dialog.audio, dialog.sample_rate, subtype="PCM_16")
        truth[str(path)] = " ".join(text for _, _, text in lines)
    return folder, truth


def write_silence(path: Path, seconds: float = 3.0) -> Path:
    sf.write(path, np.zeros(int(seconds * 16000), dtype=np.float32), 16000)
    return path
