"""A real Prometheus (Debian's package) scrapes a demo exporter on loopback and evaluates lvstop's rules."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .support import Harness, start_exporter

pytestmark = pytest.mark.prometheus

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
RULES = Path(__file__).parents[2] / "exporter" / "prometheus" / "lvstop.rules.yml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Prometheus:
    def __init__(self, url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.url, self.proc, self.log = url, proc, log

    def query(self, expr: str) -> list[dict[str, Any]]:
        q = urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{q}", timeout=10) as r:
            doc = json.load(r)
        assert doc["status"] == "success", doc
        return doc["data"]["result"]  # type: ignore[no-any-return]

    def value(self, expr: str) -> float:
        [row] = self.query(expr)
        return float(row["value"][1])

    def own_metrics(self) -> dict[str, float]:
        """Prometheus's own counters (it does not scrape itself here)."""
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=10) as r:
            text = r.read().decode()
        return {
            s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples if not s.labels
        }

    def wait(self, what: str, check: Callable[[], bool], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if check():
                    return
            except (OSError, ValueError, AssertionError):
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out waiting for {what}; prometheus log:\n{self.log.read_text()[-3000:]}"
                )
            time.sleep(0.25)


@pytest.fixture
def scraped(tmp_path: Path) -> Iterator[tuple[Harness, Prometheus]]:
    if not Path(PROMETHEUS).exists():
        pytest.fail(
            "prometheus is not installed (apt-get install prometheus): this test needs the real server"
        )
    h = start_exporter(tmp_path, "--write.rate", "1000", "--write.burst", "1000")
    target = h.read_url.split("://")[1]
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        json.dumps(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(RULES)],
                "scrape_configs": [{"job_name": "lvstop", "static_configs": [{"targets": [target]}]}],
            }
        )
    )
    log = tmp_path / "prometheus.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    prom = Prometheus(f"http://127.0.0.1:{port}", proc, log)
    try:
        prom.wait("the first scrape", lambda: prom.value('up{job="lvstop"}') == 1)
        yield h, prom
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        h.running.stop()


def test_prometheus_sees_every_series_and_the_rates(scraped: tuple[Harness, Prometheus]) -> None:
    h, prom = scraped
    snap = h.running.poller.latest
    assert snap is not None
    dests = sum(len(s.dests) for s in snap.services)
    assert len(prom.query("lvstop_ipvs_backend_weight")) == dests
    assert len(prom.query("lvstop_ipvs_service_info")) == len(snap.services)
    assert prom.value('lvstop_ipvs_backend_weight{local_address="203.0.113.10",local_port="80",'
                      'remote_address="192.0.2.11"}') == 100  # fmt: skip
    # A scrape ingests exactly the page: no duplicate or dropped series.
    page_samples = sum(1 for line in h.get("/metrics").body.decode().splitlines() if line and line[0] != "#")
    prom.wait(
        "a scrape of a stable page",
        lambda: prom.value('scrape_samples_scraped{job="lvstop"}') >= page_samples,
    )
    assert prom.value('scrape_samples_scraped{job="lvstop"}') == page_samples
    own = prom.own_metrics()
    assert own["prometheus_target_scrapes_sample_duplicate_timestamp_total"] == 0
    assert own["prometheus_target_scrapes_sample_out_of_order_total"] == 0
    # Rates: Prometheus's rate() of the counters agrees with the kernel EWMA lvstop exports.
    prom.wait(
        "20 s of samples", lambda: prom.value("count_over_time(lvstop_ipvs_connections_total[30s])") >= 20
    )
    from_counters = prom.value("rate(lvstop_ipvs_connections_total[20s])")
    ewma = prom.value("avg_over_time(lvstop_ipvs_connections_per_second[20s])")
    assert from_counters > 0 and abs(from_counters - ewma) / ewma < 0.25, (from_counters, ewma)
    per_dest = prom.value("sum(rate(lvstop_ipvs_backend_connections_total[20s]))")
    per_service = prom.value("sum(rate(lvstop_ipvs_service_connections_total[20s]))")
    assert abs(per_dest - per_service) / per_service < 0.01


def test_rules_evaluate_on_real_series_and_a_drain_shows_up(scraped: tuple[Harness, Prometheus]) -> None:
    h, prom = scraped
    prom.wait("the recording rules", lambda: len(prom.query("lvstop:ipvs_backend_weight_share:ratio")) > 0)
    shares = prom.query(
        "sum by (family, local_address, local_mark, local_port, proto) "
        "(lvstop:ipvs_backend_weight_share:ratio)"
    )
    assert shares and all(abs(float(r["value"][1]) - 1) < 1e-9 for r in shares)
    body = {"service": {"protocol": "tcp", "address": "203.0.113.10", "port": 80},
            "dest": {"address": "192.0.2.11", "port": 8080}}  # fmt: skip
    assert h.post("/api/v1/drain", body).status == 200
    prom.wait(
        "the drain in Prometheus",
        lambda: (
            prom.value(
                'lvstop_ipvs_backend_drain_previous_weight{remote_address="192.0.2.11",local_port="80"}'
            )
            == 100
        ),
    )
    prom.wait(
        "the next poll in Prometheus",
        lambda: prom.value('lvstop_ipvs_backend_weight{remote_address="192.0.2.11",local_port="80"}') == 0,
    )
    assert prom.value('lvstop_weight_edits_total{outcome="applied"}') == 1
    alerts = prom.query("ALERTS")
    assert not [
        a for a in alerts if a["metric"]["alertname"] in ("LvstopPollFailing", "LvstopServiceWithoutWeight")
    ]
