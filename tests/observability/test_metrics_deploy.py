"""deploy/: the Grafana dashboard queries only metrics the server exports; Prometheus scrapes the API and the workers
where the compose file serves them; the `observability` profile mounts files that exist."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

REPO_ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = REPO_ROOT / "deploy/grafana/dashboards/pipelex-server.json"
PROMETHEUS = REPO_ROOT / "deploy/prometheus/prometheus.yml"
COMPOSE = REPO_ROOT / "docker-compose.yml"


def _expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


async def test_every_metric_the_dashboard_queries_is_exported(client):
    exported: set[str] = set()
    for family in text_string_to_metric_families((await client.get("/metrics")).text):
        exported.update(sample.name for sample in family.samples)
        exported.add(family.name)
    # families that have not moved yet in this process have no samples: name them from their suffixes
    queried = {name for expr in _expressions() for name in re.findall(r"\bpipelex_server_[a-z_]+", expr)}
    bases = {re.sub(r"_(total|bucket|count|sum)$", "", name) for name in exported}
    missing = sorted(name for name in queried if re.sub(r"_(total|bucket|count|sum)$", "", name) not in bases)
    assert not missing, missing


def test_the_dashboard_uses_the_provisioned_data_source():
    dashboard = json.loads(DASHBOARD.read_text())
    datasource = yaml.safe_load((REPO_ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())["datasources"][0]
    assert {panel["datasource"]["uid"] for panel in dashboard["panels"]} == {datasource["uid"]}
    assert datasource["url"] == "http://prometheus:9090"
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])


def test_prometheus_scrapes_the_api_and_every_worker_where_compose_serves_them():
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    jobs = {job["job_name"]: job for job in yaml.safe_load(PROMETHEUS.read_text())["scrape_configs"]}
    api = jobs["pipelex-server-api"]
    assert api["metrics_path"] == "/metrics"
    assert api["static_configs"][0]["targets"] == ["api:8081"]
    worker = jobs["pipelex-server-worker"]["dns_sd_configs"][0]
    assert worker["names"] == ["worker"]
    assert str(worker["port"]) == services["worker"]["environment"]["METRICS_PORT"]
    assert services["worker"]["environment"]["METRICS_HOST"] == "0.0.0.0"
    # AUTH_MODE=none (the default) serves only ALLOWED_HOSTS: Prometheus's Host, `api`, is among them
    assert "api" in services["api"]["environment"]["ALLOWED_HOSTS"].split(":-", 1)[1].rstrip("}").split(",")
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["observability"]
        assert all(port.startswith("127.0.0.1:") for port in services[name]["ports"])
        for volume in services[name]["volumes"]:
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (REPO_ROOT / source).exists(), volume
            else:
                assert source in compose["volumes"], volume
