"""The same job on a real Spark standalone cluster (a master and two workers on loopback) gives the same
output as local mode: the master URL is configuration, nothing in the jobs assumes one machine."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from pyspark.sql import SparkSession
from pyspark.testing import assertDataFrameEqual

from jobs import validate
from xsell import generate, lake
from xsell.config import load_settings

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
START, RUN_DATE = dt.date(2025, 1, 1), dt.date(2025, 1, 31)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(port: int, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {seconds} s")


@pytest.fixture()
def cluster(tmp_path: Path) -> Iterator[str]:
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable,
           "SPARK_WORKER_DIR": str(tmp_path / "work"), "SPARK_LOG_DIR": str(tmp_path / "logs")}
    port = free_port()
    url = f"spark://127.0.0.1:{port}"
    logs = (tmp_path / "cluster.log").open("w")
    processes = [subprocess.Popen(
        [str(BIN / "spark-class"), "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
         "--port", str(port), "--webui-port", str(free_port())], env=env, stdout=logs, stderr=subprocess.STDOUT)]
    try:
        wait_for(port)
        for _ in range(2):
            processes.append(subprocess.Popen(
                [str(BIN / "spark-class"), "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1",
                 "--cores", "1", "--memory", "1g", "--webui-port", str(free_port()), url],
                env=env, stdout=logs, stderr=subprocess.STDOUT))
        yield url
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        logs.close()


@pytest.mark.slow
def test_validate_on_a_standalone_cluster_matches_local_mode(spark: SparkSession, cluster: str, tmp_path: Path) -> None:
    homes = {mode: tmp_path / mode / "var" for mode in ("local", "cluster")}
    for home in homes.values():
        generate.generate(home / "landing", home / "truth",
                          generate.WorldSpec(customers=200, start=START, end=RUN_DATE, seed=3, dirty_share=0.02),
                          log=lambda _: None)
    # Tiny days: one dirty row (or guest line) is several percent of a day, so the rate gates are relaxed
    # on both sides.
    conf = tmp_path / "conf"
    shutil.copytree(REPO / "conf", conf)
    (conf / "lenient.yaml").write_text(yaml.safe_dump({"validation": {"max_quarantine_rate": 0.5, "max_guest_rate": 0.5}}))
    env = {**os.environ, "XSELL_HOME": str(homes["cluster"]), "XSELL_ENV": "test,lenient", "XSELL_CONF_DIR": str(conf),
           "SPARK_LOCAL_IP": "127.0.0.1",
           "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    result = subprocess.run(
        [str(BIN / "spark-submit"), "--master", cluster, "--conf", "spark.executor.memory=768m",
         "--conf", "spark.sql.shuffle.partitions=4", str(REPO / "jobs" / "validate.py"),
         "--run-date", str(RUN_DATE), "--since", str(START), "--run-id", "same"],
        env=env, capture_output=True, text=True, timeout=900)
    errors = [line for line in (result.stdout + result.stderr).splitlines() if "xsell" in line and (" ERROR " in line or line.startswith("xsell:"))]
    assert result.returncode == 0, "\n".join(errors) or result.stdout[-3000:] + result.stderr[-3000:]
    assert "app-" in (tmp_path / "cluster.log").read_text() or any((tmp_path / "work").glob("app-*")), \
        "the job ran on the cluster's executors"

    os.environ["XSELL_HOME"] = str(homes["local"])
    try:
        lenient = load_settings("test", overrides={"validation": {"max_quarantine_rate": 0.5, "max_guest_rate": 0.5}})
        validate.run(spark, lenient, RUN_DATE, run_id="same", since=START)
    finally:
        del os.environ["XSELL_HOME"]
    for table in ("order_lines", "quarantine", "validation_runs", "customers", "products"):
        local = lake.read(spark, homes["local"] / "lake", table)
        remote = lake.read(spark, homes["cluster"] / "lake", table)
        if table == "quarantine":
            local, remote = (frame.drop("source_file") for frame in (local, remote))
        assertDataFrameEqual(remote, local)
